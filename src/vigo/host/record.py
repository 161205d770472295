"""What a run writes into the per-stack records of the state file after its deploys: the
applied hash and revision, failures and holds, release jobs, and the images a rollback keeps."""

from __future__ import annotations

from collections.abc import Callable

from vigo.core import reasons
from vigo.core.model import (
    CREATE,
    HOLD,
    REMOVE,
    UPDATE,
    DesiredState,
    Resolved,
    StackResult,
)
from vigo.core.plan import completed
from vigo.host import state


def write(desired: DesiredState, results: dict[str, StackResult], st: state.RunRecord,
          resolved: dict[str, Resolved] | None, keep_images: int,
          mask: Callable[[str], str]) -> set[str]:
    """Update the per-stack records (state.py's transitions); returns the images that
    fell out of some stack's last `keep_images` revisions."""
    now = state.now()
    dropped: set[str] = set()
    for name, result in results.items():
        record = st.record(name)
        stack = desired.stack(name)
        if result.action == REMOVE and result.ok:
            st.forget(name)
            continue
        if result.action in (CREATE, UPDATE) and result.ok and stack is not None:
            res = (resolved or {}).get(name)
            record.mark_applied(stack.hash, stack.digests, desired.revision, now,
                                {c.name: c.config_hash for c in result.containers},
                                completed(result.containers,
                                          res.finishes if res is not None else ()),
                                res.after if res is not None else ())
            dropped |= record.remember_images(desired.revision,
                                              (c.image for c in result.containers),
                                              keep_images)
        elif result.rolled_back_to:
            record.mark_rolled_back({c.name: c.config_hash for c in result.containers},
                                    result.rolled_back_to)
        if result.jobs:  # status and metrics: the last run of each release job
            record.ran_jobs(result.jobs, now, desired.revision)
        if result.hold and stack is not None:
            record.hold(stack.hash)
        if result.action == HOLD:
            continue  # keep the reason of the deploy that failed
        if result.reason in reasons.NOT_APPLIED:  # the leader applies: nothing recorded as done
            record.mark_not_applied(mask(result.message), result.reason, now)
            continue
        record.mark_checked(result.ok, mask(result.message), result.reason, now,
                            desired.revision)
    for name in list(st.stacks):
        if name not in results and desired.stack(name) is None:
            st.forget(name)
    return dropped


def kept_images(records: dict[str, state.StackRecord]) -> set[str]:
    """The images some stack keeps for a rollback (its last `keep_images` revisions)."""
    return {image for record in records.values() for image in record.kept_images()}
