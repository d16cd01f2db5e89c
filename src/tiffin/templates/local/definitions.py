"""Feature definitions for {project}: drivers and their hourly trip statistics."""

from datetime import timedelta

from tiffin import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from tiffin.types import Float32, Int64, String

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64,
                description="A driver on the platform")

driver_stats_source = FileSource(
    name="driver_hourly_stats_source",
    path="data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

driver_hourly_stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[
        Field(name="conv_rate", dtype=Float32, description="Share of offers accepted"),
        Field(name="acc_rate", dtype=Float32),
        Field(name="avg_daily_trips", dtype=Int64),
        Field(name="city", dtype=String),
    ],
    source=driver_stats_source,
    online=True,
    tags={"team": "driver_performance"},
)

driver_stats_push_source = PushSource(name="driver_stats_push_source",
                                      batch_source=driver_stats_source)

driver_activity_v1 = FeatureService(
    name="driver_activity_v1",
    features=[driver_hourly_stats[["conv_rate", "avg_daily_trips"]]],
    description="Features of the driver ranking model",
)
