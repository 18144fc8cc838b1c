"""One module per inference runtime; each imports its runtime lazily, with an install hint."""
