"""The state file: last attempted and applied revision, per-stack outcome. Written atomically.

This module owns its schema and every change to it: `RunRecord` (the whole file) and
`StackRecord` (one stack's record) read typed fields and make each transition (applied,
failed, held, retried, rolled back, images kept, jobs run, ...); no other room writes a key.
They are the JSON document itself (dict subclasses), so what is saved is what was read, and
`core/plan` and `core/trust` read them as the plain mappings they take. A file of an older
version is migrated on load (MIGRATIONS); one of the wrong shape is reported and rebuilt.

A run that changed nothing else (an idle run) does not rewrite (and fsync) state.json: it
writes only its times (the run's, and each stack's `checked_at`) to `last-run.json` beside it,
which `load` lays over state.json's: what load returns is what a whole write would have given.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vigo.adapters import fs
from vigo.core import model, reasons
from vigo.core.records import record

VERSION = 2  # 2: the named reasons (core/reasons.py): the run's `reason`, each record's `code`
LAST_RUN = "last-run.json"
# What an apply leaves beside state.json.
RUN_FILES = ("rendered.json", "rendered.json.stamp", "render.json", "overrides", LAST_RUN)
# What every run changes: kept in LAST_RUN when nothing else in the state did (and each
# stack record's CHECKED_AT, the time its outcome was last checked).
RUN_KEYS = ("started", "finished", "duration")
CHECKED_AT = "checked_at"
NOT_APPLIED = "not-applied"  # a stack record's outcome: checked, left to the swarm's leader


now = model.now  # the one clock format of the state file and the reports


def path(state_dir: Path) -> Path:
    return state_dir / "state.json"


def load(state_dir: Path) -> tuple[RunRecord, str]:
    """The state, and a warning when it had to be thrown away (corrupt file)."""
    try:
        stamp = fs.lstat_key(path(state_dir))
        data = fs.read_json(path(state_dir))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: JSON, UTF-8
        return _empty(), f"{path(state_dir)} is unreadable ({exc}); starting from what Docker runs"
    if data is None:  # the first run, or a file lost after runs left their other files
        if any((state_dir / name).exists() for name in RUN_FILES):
            return _empty(), f"{path(state_dir)} is missing; starting from what Docker runs"
        return _empty(), ""
    if isinstance(data, dict) and data.get("version") in MIGRATIONS \
            and not isinstance(data.get("version"), bool):
        data = migrate(data)
        stamp = None  # the file holds the old version: the next save writes it whole
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return _empty(), f"{path(state_dir)} has an unknown format; starting from what Docker runs"
    durable = _durable(data) if stamp is not None else ""  # what the file holds, but times
    dropped = heal(data)
    if dropped:
        shown = ", ".join(dropped[:8]) + (f" and {len(dropped) - 8} more" if len(dropped) > 8
                                          else "")
        return RunRecord.of(data), (
            f"{path(state_dir)}: dropped what had the wrong shape ({shown}); "
            "rebuilt from what Docker runs, the next save writes a whole file")
    _last_run(state_dir, data)
    run = RunRecord.of(data)
    if stamp is not None:
        run.on_disk = (str(state_dir), stamp, durable)
    return run, ""


def _v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 had no named reasons: the run's comes from its exit code (the first reason of
    the table with that code), a record's only where its fields say it without a doubt."""
    code = data.get("exit_code")
    if isinstance(code, int) and not isinstance(code, bool) and "reason" not in data:
        data["reason"] = next((r for r, (c, why) in reasons.EXIT.items() if c == code and why),
                              reasons.STACK_FAILED)
    stacks = data.get("stacks")
    for entry in stacks.values() if isinstance(stacks, dict) else ():
        if isinstance(entry, dict) and "code" not in entry:
            if entry.get("outcome") == "ok":
                entry["code"] = reasons.APPLIED
            elif entry.get("outcome") == "failed" and entry.get("rolled_back_to"):
                entry["code"] = reasons.ROLLED_BACK
    return {**data, "version": 2}


