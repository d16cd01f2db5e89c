"""Online stores and the shared read path."""
