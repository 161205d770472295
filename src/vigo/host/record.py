"""What a run writes into the per-stack records of the state file after its deploys: the
applied hash and revision, failures and holds, release jobs, and the images a rollback keeps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vigo.core.model import (
    CREATE,
    HOLD,
    REMOVE,
    UPDATE,
    Container,
    DesiredState,
    Resolved,
    StackResult,
)
from vigo.core.plan import completed
from vigo.host import state


def write(desired: DesiredState, results: dict[str, StackResult], records: dict[str, Any],
          resolved: dict[str, Resolved] | None, keep_images: int,
          mask: Callable[[str], str]) -> set[str]:
    """Update the per-stack records; returns the images that fell out of some stack's
    last `keep_images` revisions."""
    now = state.now()
    dropped: set[str] = set()
    for name, result in results.items():
        record = records.setdefault(name, {})
        stack = desired.stack(name)
        if result.action == REMOVE and result.ok:
            records.pop(name, None)
            continue
        if result.action in (CREATE, UPDATE) and result.ok and stack is not None:
            record.update(hash=stack.hash, digests=dict(stack.digests),
                          revision=desired.revision, applied_at=now,
                          containers={c.name: c.config_hash for c in result.containers},
                          completed=completed(result.containers,
                                              (resolved or {})[name].finishes
                                              if name in (resolved or {}) else ()))
            for key in ("failed_hash", "failed_revision", "rolled_back_to"):
                record.pop(key, None)
            res = (resolved or {}).get(name)
            if res is not None and res.after:
                record["after"] = list(res.after)
            else:
                record.pop("after", None)
            dropped |= _remember_images(record, desired.revision, result.containers,
                                        keep_images)
        elif result.rolled_back_to:
            record["containers"] = {c.name: c.config_hash for c in result.containers}
            record["rolled_back_to"] = result.rolled_back_to
        if result.jobs:  # status and metrics: the last run of each release job
            jobs = record.setdefault("jobs", {})
            done = record.setdefault("job_hashes", {})
            for run in result.jobs:
                jobs[str(run["service"])] = {**run, "at": now, "revision": desired.revision}
                if run.get("exit") == 0 and run.get("hash"):  # never again for this config
                    done[str(run["service"])] = run["hash"]
        if result.hold and stack is not None:
            record["failed_hash"] = stack.hash
        if result.action == HOLD:
            continue  # keep the reason of the deploy that failed
        record.update(outcome="ok" if result.ok else "failed",
                      reason="" if result.ok else mask(result.message),
                      checked_at=now)
        if not result.ok:
            record["failed_revision"] = desired.revision
    for name in list(records):
        if name not in results and desired.stack(name) is None:
            records.pop(name)
    return dropped


def kept_images(records: dict[str, Any]) -> set[str]:
    """The images some stack keeps for a rollback (its last `keep_images` revisions)."""
    return {image for record in records.values()
            for _, images in record.get("images", []) for image in images}


def _remember_images(record: dict[str, Any], revision: str, containers: tuple[Container, ...],
                     keep: int) -> set[str]:
    """Append the images a healthy apply runs; forget all but the last `keep` revisions and
    return the images that were forgotten."""
    images = sorted({c.image for c in containers if c.image})
    history: list = record.setdefault("images", [])
    if not history or history[-1][1] != images:
        history.append([revision, images])
    forgotten = history[:-keep]
    del history[:-keep]
    return {image for _, old in forgotten for image in old}