MIGRATIONS = {1: _v1}  # version -> the step to the next one


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """An older state file, brought to VERSION one step at a time."""
    while data.get("version") in MIGRATIONS:
        data = MIGRATIONS[data["version"]](data)
    return data


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
    "revision_attempted": str, "revision_applied": str, "revision_accepted": str,
    "overlay": dict}
RECORD: dict[str, type | tuple[type, ...]] = {
    "hash": str, "digests": dict, "revision": str, "applied_at": str, "containers": dict,
    "failed_hash": str, "failed_revision": str, "rolled_back_to": str, "outcome": str,
    "reason": str, "code": str, "checked_at": str, "images": list, "last_failure": dict,
    "completed": dict, "after": list, "jobs": dict, "job_hashes": dict, "engine": str}
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
        for key in ("digests", "containers", "completed", "job_hashes"):
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
        if "after" in record and not all(isinstance(v, str) for v in record["after"]):
            record.pop("after")
            dropped.append(where + "after")
        if "jobs" in record and not all(isinstance(v, dict) for v in record["jobs"].values()):
            record.pop("jobs")
            dropped.append(where + "jobs")
        images = record.get("images")
        if images is not None and not all(
                isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                and isinstance(entry[1], list) and all(isinstance(i, str) for i in entry[1])
                for entry in images):
            record.pop("images")
            dropped.append(where + "images")
    return dropped


def _empty() -> RunRecord:
    return RunRecord.of({"version": VERSION, "stacks": {}, "env": {}})


def save(state_dir: Path, data: dict[str, Any]) -> None:
    """Write the state. When state.json already holds all of it but the times, only LAST_RUN
    is written (no fsync: losing it loses times, shown by `vigo status`, nothing else)."""
    fs.private_dir(state_dir)
    durable = _durable(data)
    same = _on_disk(state_dir, data, durable)  # known without reading the file
    if not same:
        try:
            saved = fs.read_json(path(state_dir))
        except (OSError, ValueError, RecursionError):
            saved = None
        # Only the times when the file on disk is whole (a part of the wrong shape, even a
        # time, is healed by rewriting it) and holds everything else already.
        same = isinstance(saved, dict) and not heal(json.loads(json.dumps(saved))) \
            and _durable(saved) == durable
    if same:
        last = {k: data[k] for k in RUN_KEYS if k in data}
        last[CHECKED_AT] = {name: record[CHECKED_AT]
                            for name, record in data.get("stacks", {}).items()
                            if isinstance(record, dict) and CHECKED_AT in record}
        fs.write_json(state_dir / LAST_RUN, last, sync=False)
        return
    fs.write_json(path(state_dir), data)
    (state_dir / LAST_RUN).unlink(missing_ok=True)  # older than state.json now
    if isinstance(data, RunRecord):
        data.on_disk = (str(state_dir), fs.lstat_key(path(state_dir)), durable)


def _on_disk(state_dir: Path, data: dict[str, Any], durable: str) -> bool:
    """Whether state.json holds `durable` already, known without reading it: it is the file
    this record was loaded from (or last saved to), untouched since (its lstat data), and
    that held the same (a file that was healed or migrated on load has no such mark)."""
    mark = getattr(data, "on_disk", None)
    return mark is not None and mark[0] == str(state_dir) and mark[2] == durable \
        and mark[1] is not None and fs.lstat_key(path(state_dir)) == mark[1]


def _durable(data: dict[str, Any]) -> str:
    """The state without the times, as written (JSON: a tuple equals its list)."""
    out = {k: v for k, v in data.items() if k not in RUN_KEYS}
    stacks = out.get("stacks")
    if isinstance(stacks, dict):
        out["stacks"] = {name: {k: v for k, v in record.items() if k != CHECKED_AT}
                         if isinstance(record, dict) else record
                         for name, record in stacks.items()}
    return json.dumps(out, sort_keys=True)


# -- the typed records ------------------------------------------------------------------------

def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


