"""Prometheus text exposition format for node_exporter's textfile collector (pure), and the
atomic write (temp file + rename in the same folder, mode 0644 so node_exporter can read it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vigo.adapters import fs


@dataclass(frozen=True)
class Snapshot:
    finished: float  # Unix time the run finished
    success: bool
    duration: float
    revision_applied: str
    consecutive_failures: int
    stacks: Mapping[str, tuple[bool, bool]]  # stack -> (up, failed)
    suspended: bool = False


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
        *_metric("vigo_consecutive_failures", "Failed vigo apply runs in a row.",
                 [("", s.consecutive_failures)]),
        *_metric("vigo_suspended", "1 while vigo is suspended on this host (vigo suspend).",
                 [("", 1 if s.suspended else 0)]),
    ]
    return "\n".join(lines) + "\n"


def write(path: Path, snapshot: Snapshot) -> None:
    fs.atomic_write(path, render(snapshot).encode(), mode=0o644)
