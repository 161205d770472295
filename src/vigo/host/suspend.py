"""Suspension: `<state>/suspended.json` says who suspended vigo on this host, when and why.

While it exists, timer runs do nothing and manual `vigo apply` refuses (docs/operations.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vigo.adapters import fs
from vigo.core.records import asdict, record
from vigo.host import state

FILE = "suspended.json"


@record(frozen=True)
class Suspension:
    by: str
    at: str  # ISO 8601, UTC
    reason: str = ""

    def line(self) -> str:
        return f"suspended by {self.by} at {self.at}" + (
            f" ({self.reason})" if self.reason else " (no reason given)")


def who(environ: dict[str, str] | None = None) -> str:
    """The person behind this command: SUDO_USER, else USER, else the uid."""
    env = os.environ if environ is None else environ
    return env.get("SUDO_USER") or env.get("USER") or env.get("LOGNAME") or f"uid {os.getuid()}"


def path(state_dir: Path) -> Path:
    return state_dir / FILE


def read(state_dir: Path) -> Suspension | None:
    """The suspension in force, or None. An unreadable file still suspends (safe side)."""
    try:
        data = fs.read_json(path(state_dir))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        return Suspension("unknown", "unknown", f"{path(state_dir)} is unreadable: {exc}")
    if data is None:
        return None
    if not isinstance(data, dict):
        return Suspension("unknown", "unknown", f"{path(state_dir)} has an unknown format")
    return Suspension(str(data.get("by", "unknown")), str(data.get("at", "unknown")),
                      str(data.get("reason", "")))


def suspend(state_dir: Path, reason: str, environ: dict[str, str] | None = None
            ) -> tuple[Suspension, Suspension | None]:
    """Write the suspension; returns it and the one it replaced (if any)."""
    before = read(state_dir)
    new = Suspension(who(environ), state.now(), reason.strip())
    fs.private_dir(state_dir)
    fs.write_json(path(state_dir), asdict(new))
    return new, before


def resume(state_dir: Path) -> Suspension | None:
    """Remove the suspension; returns the one that was in force."""
    before = read(state_dir)
    fs.remove(path(state_dir))
    return before
