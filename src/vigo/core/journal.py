"""Output fit for journald.

When stdout or stderr is connected to the journal (systemd sets JOURNAL_STREAM to the
device:inode of that stream; it is compared with the real file descriptor, so a pipe inside a
unit stays plain), every line written to it gets a syslog priority prefix, `<3>` error,
`<4>` warning, `<6>` info, `<7>` debug. journald strips the prefix and records the priority:
`journalctl -u vigo -p warning` shows warnings and errors only. vigo never prints timestamps
(the journal has its own). On a terminal or a pipe, lines are written as they are.

A line that already starts with `<N>` keeps its prefix; others get one from their text:
`$ argv` (from -v) debug, `warning: ...` warning, `<stack>: failed ...`, `error: ...`,
`vigo: ...`, `settings: ...`, `source: ...`, `docker: ...`, `prune refused: ...` and
`<step>: missing ...` error, anything else info (stderr: error).
"""

from __future__ import annotations

import atexit
import io
import os
import re
import sys
import threading
from collections.abc import Callable
from typing import TextIO

ERR, WARNING, INFO, DEBUG = 3, 4, 6, 7

_WRITING = threading.Lock()  # one line at a time, from every thread (deploys run in threads)


def printer(stream: str = "stdout", indent: str = "") -> Callable[[str], None]:
    """A function that writes one line to sys.<stream> (looked up at each call: a test may
    swap it), after `indent`: the line and its newline in one write, under one lock. `print`
    writes them apart, so the lines of two deploy threads could end up glued together."""
    def say(line: str) -> None:
        out = getattr(sys, stream)
        with _WRITING:
            out.write(indent + line + "\n")
            out.flush()
    return say


_PREFIX = re.compile(r"^<[0-7]>")
_ERROR = re.compile(r"^(error|vigo(?: [a-z]+)?|settings|source|docker|prune refused):"
                    r"|^[\w.-]+: (failed|missing)\b")


def level_of(line: str, default: int = INFO) -> int:
    """The syslog priority of one output line (see the module docstring)."""
    text = line.lstrip()
    if text.startswith("$ "):
        return DEBUG
    if text.startswith("warning:"):
        return WARNING
    if _ERROR.match(text):
        return ERR
    return default


def is_journal(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """True when `stream` is the journal stream systemd gave this process."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError, io.UnsupportedOperation):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class JournalStream(io.TextIOBase):
    """A text stream that prefixes every complete line with its syslog priority."""

    def __init__(self, stream: TextIO, default: int) -> None:
        self.stream = stream
        self.default = default
        self._partial = ""

    def write(self, s: str) -> int:
        text = self._partial + s
        *lines, self._partial = text.split("\n")
        for line in lines:
            self.stream.write(self._tag(line) + "\n")
        return len(s)

    def _tag(self, line: str) -> str:
        return line if _PREFIX.match(line) else f"<{level_of(line, self.default)}>{line}"

    def flush(self) -> None:
        self.stream.flush()

    def close_partial(self) -> None:
        if self._partial:
            self.stream.write(self._tag(self._partial) + "\n")
            self._partial = ""
            self.stream.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


def tagged(level: int, text: str) -> str:
    """`text` with an explicit priority when stdout is the journal, as it is otherwise."""
    return f"<{level}>{text}" if isinstance(sys.stdout, JournalStream) else text


def attach() -> bool:
    """Wrap sys.stdout and sys.stderr when they are the journal. Returns whether any was."""
    attached = False
    for name, default in (("stdout", INFO), ("stderr", ERR)):
        stream = getattr(sys, name)
        if isinstance(stream, JournalStream) or not is_journal(stream):
            continue
        wrapped = JournalStream(stream, default)
        setattr(sys, name, wrapped)
        atexit.register(wrapped.close_partial)
        attached = True
    return attached
