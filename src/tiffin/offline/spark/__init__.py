"""Spark offline store: the point-in-time join as Spark SQL (``pip install 'tiffin[spark]'``)."""
