"""Redis online store (`pip install tiffin[redis]`)."""
