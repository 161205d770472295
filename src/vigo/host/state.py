"""The state file: last attempted and applied revision, per-stack outcome. Written atomically.

A run that changed nothing else (an idle run) does not rewrite (and fsync) state.json: it
writes only its times (the run's, and each stack's `checked_at`) to `last-run.json` beside it,
which `load` lays over state.json's: what load returns is what a whole write would have given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vigo.adapters import fs
from vigo.core import model

VERSION = 1
LAST_RUN = "last-run.json"
RUN_FILES = ("rendered.json", "overrides", LAST_RUN)  # what an apply leaves beside state.json
# What every run changes: kept in LAST_RUN when nothing else in the state did (and each
# stack record's CHECKED_AT, the time its outcome was last checked).
RUN_KEYS = ("started", "finished", "duration")
CHECKED_AT = "checked_at"


now = model.now  # the one clock format of the state file and the reports


def path(state_dir: Path) -> Path:
    return state_dir / "state.json"


def load(state_dir: Path) -> tuple[dict[str, Any], str]:
    """The state, and a warning when it had to be thrown away (corrupt file)."""
    try:
        data = fs.read_json(path(state_dir))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: JSON, UTF-8
        return _empty(), f"{path(state_dir)} is unreadable ({exc}); starting from what Docker runs"
    if data is None:  # the first run, or a file lost after runs left their other files
        if any((state_dir / name).exists() for name in RUN_FILES):
            return _empty(), f"{path(state_dir)} is missing; starting from what Docker runs"
        return _empty(), ""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return _empty(), f"{path(state_dir)} has an unknown format; starting from what Docker runs"
    dropped = heal(data)
    if dropped:
        shown = ", ".join(dropped[:8]) + (f" and {len(dropped) - 8} more" if len(dropped) > 8
                                          else "")
        return data, (f"{path(state_dir)}: dropped what had the wrong shape ({shown}); "
                      "rebuilt from what Docker runs, the next save writes a whole file")
    _last_run(state_dir, data)
    return data, ""


def _last_run(state_dir: Path, data: dict[str, Any]) -> None:
    """Lay the times of LAST_RUN over `data` when it holds a later run than state.json (a
    file of the wrong shape, unreadable or older is ignored: it only ever holds times)."""
    try:
        last = fs.read_json(state_dir / LAST_RUN)
    except (OSError, ValueError, RecursionError):
        return
    if not isinstance(last, dict) or "started" not in last \
            or not set(last) <= {*RUN_KEYS, CHECKED_AT} or _drop_wrong(dict(last), TOP, ""):
        return
    checked = last.pop(CHECKED_AT, {})
    if not isinstance(checked, dict) or not all(isinstance(v, str) for v in checked.values()) \
            or last["started"] < str(data.get("started", "")):
        return
    data.update(last)
    for name, at in checked.items():
        if isinstance(data["stacks"].get(name), dict):
            data["stacks"][name][CHECKED_AT] = at


# The shape of the state file: the type of each field vigo reads. A field of another type
# (a hand edit, a bug, a file from elsewhere) is dropped and rebuilt, never trusted.
_NUMBER = (int, float)
TOP: dict[str, type | tuple[type, ...]] = {
    "stacks": dict, "env": dict, "ops": dict, "started": str, "finished": str,
    "duration": _NUMBER, "exit_code": int, "reason": str, "error": str,
    "revision_attempted": str, "revision_applied": str, "revision_accepted": str}
RECORD: dict[str, type | tuple[type, ...]] = {
    "hash": str, "digests": dict, "revision": str, "applied_at": str, "containers": dict,
    "failed_hash": str, "failed_revision": str, "rolled_back_to": str, "outcome": str,
    "reason": str, "code": str, "checked_at": str, "images": list, "last_failure": dict}
OPS: dict[str, type | tuple[type, ...]] = {"consecutive_failures": int, "announced": str}


def _drop_wrong(data: dict[str, Any], shape: dict[str, Any], where: str) -> list[str]:
    dropped = []
    for key, kind in shape.items():
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            data.pop(key)
            dropped.append(where + key)
    return dropped


def heal(data: dict[str, Any]) -> list[str]:
    """Drop every part of a loaded state of the wrong shape (in place); fill in the
    containers. Returns the dotted names of what was dropped."""
    dropped = _drop_wrong(data, TOP, "")
    data.setdefault("stacks", {})
    data.setdefault("env", {})
    for rel in [k for k, v in data["env"].items() if not isinstance(v, str)]:
        data["env"].pop(rel)
        dropped.append(f"env.{rel}")
    dropped += _drop_wrong(data.get("ops", {}), OPS, "ops.")
    stacks = data["stacks"]
    for name in list(stacks):
        record = stacks[name]
        if not isinstance(record, dict):
            stacks.pop(name)
            dropped.append(f"stacks.{name}")
            continue
        where = f"stacks.{name}."
        dropped += _drop_wrong(record, RECORD, where)
        for key in ("digests", "containers"):
            if key in record and not all(isinstance(v, str) for v in record[key].values()):
                record.pop(key)
                dropped.append(where + key)
        last = record.get("last_failure")
        if last is not None and not (
                all(isinstance(last.get(k), str) for k in ("since", "at", "revision", "reason"))
                and isinstance(last.get("ongoing"), bool)
                and isinstance(last.get("code", ""), str)):
            record.pop("last_failure")
            dropped.append(where + "last_failure")
        images = record.get("images")
        if images is not None and not all(
                isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                and isinstance(entry[1], list) and all(isinstance(i, str) for i in entry[1])
                for entry in images):
            record.pop("images")
            dropped.append(where + "images")
    return dropped


def _empty() -> dict[str, Any]:
    return {"version": VERSION, "stacks": {}, "env": {}}


def save(state_dir: Path, data: dict[str, Any]) -> None:
    """Write the state. When state.json already holds all of it but the times, only LAST_RUN
    is written (no fsync: losing it loses times, shown by `vigo status`, nothing else)."""
    fs.private_dir(state_dir)
    try:
        saved = fs.read_json(path(state_dir))
    except (OSError, ValueError, RecursionError):
        saved = None
    # Only the times when the file on disk is whole (a part of the wrong shape, even a time,
    # is healed by rewriting it) and holds everything else already.
    if isinstance(saved, dict) and not heal(json.loads(json.dumps(saved))) \
            and _durable(saved) == _durable(data):
        last = {k: data[k] for k in RUN_KEYS if k in data}
        last[CHECKED_AT] = {name: record[CHECKED_AT]
                            for name, record in data.get("stacks", {}).items()
                            if isinstance(record, dict) and CHECKED_AT in record}
        fs.write_json(state_dir / LAST_RUN, last, sync=False)
        return
    fs.write_json(path(state_dir), data)
    (state_dir / LAST_RUN).unlink(missing_ok=True)  # older than state.json now


def _durable(data: dict[str, Any]) -> str:
    """The state without the times, as written (JSON: a tuple equals its list)."""
    out = {k: v for k, v in data.items() if k not in RUN_KEYS}
    stacks = out.get("stacks")
    if isinstance(stacks, dict):
        out["stacks"] = {name: {k: v for k, v in record.items() if k != CHECKED_AT}
                         if isinstance(record, dict) else record
                         for name, record in stacks.items()}
    return json.dumps(out, sort_keys=True)