def _strs(data: Mapping[str, Any], key: str) -> dict[str, str]:
    value = data.get(key)
    return {str(k): v for k, v in value.items() if isinstance(v, str)} \
        if isinstance(value, dict) else {}


@record(frozen=True)
class LastFailure:
    """A stack's last failure, for `vigo status`: since when it fails (while `ongoing`)."""

    since: str
    at: str
    revision: str
    reason: str
    code: str = ""
    ongoing: bool = True


class StackRecord(dict[str, Any]):
    """One stack's record (RECORD is its shape): typed reads, and every transition."""

    # -- what the last apply left ---------------------------------------------------------
    @property
    def hash(self) -> str:
        """The desired-state hash of the stack last applied healthy."""
        return _str(self, "hash")

    @property
    def digests(self) -> dict[str, str]:
        return _strs(self, "digests")

    @property
    def revision(self) -> str:
        """The revision the stack was last applied at."""
        return _str(self, "revision")

    @property
    def applied_at(self) -> str:
        return _str(self, "applied_at")

    @property
    def containers(self) -> dict[str, str]:
        """The containers the last apply (or rollback) left: name -> config hash."""
        return _strs(self, "containers")

    @property
    def completed(self) -> dict[str, str]:
        return _strs(self, "completed")

    @property
    def after(self) -> tuple[str, ...]:
        value = self.get("after")
        return tuple(str(n) for n in value) if isinstance(value, list) else ()

    @property
    def has_after(self) -> bool:
        return isinstance(self.get("after"), list)

    @property
    def images(self) -> list[tuple[str, list[str]]]:
        """The images of the last `keep_images` healthy revisions: (revision, images)."""
        value = self.get("images")
        return [(str(e[0]), [str(i) for i in e[1]]) for e in value
                if isinstance(e, list) and len(e) == 2 and isinstance(e[1], list)] \
            if isinstance(value, list) else []

    @property
    def jobs(self) -> dict[str, dict[str, Any]]:
        """The last run of each release job: job -> {when, exit, duration, at, revision}."""
        value = self.get("jobs")
        return {str(k): v for k, v in value.items() if isinstance(v, dict)} \
            if isinstance(value, dict) else {}

    @property
    def job_hashes(self) -> dict[str, str]:
        """The config hash each job last exited 0 for: it never runs again for that one."""
        return _strs(self, "job_hashes")

    # -- how it ended the last time it was checked ----------------------------------------
    @property
    def outcome(self) -> str:
        return _str(self, "outcome")

    @property
    def failing(self) -> bool:
        return self.outcome == "failed"

    @property
    def reason(self) -> str:
        """The message of the last failure ('' once applied again)."""
        return _str(self, "reason")

    @property
    def code(self) -> str:
        """The named reason of the last outcome (core/reasons.py)."""
        return _str(self, "code")

    @property
    def checked_at(self) -> str:
        return _str(self, CHECKED_AT)

    @property
    def failed_hash(self) -> str:
        """The desired-state hash held after a failed deploy ('' : none is held)."""
        return _str(self, "failed_hash")

    @property
    def failed_revision(self) -> str:
        return _str(self, "failed_revision")

    @property
    def rolled_back_to(self) -> str:
        return _str(self, "rolled_back_to")

    @property
    def last_failure(self) -> LastFailure | None:
        last = self.get("last_failure")
        if not isinstance(last, dict):
            return None
        return LastFailure(_str(last, "since"), _str(last, "at"), _str(last, "revision"),
                           _str(last, "reason"), _str(last, "code"), last.get("ongoing") is True)

    # -- transitions ------------------------------------------------------------------------
    def mark_applied(self, stack_hash: str, digests: Mapping[str, str], revision: str, at: str,
                     containers: Mapping[str, str], completed: Mapping[str, str],
                     after: Iterable[str] = ()) -> None:
        """A create or update that ended healthy: what it left, and nothing held any more."""
        self.update(hash=stack_hash, digests=dict(digests), revision=revision, applied_at=at,
                    containers=dict(containers), completed=dict(completed))
        for key in ("failed_hash", "failed_revision", "rolled_back_to"):
            self.pop(key, None)
        after = list(after)
        if after:
            self["after"] = after
        else:
            self.pop("after", None)

    @property
    def engine(self) -> str:
        """The engine the stack last ran on, when not Compose ('swarm'); '' for Compose."""
        return _str(self, "engine")

    def ran_on(self, engine: str) -> None:
        """The engine that deployed the stack (its removal and observation go there)."""
        self["engine"] = engine

    def mark_rolled_back(self, containers: Mapping[str, str], to: str) -> None:
        """The gate failed and the last healthy revision `to` serves again."""
        self["containers"] = dict(containers)
        self["rolled_back_to"] = to

    def hold(self, stack_hash: str) -> None:
        """Do not try this desired state again (until it changes or `vigo retry`)."""
        self["failed_hash"] = stack_hash

    def held(self, stack_hash: str) -> bool:
        return self.failed_hash == stack_hash

    def retry(self) -> bool:
        """Let the next run try the held revision again; False when none is held."""
        return self.pop("failed_hash", None) is not None

    def ran_jobs(self, runs: Iterable[Mapping[str, object]], at: str, revision: str) -> None:
        """The release jobs a deploy ran; one that exited 0 never runs again for its config."""
        jobs = self.setdefault("jobs", {})
        done = self.setdefault("job_hashes", {})
        for run in runs:
            jobs[str(run["service"])] = {**run, "at": at, "revision": revision}
            if run.get("exit") == 0 and run.get("hash"):
                done[str(run["service"])] = run["hash"]

    def mark_checked(self, ok: bool, message: str, code: str, at: str, revision: str) -> None:
        """How the stack ended this run: ok, or failed with its message and named reason."""
        self.update(outcome="ok" if ok else "failed", reason="" if ok else message, code=code,
                    checked_at=at)
        if not ok:
            self["failed_revision"] = revision

    def mark_not_applied(self, message: str, code: str, at: str) -> None:
        """Checked but not applied here (a swarm manager that is not the leader): what it
        last applied stays (hash, revision, containers), the outcome says `not-applied` with
        its named reason, so nothing reads it as converged to this run's revision."""
        self.update(outcome=NOT_APPLIED, reason=message, code=code, checked_at=at)

    @property
    def not_applied(self) -> bool:
        return self.outcome == NOT_APPLIED

    def remember_images(self, revision: str, images: Iterable[str], keep: int) -> set[str]:
        """Append the images a healthy apply runs; forget all but the last `keep` revisions
        and return the images that were forgotten."""
        now = sorted({i for i in images if i})
        history: list = self.setdefault("images", [])
        if not history or history[-1][1] != now:
            history.append([revision, now])
        forgotten = history[:-keep]
        del history[:-keep]
        return {image for _, old in forgotten for image in old}

    def kept_images(self) -> set[str]:
        return {image for _, images in self.images for image in images}

    def note_failure(self, started: str) -> None:
        """Keep the last failure (and since when it has been failing), for `vigo status`:
        `mark_checked` clears the message once the stack is applied again."""
        last = self.last_failure
        if self.failing:
            at = self.checked_at or started
            self["last_failure"] = {
                "since": last.since if last is not None and last.ongoing else at, "at": at,
                "revision": self.failed_revision, "reason": self.reason, "code": self.code,
                "ongoing": True}
        elif last is not None:
            self["last_failure"]["ongoing"] = False


