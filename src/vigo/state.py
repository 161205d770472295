"""The state file: last attempted and applied revision, per-stack outcome. Written atomically."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vigo.adapters import fs

VERSION = 1
RUN_FILES = ("rendered.json", "overrides")  # what an apply leaves beside state.json


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def path(state_dir: Path) -> Path:
    return state_dir / "state.json"


def load(state_dir: Path) -> tuple[dict[str, Any], str]:
    """The state, and a warning when it had to be thrown away (corrupt file)."""
    try:
        data = fs.read_json(path(state_dir))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _empty(), f"{path(state_dir)} is unreadable ({exc}); starting from what Docker runs"
    if data is None:  # the first run, or a file lost after runs left their other files
        if any((state_dir / name).exists() for name in RUN_FILES):
            return _empty(), f"{path(state_dir)} is missing; starting from what Docker runs"
        return _empty(), ""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return _empty(), f"{path(state_dir)} has an unknown format; starting from what Docker runs"
    data.setdefault("stacks", {})
    data.setdefault("env", {})
    return data, ""


def _empty() -> dict[str, Any]:
    return {"version": VERSION, "stacks": {}, "env": {}}


def save(state_dir: Path, data: dict[str, Any]) -> None:
    fs.private_dir(state_dir)
    fs.write_json(path(state_dir), data)
