"""One module per CLI verb; each is a thin function the CLI calls."""


def size_text(size: int) -> str:
    """Bytes for people: 512 B, 1.5 KB, 3.2 MB, 4.0 GB."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
