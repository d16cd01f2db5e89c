"""PostgreSQL offline store over tables and queries (Feast's ``postgres`` type)."""
