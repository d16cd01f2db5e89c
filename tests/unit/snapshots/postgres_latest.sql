SELECT "driver_id", "conv_rate", __event_ts, __created_ts
 FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY "driver_id" ORDER BY __event_ts DESC, __created_ts DESC NULLS LAST) AS __rn
 FROM (SELECT "driver_id" AS "driver_id", CAST("conv_rate" AS DOUBLE PRECISION) AS "conv_rate", ("event_timestamp" AT TIME ZONE 'UTC') AS __event_ts, CAST("created" AS TIMESTAMP) AS __created_ts
 FROM analytics.driver_stats AS src WHERE "event_timestamp" <= TIMESTAMP WITH TIME ZONE '2026-01-02T00:00:00+00:00' AND "event_timestamp" >= TIMESTAMP WITH TIME ZONE '2026-01-01T00:00:00+00:00' AND "driver_id" IS NOT NULL) AS r) AS ranked WHERE __rn = 1
