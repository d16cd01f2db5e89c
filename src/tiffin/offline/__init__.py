"""Offline stores: the point-in-time join (``pit``) and the backends that run it."""
