"""The health gate's judgement over what `docker inspect` shows. Pure.

A stack passes when every service has a container and each one is healthy (where it has a
healthcheck) or has been running for `stable_after` seconds without a restart (where it has
none); a one-off container that exited 0 without a restart policy has completed. It fails at
once when a container exits, dies or restarts; it keeps waiting while health is `starting`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

OK, WAIT, FAIL = "ok", "wait", "fail"


@dataclass(frozen=True)
class Probe:
    id: str
    name: str
    service: str
    state: str  # running, exited, restarting, created, dead, paused
    health: str  # healthy, unhealthy, starting, or '' without a healthcheck
    restarts: int
    started: float  # epoch seconds
    exit_code: int
    restart_policy: str


@dataclass(frozen=True)
class Verdict:
    status: str  # OK, WAIT or FAIL
    reason: str = ""
    container: str = ""  # the id to take logs from


def _epoch(text: str) -> float:
    """Docker's RFC 3339 time with nanoseconds, as epoch seconds (0 when unset)."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?", text)
    if not m:
        return 0.0
    return datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC).timestamp() + float(
        m.group(2) or 0)


def probe(doc: Mapping[str, Any]) -> Probe:
    """One container of `docker inspect`'s JSON."""
    st = doc.get("State") or {}
    labels = (doc.get("Config") or {}).get("Labels") or {}
    return Probe(
        id=str(doc.get("Id", "")), name=str(doc.get("Name", "")).lstrip("/"),
        service=str(labels.get("com.docker.compose.service", "")),
        state=str(st.get("Status", "")), health=str((st.get("Health") or {}).get("Status", "")),
        restarts=int(doc.get("RestartCount") or 0), started=_epoch(str(st.get("StartedAt", ""))),
        exit_code=int(st.get("ExitCode") or 0),
        restart_policy=str(((doc.get("HostConfig") or {}).get("RestartPolicy") or {})
                           .get("Name", "") or "no"))


def judge(probes: Iterable[Probe], services: Iterable[str], baseline: Mapping[str, int],
          now: float, stable_after: float = 2.0) -> Verdict:
    """`baseline`: restart counts right after `up` (a restart since then fails the gate)."""
    probes = list(probes)
    waiting = ""
    for p in probes:
        if p.state == "exited" and p.exit_code == 0 and p.restart_policy in ("no", ""):
            continue  # a one-off that completed
        if p.state in ("exited", "dead"):
            return Verdict(FAIL, f"container {p.name} exited with code {p.exit_code}", p.id)
        if p.state == "restarting" or p.restarts > baseline.get(p.id, p.restarts):
            return Verdict(FAIL, f"container {p.name} is restarting (crash loop)", p.id)
        if p.state != "running":
            waiting = waiting or f"container {p.name} is {p.state}"
        elif p.health == "unhealthy":
            waiting = waiting or f"container {p.name} is unhealthy"
        elif p.health == "starting":
            waiting = waiting or f"container {p.name} is still starting (health: starting)"
        elif not p.health and now - p.started < stable_after:
            waiting = waiting or f"container {p.name} has run {now - p.started:.0f}s"
    missing = sorted(set(services) - {p.service for p in probes})
    if missing:
        return Verdict(WAIT, f"service {missing[0]} has no container yet")
    if waiting:
        culprit = next((p.id for p in probes if p.name in waiting), "")
        return Verdict(WAIT, waiting, culprit)
    return Verdict(OK)
