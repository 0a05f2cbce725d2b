"""Small text formatting shared by the CLI, the job runner and the pages."""


def duration(seconds: float) -> str:
    """3725 -> '1h02m', 95 -> '1m35s'."""
    seconds = int(max(0, seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def csv_safe(value):
    """A cell a spreadsheet will not run as a formula (OWASP CSV injection): text starting with = + - @,
    tab or carriage return gets a leading apostrophe. Numbers pass unchanged."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def tail(text: str, width: int) -> str:
    """The end of a long name (where file names differ) with an ellipsis where it was cut: "…/benign_00000.png"."""
    text = str(text)
    return text if len(text) <= width else "…" + text[-(width - 1):]
