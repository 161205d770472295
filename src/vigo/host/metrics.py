"""Prometheus text exposition format for node_exporter's textfile collector (pure), and the
atomic write (temp file + rename in the same folder, mode 0644 so node_exporter can read it)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from vigo.adapters import fs
from vigo.core.records import field, record


@record(frozen=True)
class ServiceSample:
    """One swarm service as the metrics show it: its tasks running on nodes that are up, the
    tasks it wants (Swarm's count: replicas, or the eligible nodes of a global service), the
    state of its last update ('' : none ran) and the nodes that are down holding a task."""

    stack: str
    service: str
    running: int
    desired: int
    update: str = ""
    nodes_down: int = 0

    @property
    def up(self) -> bool:
        return self.desired > 0 and self.running >= self.desired


# The values of UpdateStatus.State (Swarm's API), and `none` when no update ran: the enum of
# vigo_swarm_service_update_state (one sample per state, 1 for the current one).
UPDATE_STATES = ("none", "updating", "completed", "paused", "rollback_started",
                 "rollback_paused", "rollback_completed")


@record(frozen=True)
class Snapshot:
    finished: float  # Unix time the run finished
    success: bool
    duration: float
    revision_applied: str
    consecutive_failures: int
    stacks: Mapping[str, tuple[bool, bool]]  # stack -> (up, failed)
    suspended: bool = False
    # (stack, job) -> (exit code or None after a timeout, duration, Unix time): the last run
    # of each release job (x-vigo.jobs), from the state file
    jobs: Mapping[tuple[str, str], tuple[int | None, float, float]] = field(default_factory=dict)
    reason: str = ""  # the last run's named reason (core/reasons.py)
    stack_reasons: Mapping[str, str] = field(default_factory=dict)  # stack -> its last reason
    services: tuple[ServiceSample, ...] = ()  # the swarm services of this instance's stacks


def jobs_of(records: Mapping[str, Any]) -> dict[tuple[str, str], tuple[int | None, float, float]]:
    """The `jobs` of a Snapshot from the state file's stack records (a hand-edited one: no
    jobs, never an exception)."""
    out: dict[tuple[str, str], tuple[int | None, float, float]] = {}
    for stack, entry in records.items():
        jobs = entry.get("jobs") if isinstance(entry, Mapping) else None
        for name, run in (jobs.items() if isinstance(jobs, Mapping) else ()):
            if not isinstance(run, Mapping):
                continue
            code = run.get("exit")
            try:
                at = datetime.fromisoformat(str(run.get("at"))).timestamp()
                duration = float(run.get("duration") or 0)
            except (TypeError, ValueError):
                continue
            out[(str(stack), str(name))] = (code if isinstance(code, int) else None, duration, at)
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _metric(name: str, help: str, samples: list[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help}", f"# TYPE {name} gauge"]
    lines += [f"{name}{labels} {_number(v)}" for labels, v in samples]
    return lines


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def render(s: Snapshot) -> str:
    stacks = sorted(s.stacks.items())
    lines = [
        *_metric("vigo_last_run_timestamp_seconds",
                 "When the last vigo apply finished, in Unix time.", [("", s.finished)]),
        *_metric("vigo_last_run_success",
                 "1 when the last vigo apply converged the host, 0 when it failed.",
                 [("", 1 if s.success else 0)]),
        *_metric("vigo_last_run_duration_seconds", "How long the last vigo apply took.",
                 [("", round(s.duration, 3))]),
        *_metric("vigo_applied_revision_info",
                 "The infra repo revision last applied completely (always 1).",
                 [(f'{{revision="{_escape(s.revision_applied)}"}}', 1)]
                 if s.revision_applied else []),
        *_metric("vigo_stack_up",
                 "1 when every container of the stack runs (and none is unhealthy).",
                 [(f'{{stack="{_escape(n)}"}}', 1 if up else 0) for n, (up, _) in stacks]),
        *_metric("vigo_stack_failed", "1 when the last apply of the stack failed.",
                 [(f'{{stack="{_escape(n)}"}}', 1 if failed else 0)
                  for n, (_, failed) in stacks]),
        *_metric("vigo_last_run_reason_info",
                 "The named reason the last vigo apply ended with (always 1).",
                 [(f'{{reason="{_escape(s.reason)}"}}', 1)] if s.reason else []),
        *_metric("vigo_stack_reason_info",
                 "The named reason of the last outcome of each stack (always 1).",
                 [(f'{{stack="{_escape(n)}",reason="{_escape(r)}"}}', 1)
                  for n, r in sorted(s.stack_reasons.items()) if r]),
        *_metric("vigo_consecutive_failures", "Failed vigo apply runs in a row.",
                 [("", s.consecutive_failures)]),
        *_metric("vigo_suspended", "1 while vigo is suspended on this host (vigo suspend).",
                 [("", 1 if s.suspended else 0)]),
    ]
    jobs = [(f'{{stack="{_escape(st)}",job="{_escape(job)}"}}', run)
            for (st, job), run in sorted(s.jobs.items())]
    if jobs:
        lines += [
            *_metric("vigo_job_last_exit_code", "The exit code of the last run of a release "
                     "job (x-vigo.jobs); -1 when it was stopped at its timeout.",
                     [(labels, -1 if code is None else code) for labels, (code, _, _) in jobs]),
            *_metric("vigo_job_last_duration_seconds", "How long the last run of a release "
                     "job took.", [(labels, d) for labels, (_, d, _) in jobs]),
            *_metric("vigo_job_last_run_timestamp_seconds", "When a release job last ran, in "
                     "Unix time.", [(labels, at) for labels, (_, _, at) in jobs]),
        ]
    lines += _service_metrics(s.services)
    return "\n".join(lines) + "\n"


def _service_metrics(services: tuple[ServiceSample, ...]) -> list[str]:
    if not services:
        return []
    rows = sorted(services, key=lambda x: (x.stack, x.service))
    key = [(f'{{stack="{_escape(x.stack)}",service="{_escape(x.service)}"', x) for x in rows]
    return [
        *_metric("vigo_swarm_service_running_replicas", "Tasks of a swarm service running on "
                 "nodes that are up.", [(k + "}", x.running) for k, x in key]),
        *_metric("vigo_swarm_service_desired_replicas", "Tasks a swarm service wants (its "
                 "replicas; for a global service, the eligible nodes).",
                 [(k + "}", x.desired) for k, x in key]),
        *_metric("vigo_swarm_service_update_state", "The state of a swarm service's last "
                 "update: 1 for the current state, 0 for the others (none: no update ran).",
                 [(f'{k},state="{_escape(state)}"}}', 1 if (x.update or "none") == state else 0)
                  for k, x in key for state in _states(x.update)]),
        *_metric("vigo_swarm_service_nodes_down", "Nodes that are down and still hold a "
                 "running task of a swarm service.", [(k + "}", x.nodes_down) for k, x in key]),
    ]


def _states(current: str) -> tuple[str, ...]:
    """The enum's states, and a state this vigo does not know yet (a newer engine's)."""
    return UPDATE_STATES + ((current,) if current and current not in UPDATE_STATES else ())


def write(path: Path, snapshot: Snapshot) -> None:
    fs.atomic_write(path, render(snapshot).encode(), mode=0o644)
