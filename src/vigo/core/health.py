"""The health gate's judgement over what `docker inspect` shows. Pure.

A stack passes when every service has a container and each one is healthy (where it has a
healthcheck) or has been running for `stable_after` seconds without a restart (where it has
none); a one-off container that exited 0 without a restart policy (or with `on-failure`) has
completed. It fails at once when a container exits non-zero, dies or restarts; it keeps waiting
while health is `starting`. A service scaled to N expects N containers, to 0 none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from vigo.core.records import record

OK, WAIT, FAIL = "ok", "wait", "fail"


@record(frozen=True)
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


@record(frozen=True)
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


FINISHING_POLICIES = ("no", "", "on-failure")  # docker's RestartPolicy names that let a
# container stay exited after a clean exit


def _policy(restart: object) -> str:
    """compose's `restart:` ('on-failure:3', 'no', None) as docker's policy name."""
    return str(restart or "no").split(":", 1)[0].strip().strip('"') or "no"


def meant_to_finish(name: str, services: Mapping[str, Mapping[str, Any]]) -> bool:
    """A service of the resolved model that is meant to exit: another service waits for it with
    `condition: service_completed_successfully`, or its restart policy lets it stay exited
    (`no`, the default, or `on-failure`) - the second kind only counts once it did exit 0."""
    for other in services.values():
        dep = (other.get("depends_on") or {}) if isinstance(other, Mapping) else {}
        if isinstance(dep, Mapping) and isinstance(dep.get(name), Mapping) and \
                dep[name].get("condition") == "service_completed_successfully":
            return True
    svc = services.get(name) or {}
    return _policy(svc.get("restart")) in FINISHING_POLICIES


def replicas(svc: Mapping[str, Any]) -> int:
    """How many containers compose runs for a service: `scale`, else `deploy.replicas`, else 1."""
    for value in (svc.get("scale"), (svc.get("deploy") or {}).get("replicas")):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 1


def judge(probes: Iterable[Probe], services: Iterable[str], baseline: Mapping[str, int],
          now: float, stable_after: float = 2.0,
          counts: Mapping[str, int] | None = None) -> Verdict:
    """`baseline`: restart counts right after `up` (a restart since then fails the gate);
    `counts`: containers expected per service where not 1 (scale, deploy.replicas)."""
    probes = list(probes)
    counts = counts or {}
    waiting = ""
    for p in probes:
        if p.state == "exited" and p.exit_code == 0 and p.restart_policy in FINISHING_POLICIES:
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
    have = {svc: sum(1 for p in probes if p.service == svc) for svc in services}
    missing = sorted(svc for svc, n in have.items() if n < counts.get(svc, 1))
    if missing:
        svc = missing[0]
        want = counts.get(svc, 1)
        return Verdict(WAIT, f"service {svc} has no container yet" if want == 1 else
                       f"service {svc} has {have[svc]} of {want} containers")
    if waiting:
        culprit = next((p.id for p in probes if p.name in waiting), "")
        return Verdict(WAIT, waiting, culprit)
    return Verdict(OK)
