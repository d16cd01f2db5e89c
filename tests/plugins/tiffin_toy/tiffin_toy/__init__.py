"""Toy tiffin backends of every plugin kind, known to tiffin only by entry points.

Small, but real: the CSV offline store does the point-in-time join, the JSON online
store keeps the newest row per key, the registry store refuses stale writes. Nothing is
imported here, so a test can tell which modules tiffin imported, and when.
"""
