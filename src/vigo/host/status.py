"""`vigo status`: what vigo did last and what Docker runs now.

`gather` reads (never takes the lock, never writes): state.json (written atomically, so a run
in progress is no problem), the suspension file, the checkout's HEAD, one `docker ps`.
`to_text` is pure and fits 80 columns; `--json` prints the gathered dict as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vigo.adapters.compose import Compose, DockerError
from vigo.adapters.git import Git
from vigo.adapters.lock import holder
from vigo.adapters.run import CommandTimeout
from vigo.config import Settings
from vigo.core.model import Container
from vigo.core.plan import is_completed
from vigo.core.records import asdict
from vigo.host import engines, state, suspend
from vigo.host.engines import swarm

WIDTH = 80
_STATUS = re.compile(r"^(?P<word>Up|Exited \((?P<code>-?\d+)\)|Restarting \(-?\d+\)|Created|"
                     r"Paused|Dead|Removal In Progress)\s*(?P<rest>.*?)\s*"
                     r"(\((?:healthy|unhealthy|health: starting|Paused)\))?$")


def container_state(c: Container) -> str:
    """running / exited(N) / restarting / unhealthy / starting / created / paused / dead."""
    if c.state == "running" and c.health in ("unhealthy", "starting"):
        return c.health
    if c.state == "exited":
        m = _STATUS.match(c.status)
        return f"exited({m['code']})" if m and m["code"] is not None else "exited"
    return c.state or "unknown"


def since(status: str) -> str:
    """'Up 3 minutes (healthy)' -> '3 minutes ago'; 'Exited (1) 2 hours ago' -> '2 hours ago'."""
    m = _STATUS.match(status.strip())
    if not m or not m["rest"]:
        return ""
    rest = m["rest"]
    if m["word"] == "Up":
        rest = rest[0].lower() + rest[1:]
        return rest if rest.endswith(" ago") else f"{rest} ago"
    return rest


def _worst(states: Sequence[str]) -> str:
    order = ("missing", "dead", "exited", "restarting", "unhealthy", "created", "paused",
             "starting", "running")
    for word in order:
        if any(s.split("(")[0] == word for s in states):
            return word
    return states[0] if states else "missing"


def gather(settings: Settings, config_path: Path | None, compose: Compose, git: Git
           ) -> dict[str, Any]:
    s = settings
    st, warning = state.load(s.state)
    held = suspend.read(s.state)
    pid = holder(s.state / "lock")
    fetched = git.head(s.checkout) if (s.checkout / ".git").is_dir() else ""
    docker_error = ""
    try:
        containers = list(engines.mine(compose.containers(), s.project_prefix))
    except (DockerError, CommandTimeout) as exc:
        containers, docker_error = [], str(exc)
    records = st.stacks
    containers += swarm.status_containers(s, compose, records)  # stacks on the swarm
    names = sorted(set(records) | {c.stack for c in containers},
                   key=lambda n: (n != "proxy", n))
    stacks = []
    for name in names:
        record = records.get(name) or state.StackRecord()
        mine = sorted((c for c in containers if c.stack == name), key=lambda c: c.name)
        rows = [{"name": c.name, "service": c.service,  # a one-shot done for its config:
                 "state": "completed" if is_completed(c, record) else container_state(c),
                 "status": c.status, "image": c.image, "since": since(c.status)}
                for c in mine]
        failing = record.failing
        last = record.last_failure or (
            state.LastFailure(record.checked_at, record.checked_at, record.failed_revision,
                              record.reason, record.code) if failing else None)
        stacks.append({
            "stack": name,
            "state": "unknown" if docker_error else _worst([r["state"] for r in rows]),
            "outcome": record.outcome,
            "code": record.code,  # the named reason of its last outcome
            "reason": record.reason if record.not_applied else "",  # why not applied here
            "revision": record.revision,
            "applied_at": record.applied_at,
            "failing": failing,
            "last_failure": asdict(last) if last is not None else None,
            "containers": rows,
            "jobs": _jobs(record),
        })
    has_run = st.has_run
    return {
        "host": s.host,
        "settings": str(config_path) if config_path else "",
        "now": state.now(),
        "suspended": held.__dict__ if held else None,
        "running": {"pid": pid} if pid else None,
        "last_run": {
            "started": st.started, "finished": st.finished, "duration": st.duration,
            "exit_code": st.exit_code, "result": "ok" if st.exit_code == 0 else "failed",
            "reason": st.reason, "error": st.error,
        } if has_run else None,
        "consecutive_failures": st.consecutive_failures,
        "revision": {"applied": st.revision_applied, "fetched": fetched,
                     "attempted": st.revision_attempted},
        "stacks": stacks,
        "swarm": swarm.status_lines(s, compose, records),
        "docker_error": docker_error,
        "warning": warning,
    }


def _jobs(record: state.StackRecord) -> list[dict[str, Any]]:
    """The last run of each release job of a stack (x-vigo.jobs), as the state file has it."""
    return [{"job": name, "when": str(run.get("when", "")), "exit": run.get("exit"),
             "duration": run.get("duration", 0), "at": str(run.get("at", "")),
             "revision": str(run.get("revision", ""))}
            for name, run in sorted(record.jobs.items())]


# -- text -------------------------------------------------------------------------------------

def _fit(text: str, width: int) -> str:
    text = " ".join(text.splitlines()).replace("\t", " ")
    return text if len(text) <= width else text[:width - 3] + "..."


def _parse(iso: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def ago(iso: str, now: datetime) -> str:
    t = _parse(iso)
    if t is None:
        return "?"
    secs = int((now - t).total_seconds())
    if secs < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= size:
            return f"{secs // size} {unit} ago"
    return f"{secs} s ago"


def _when(iso: str, now: datetime) -> str:
    t = _parse(iso)
    if t is None:
        return iso or "?"
    return f"{t.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({ago(iso, now)})"


def short_image(image: str) -> str:
    """'ghcr.io/acme/whoami:sha-1a2b3c4' -> 'whoami:sha-1a2b3c4' (the tag is what matters)."""
    return image.rsplit("/", 1)[-1]


def _why(name: str, reason: str) -> str:
    """'whoami: failed (docker compose up: ...)' -> 'docker compose up: ...'."""
    prefix = f"{name}: "
    reason = reason[len(prefix):] if reason.startswith(prefix) else reason
    if reason.startswith("failed (") and reason.endswith(")"):
        return reason[len("failed ("):-1]
    return reason


def _not_applied(name: str, reason: str) -> str:
    """'app: not applied (not the leader (...))' -> 'not the leader (...)'."""
    reason = reason.removeprefix(f"{name}: ")
    for head in ("not applied (", "not removed ("):
        if reason.startswith(head) and reason.endswith(")"):
            return reason[len(head):-1]
    return reason


def _rev(rev: str) -> str:
    return rev[:12] if rev else "-"


def to_text(data: dict[str, Any], now: datetime | None = None) -> list[str]:
    now = now or (_parse(data.get("now", "")) or datetime.now(UTC))
    out = [_fit(f"vigo on {data['host']}" + (f", settings {data['settings']}"
                                              if data.get("settings") else ""), WIDTH)]
    held = data.get("suspended")
    if held:
        out.append(_fit(f"SUSPENDED  by {held['by']}, {_when(held['at'], now)}", WIDTH))
        out.append(_fit(f"           {held['reason'] or '(no reason given)'}; "
                        "vigo resume to continue", WIDTH))
    if data.get("running"):
        out.append(f"running    a run is in progress (pid {data['running']['pid']})")
    last = data.get("last_run")
    if last is None:
        out.append("last run   never (no run has finished on this host yet)")
    else:
        result = "ok" if last["exit_code"] == 0 else f"FAILED (exit {last['exit_code']})"
        out.append(_fit(f"last run   {_when(last['finished'], now)}, {result}, "
                        f"{float(last['duration'] or 0):.1f} s", WIDTH))
        if last["exit_code"] and last.get("error"):
            code = f"[{last['reason']}] " if last.get("reason") else ""
            out.append(_fit(f"           {code}{last['error']}", WIDTH))
        if data.get("consecutive_failures", 0) > 1:
            out.append(f"           {data['consecutive_failures']} failed runs in a row")
    rev = data["revision"]
    out.append(f"revision   applied {_rev(rev['applied'])}  fetched {_rev(rev['fetched'])}  "
               f"attempted {_rev(rev['attempted'])}")
    if data.get("warning"):
        out.append(_fit(f"warning: {data['warning']}", WIDTH))
    if data.get("docker_error"):
        out.append(_fit(f"docker: {data['docker_error']}", WIDTH))
    out.append("")
    if not data["stacks"]:
        out.append("no stacks: nothing deployed by this vigo instance")
        return out
    cols = (("STACK", 14), ("SERVICE", 10), ("STATE", 11), ("IMAGE", 24), ("SINCE", 15))
    out.append(" ".join(f"{h:<{w}}" for h, w in cols).rstrip())
    for stack in data["stacks"]:
        rows = stack["containers"] or [{"service": "-", "state": (
            "unknown" if data.get("docker_error") else "missing"), "image": "", "since": ""}]
        for i, c in enumerate(rows):
            image = short_image(c["image"])
            if len(image) > cols[3][1]:
                image = "..." + image[-(cols[3][1] - 3):]
            cells = (stack["stack"] if i == 0 else "", c["service"], c["state"], image,
                     c["since"])
            out.append(" ".join(_fit(v, w).ljust(w) for v, (_, w) in zip(cells, cols,
                                                                          strict=True)).rstrip())
        for job in stack.get("jobs") or []:
            code = job["exit"]
            result = "stopped at its timeout" if code is None else f"exit {code}"
            try:
                took = f"{float(job['duration'] or 0):.1f} s"
            except (TypeError, ValueError):
                took = "?"
            out.append(_fit(f"  job {job['job']} ({job['when']}): {result}, {took}, "
                            f"{ago(job['at'], now)} at {_rev(job['revision'])}", WIDTH))
        if stack.get("outcome") == state.NOT_APPLIED:  # a follower manager: the leader applies
            code = f"[{stack['code']}] " if stack.get("code") else ""
            why = _not_applied(stack["stack"], str(stack.get("reason") or ""))
            out.append(_fit(f"  not applied here: {code}{why}", WIDTH))
        failure = stack.get("last_failure")
        if failure:
            reason = str(failure.get("reason", ""))
            reason = _why(stack["stack"], reason)
            if failure.get("code"):
                reason = f"[{failure['code']}] {reason}"
            head, when = (("  ! failing since", failure.get("since")) if stack["failing"]
                          else ("  last failure", failure.get("at")))
            out.append(_fit(f"{head} {ago(str(when or ''), now)} at "
                            f"{_rev(str(failure.get('revision', '')))}: {reason}", WIDTH))
    out += [_fit(line, WIDTH) for line in data.get("swarm") or []]
    return out
