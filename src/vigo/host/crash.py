"""One line for an exception vigo did not expect (a run's safety net, a command's)."""

from __future__ import annotations

from pathlib import Path

from vigo.adapters.run import CommandTimeout


def crash_line(exc: BaseException) -> str:
    """One line for an exception vigo did not expect: its type, message and the innermost
    vigo function it came from (`render.py:_walk`), e.g. for an input render cannot handle."""
    import traceback  # a crash only: an idle run needs no traceback

    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if path.suffix == ".py" and "vigo" in path.parts[:-1]:
            parts = path.parts[:-1]
            rel = path.parts[len(parts) - parts[::-1].index("vigo"):]
            where = f"{'/'.join(rel)}:{frame.name}"
    text = " ".join(str(exc).split()).encode("utf-8", "backslashreplace").decode()
    if len(text) > 300:
        text = text[:300] + "..."
    if isinstance(exc, CommandTimeout) and text:
        return text  # names the command already
    return type(exc).__name__ + (f" in {where}" if where else "") + (f": {text}" if text else "")
