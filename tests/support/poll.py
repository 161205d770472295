"""One poll loop for tests: ask until the answer is good, or fail saying what was awaited.

    wait_for(lambda: path.is_symlink(), 60, what=f"the container to plant {path}")
    state = wait_for(lambda: containers().get("web"), 60, 0.5, "web running",
                     ok=lambda c: c is not None and c[1] == "running")
    wait_for(port_open, 20, 0.05, "git-daemon listening", abort=lambda: proc.poll(),
             detail=lambda: log.read_text())

No timing threshold hides in it: the timeout is how long to wait for something that happens,
never a measurement (benchmarks/ measure).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], timeout: float = 60, interval: float = 0.2,
             what: str = "the condition", *, ok: Callable[[T], Any] = bool,
             abort: Callable[[], Any] | None = None,
             detail: Callable[[], str] | None = None) -> T:
    """Call `probe` every `interval` seconds until `ok(value)` holds, and return that value.
    Fails with AssertionError naming `what` and the last value after `timeout` seconds, or at
    once when `abort()` says something truthy (a process that died: waiting longer is in
    vain). `detail()` adds text to the failure (a log's tail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if ok(value):
            return value
        stopped = abort() if abort is not None else None
        if stopped or time.monotonic() > deadline:
            why = (f"stopped waiting for {what} ({stopped!r})" if stopped else
                   f"timed out after {timeout:g} s waiting for {what}")
            extra = detail() if detail is not None else ""
            raise AssertionError(f"{why}; last value: {value!r}" + (f"\n{extra}" if extra
                                                                     else ""))
        time.sleep(interval)