class RunRecord(dict[str, Any]):
    """The whole state file (TOP is its shape): the last run, the revisions, the stacks.
    `on_disk` (not saved): (state folder, lstat data of state.json, its content without the
    times) when the file holds this record's durable part, as load or save left it."""

    on_disk: tuple[str, list[int] | None, str] | None = None

    @classmethod
    def of(cls, data: dict[str, Any]) -> RunRecord:
        """`data` (healed: stacks and env are dicts) as typed records."""
        run = cls(data)
        run["stacks"] = {name: StackRecord(r) for name, r in data.get("stacks", {}).items()}
        return run

    # -- the stacks ---------------------------------------------------------------------------
    @property
    def stacks(self) -> dict[str, StackRecord]:
        stacks = self.setdefault("stacks", {})
        for name, entry in stacks.items():  # one added as a plain dict: typed from now on
            if not isinstance(entry, StackRecord):
                stacks[name] = StackRecord(entry if isinstance(entry, dict) else {})
        return stacks

    def stack(self, name: str) -> StackRecord | None:
        return self.stacks.get(name)

    def record(self, name: str) -> StackRecord:
        """The record of `name`, new (empty) when it has none yet. Touches that one entry only
        (deploy threads call it at once; `stacks` walks them all)."""
        stacks = self.setdefault("stacks", {})
        record = stacks.get(name)
        if not isinstance(record, StackRecord):
            record = stacks[name] = StackRecord(record if isinstance(record, dict) else {})
        return record

    def forget(self, name: str) -> None:
        self.stacks.pop(name, None)

    @property
    def env(self) -> dict[str, str]:
        """env file -> the digest of the ciphertext decrypted on the tmpfs (mutable)."""
        return self.setdefault("env", {})

    # -- the run ------------------------------------------------------------------------------
    @property
    def started(self) -> str:
        return _str(self, "started")

    @property
    def finished(self) -> str:
        return _str(self, "finished")

    @property
    def duration(self) -> float:
        value = self.get("duration", 0)
        return float(value) if isinstance(value, int | float) else 0.0

    @property
    def exit_code(self) -> int:
        value = self.get("exit_code", 0)
        return value if isinstance(value, int) else 0

    @property
    def reason(self) -> str:
        return _str(self, "reason")

    @property
    def error(self) -> str:
        return _str(self, "error")

    @property
    def has_run(self) -> bool:
        return "finished" in self

    def begin(self, started: str) -> None:
        self["started"] = started

    def finish(self, at: str, duration: float, exit_code: int, reason: str, error: str) -> None:
        self.update(finished=at, duration=round(duration, 3), exit_code=exit_code,
                    reason=reason, error=error)

    # -- revisions ------------------------------------------------------------------------
    @property
    def revision_applied(self) -> str:
        return _str(self, "revision_applied")

    @property
    def revision_attempted(self) -> str:
        return _str(self, "revision_attempted")

    @property
    def revision_accepted(self) -> str:
        return _str(self, "revision_accepted")

    def attempt(self, revision: str) -> None:
        self["revision_attempted"] = revision

    def mark_applied(self, revision: str) -> None:
        """Every stack converged to `revision`."""
        self["revision_applied"] = revision

    def accept(self, revision: str) -> bool:
        """The base of the next signature check; False when it already was."""
        if self.revision_accepted == revision:
            return False
        self["revision_accepted"] = revision
        return True

    @property
    def overlay(self) -> dict[str, Any] | None:
        """What the last applied run remembers of its host overlay (plan.guard_overlay)."""
        value = self.get("overlay")
        return value if isinstance(value, dict) else None

    def remember_overlay(self, overlay: Mapping[str, Any]) -> None:
        self["overlay"] = dict(overlay)

    # -- the operations (hooks.py) --------------------------------------------------------
    @property
    def consecutive_failures(self) -> int:
        value = self.get("ops", {}).get("consecutive_failures", 0)
        return value if isinstance(value, int) else 0

    @property
    def announced(self) -> str | None:
        value = self.get("ops", {}).get("announced")
        return value if isinstance(value, str) else None

    def count_run(self, ok: bool) -> int:
        """Count this run in the failures in a row; returns the count before it."""
        before = self.consecutive_failures
        self.setdefault("ops", {})["consecutive_failures"] = 0 if ok else before + 1
        return before

    def announce(self, status: str) -> None:
        self.setdefault("ops", {})["announced"] = status
