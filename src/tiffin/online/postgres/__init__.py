"""PostgreSQL online store (`pip install tiffin[postgres]`)."""
