"""``offline_store: {type: spark, spark_conf: {...}}``: no pyspark import here."""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import field_validator

from tiffin.config import BackendConfig

# tiffin compares timestamps as instants in a UTC session; another zone would shift every
# naive (TIMESTAMP_NTZ) column by its offset.
UTC_NAMES = frozenset({"UTC", "Etc/UTC"})


def spark_conf_values(value: Any) -> dict[str, str]:
    """YAML gives ints and bools (``spark.sql.shuffle.partitions: 4``); Spark wants strings."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"spark_conf must be a mapping of Spark settings, got {value!r}")
    out = {}
    for key, v in value.items():
        if isinstance(v, (dict, list)) or v is None:
            raise ValueError(f"spark_conf[{key!r}] must be a string, number or boolean")
        out[str(key)] = str(v).lower() if isinstance(v, bool) else str(v)
    zone = out.get("spark.sql.session.timeZone")
    if zone is not None and zone not in UTC_NAMES:
        raise ValueError(f"spark_conf['spark.sql.session.timeZone'] is {zone!r}: tiffin runs "
                         "Spark sessions in UTC; remove the setting")
    return out


class SparkOfflineStoreConfig(BackendConfig):
    """``offline_store: {type: spark, spark_conf: {spark.master: "local[*]"}}``.

    ``spark_conf`` goes to the SparkSession, created on first use (or the running one is
    reused): set ``spark.master`` to run the same code on a cluster. Without it Spark runs
    in this process (``local[*]``) with few shuffle partitions, which suits small data.

    >>> SparkOfflineStoreConfig(spark_conf={"spark.sql.shuffle.partitions": 8}).spark_conf
    {'spark.sql.shuffle.partitions': '8'}
    """

    type: Literal["spark"] = "spark"
    spark_conf: dict[str, str] = {}
    # How pit.py renders the join. "sweep" sorts the entity and source rows of a key
    # together once; "window" joins each entity row to its key's source rows in its time
    # window and keeps the newest, a product per key: 7x slower at 5,000 source and 200
    # entity rows per key (local[2]), about even on small data.
    join_strategy: Literal["sweep", "window"] = "sweep"

    # Feast's yaml may name the class instead of the type.
    aliases: ClassVar[tuple[str, ...]] = (
        "feast.infra.offline_stores.contrib.spark_offline_store.spark.SparkOfflineStore",)
    feast_keys: ClassVar[frozenset[str]] = frozenset({"staging_location", "region"})

    @field_validator("spark_conf", mode="before")
    @classmethod
    def _conf(cls, value: Any) -> dict[str, str]:
        return spark_conf_values(value)

    def store_class(self) -> type:
        from tiffin.offline.spark.store import SparkOfflineStore
        return SparkOfflineStore
