WITH "v0__match" AS (SELECT *
 FROM (SELECT __row_id, __side, FIRST_VALUE(__match_ts) OVER (PARTITION BY "k0", __grp ORDER BY __t, __side, __c NULLS FIRST ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS __match_ts, FIRST_VALUE("f0") OVER (PARTITION BY "k0", __grp ORDER BY __t, __side, __c NULLS FIRST ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS "f0", FIRST_VALUE("f1") OVER (PARTITION BY "k0", __grp ORDER BY __t, __side, __c NULLS FIRST ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS "f1"
 FROM (SELECT *, COUNT(__match_ts) OVER (PARTITION BY "k0" ORDER BY __t, __side, __c NULLS FIRST ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS __grp
 FROM (SELECT s."k0", s.__event_ts AS __t, 0 AS __side, s.__created_ts AS __c, s.__event_ts AS __match_ts, s."f0", s."f1", CAST(NULL AS BIGINT) AS __row_id
 FROM (SELECT "driver_id" AS "k0", ("event_timestamp" AT TIME ZONE 'UTC') AS __event_ts, CAST("created" AS TIMESTAMP) AS __created_ts, CAST("conv_rate" AS DOUBLE PRECISION) AS "f0", "City" AS "f1"
 FROM analytics.driver_stats AS src WHERE "event_timestamp" IS NOT NULL AND "driver_id" IS NOT NULL AND "event_timestamp" <= TIMESTAMP WITH TIME ZONE '2026-01-02T10:00:00+00:00' AND "event_timestamp" >= TIMESTAMP WITH TIME ZONE '2026-01-01T09:00:00+00:00') AS s WHERE EXISTS (SELECT 1
 FROM "__tiffin_entity" AS e WHERE e."driver_id" = s."k0")
UNION ALL
SELECT e."driver_id" AS "k0", e.__ts AS __t, 1 AS __side, NULL AS __c, NULL AS __match_ts, NULL AS "f0", NULL AS "f1", e.__row_id
 FROM "__tiffin_entity" AS e WHERE e.__ts IS NOT NULL AND e."driver_id" IS NOT NULL) AS u) AS g) AS p WHERE __side = 1) SELECT e."driver_id", e."event_timestamp", CASE WHEN "v0__match".__match_ts >= (e.__ts - INTERVAL '3600000000 microseconds') THEN "v0__match"."f0" END AS "conv_rate", CASE WHEN "v0__match".__match_ts >= (e.__ts - INTERVAL '3600000000 microseconds') THEN "v0__match"."f1" END AS "city"
 FROM "__tiffin_entity" AS e LEFT JOIN "v0__match" ON "v0__match".__row_id = e.__row_id ORDER BY e.__row_id
