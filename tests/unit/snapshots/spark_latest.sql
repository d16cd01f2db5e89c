SELECT `driver_id`, `conv_rate`, `city`, __event_ts, __created_ts
 FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY `driver_id` ORDER BY __event_ts DESC, __created_ts DESC NULLS LAST) AS __rn
 FROM (SELECT `driver_id` AS `driver_id`, CAST(`conv_rate` AS DOUBLE) AS `conv_rate`, `City``s` AS `city`, `event_timestamp` AS __event_ts, CAST(`created` AS TIMESTAMP_LTZ) AS __created_ts
 FROM `tiffin_src_0123` AS src WHERE `event_timestamp` <= TIMESTAMP_LTZ '2026-01-02 00:00:00+00:00' AND `event_timestamp` >= TIMESTAMP_LTZ '2026-01-01 00:00:00+00:00' AND `driver_id` IS NOT NULL) AS r) AS ranked WHERE __rn = 1
