"""The HTTP feature server (`tiffin serve`); install with the `server` extra."""
