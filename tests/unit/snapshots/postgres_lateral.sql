SELECT e."driver_id", e."event_timestamp", "v0"."f0" AS "conv_rate", "v0"."f1" AS "city"
 FROM "__tiffin_entity" AS e LEFT JOIN LATERAL (SELECT CAST(src."conv_rate" AS DOUBLE PRECISION) AS "f0", src."City" AS "f1"
 FROM analytics.driver_stats AS src WHERE src."driver_id" = e."driver_id" AND src."event_timestamp" <= (e.__ts AT TIME ZONE 'UTC') AND src."event_timestamp" >= ((e.__ts - INTERVAL '3600000000 microseconds') AT TIME ZONE 'UTC') ORDER BY src."event_timestamp" DESC, src."created" DESC NULLS LAST LIMIT 1) AS "v0" ON TRUE ORDER BY e.__row_id
