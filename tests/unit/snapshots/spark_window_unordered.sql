WITH `v0__src` AS (SELECT `driver_id` AS `k0`, `event_timestamp` AS __event_ts, CAST(`created` AS TIMESTAMP_LTZ) AS __created_ts, CAST(`conv_rate` AS DOUBLE) AS `f0`, `City``s` AS `f1`
 FROM `tiffin_src_0123` AS src WHERE `event_timestamp` IS NOT NULL AND `driver_id` IS NOT NULL AND `event_timestamp` <= TIMESTAMP_LTZ '2026-01-02 10:00:00+00:00' AND `event_timestamp` >= TIMESTAMP_LTZ '2026-01-01 08:59:59.999999+00:00'), `v0__match` AS (SELECT *
 FROM (SELECT e.__row_id, s.`f0`, s.`f1`, ROW_NUMBER() OVER (PARTITION BY e.__row_id ORDER BY s.__event_ts DESC, s.__created_ts DESC NULLS LAST) AS __rn
 FROM `tiffin_entity_0123` AS e JOIN `v0__src` AS s ON e.`driver_id` = s.`k0` AND s.__event_ts <= e.__ts AND s.__event_ts >= (e.__ts - INTERVAL '3600000001' MICROSECOND)) AS r WHERE __rn = 1) SELECT e.`__row_id`, `v0__match`.`f0` AS `conv_rate`, `v0__match`.`f1` AS `city`
 FROM `tiffin_entity_0123` AS e LEFT JOIN `v0__match` ON `v0__match`.__row_id = e.__row_id
