"""SQLite online store (embedded, the default)."""
