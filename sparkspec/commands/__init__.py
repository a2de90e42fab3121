"""One module per CLI verb; each is a thin function the CLI calls."""
