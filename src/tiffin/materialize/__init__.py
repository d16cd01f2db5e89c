"""Materialization engines."""
