"""DuckDB offline store over Parquet files (Feast's ``file`` and ``duckdb`` types)."""
