"""`vigo status` text: container states, 'since', 80 columns, no run yet, suspension."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from vigo.core.model import Container
from vigo.host import status

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def container(state: str, status_text: str, **kw: str) -> Container:
    base = {"id": "1", "name": "p-whoami-web-1", "stack": "whoami", "instance": "",
            "project": "whoami", "service": "web", "image": "x:1", "config_hash": "h"}
    return Container(state=state, status=status_text, **(base | kw))


@pytest.mark.parametrize("state, text, word, since", [
    ("running", "Up 3 minutes", "running", "3 minutes ago"),
    ("running", "Up 2 hours (healthy)", "running", "2 hours ago"),
    ("running", "Up 5 seconds (health: starting)", "starting", "5 seconds ago"),
    ("running", "Up About a minute (unhealthy)", "unhealthy", "about a minute ago"),
    ("exited", "Exited (137) 4 minutes ago", "exited(137)", "4 minutes ago"),
    ("restarting", "Restarting (1) 2 seconds ago", "restarting", "2 seconds ago"),
    ("created", "Created", "created", ""),
    ("running", "Up Less than a second", "running", "less than a second ago"),
])
def test_container_state_and_since(state: str, text: str, word: str, since: str) -> None:
    c = container(state, text)
    assert status.container_state(c) == word
    assert status.since(c.status) == since


def data(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "host": "web-1", "settings": "/etc/vigo/vigo.toml", "now": NOW.isoformat(),
        "suspended": None, "running": None,
        "last_run": {"started": "2024-05-01T11:59:50+00:00",
                     "finished": "2024-05-01T11:59:55+00:00", "duration": 4.25,
                     "exit_code": 0, "result": "ok", "error": ""},
        "consecutive_failures": 0,
        "revision": {"applied": "a" * 40, "fetched": "b" * 40, "attempted": "b" * 40},
        "stacks": [], "docker_error": "", "warning": ""}
    return base | over


def stack(name: str, *rows: dict[str, str], failing: bool = False,
          last_failure: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"stack": name, "state": "running", "outcome": "failed" if failing else "ok",
            "failing": failing, "last_failure": last_failure, "containers": list(rows)}


def row(service: str, state: str, image: str, since: str) -> dict[str, str]:
    return {"service": service, "state": state, "image": image, "since": since, "name": "n",
            "status": ""}


def test_text_fits_80_columns_and_shows_everything() -> None:
    long = "a-stack-with-a-very-long-name-indeed"
    d = data(
        suspended={"by": "alice", "at": "2024-05-01T11:00:00+00:00",
                   "reason": "migrating the database " * 5},
        running={"pid": 4242},
        last_run={"started": "", "finished": "2024-05-01T11:58:00+00:00", "duration": 12.5,
                  "exit_code": 1, "result": "failed", "error": "whoami: failed (x) " * 10},
        consecutive_failures=3,
        stacks=[
            stack("proxy", row("traefik", "running", "traefik:v3.7", "2 hours ago")),
            stack("whoami", row("web", "exited(1)",
                                "ghcr.io/vigo-example/whoami:sha-1a2b3c4", "3 minutes ago"),
                  failing=True,
                  last_failure={"since": "2024-05-01T11:50:00+00:00",
                                "at": "2024-05-01T11:58:00+00:00", "revision": "c" * 40,
                                "reason": "whoami: failed (docker compose up: " + "y" * 90 + ")"}),
            stack(long, row("a-long-service-name", "running",
                            "registry.example.com/team/" + "i" * 40 + ":sha-0123456789",
                            "about a minute ago")),
            stack("gone"),
        ])
    lines = status.to_text(d, NOW)
    assert all(len(line) <= 80 for line in lines), [x for x in lines if len(x) > 80]
    text = "\n".join(lines)
    assert "SUSPENDED  by alice, 2024-05-01 11:00:00 UTC (1 h ago)" in text
    assert "a run is in progress (pid 4242)" in text
    assert "last run   2024-05-01 11:58:00 UTC (2 min ago), FAILED (exit 1), 12.5 s" in text
    assert "3 failed runs in a row" in text
    assert f"revision   applied {'a' * 12}  fetched {'b' * 12}  attempted {'b' * 12}" in text
    assert any(x.startswith("whoami ") and "exited(1)" in x and "whoami:sha-1a2b3c4" in x
               and "3 minutes ago" in x for x in lines)
    assert f"  ! failing since 10 min ago at {'c' * 12}: docker compose up: yyy" in text
    assert any(x.startswith("gone ") and " missing" in x for x in lines)
    assert any(x.startswith("a-stack-wit...") and "...iiiiii:sha-0123456789" in x
               for x in lines)


def test_text_before_any_run() -> None:
    lines = status.to_text(data(last_run=None, revision={"applied": "", "fetched": "",
                                                         "attempted": ""}), NOW)
    assert lines[1] == "last run   never (no run has finished on this host yet)"
    assert lines[2] == "revision   applied -  fetched -  attempted -"
    assert lines[-1] == "no stacks: nothing deployed by this vigo instance"


def test_past_failure_and_docker_down() -> None:
    d = data(docker_error="cannot list containers: Cannot connect to the Docker daemon",
             stacks=[stack("whoami", last_failure={
                 "since": "2024-05-01T10:00:00+00:00", "at": "2024-05-01T10:00:00+00:00",
                 "revision": "d" * 40, "reason": "whoami: failed (boom)"})])
    d["stacks"][0]["containers"] = []
    text = "\n".join(status.to_text(d, NOW))
    assert "docker: cannot list containers: Cannot connect" in text
    assert f"  last failure 2 h ago at {'d' * 12}: boom" in text
    assert any(x.startswith("whoami ") and " unknown" in x for x in text.splitlines())


def test_the_named_reasons_are_shown() -> None:
    d = data(last_run={"started": "", "finished": "2024-05-01T11:58:00+00:00", "duration": 1.0,
                       "exit_code": 1, "result": "failed", "reason": "StackFailed",
                       "error": "whoami: rolled back"},
             stacks=[stack("whoami", row("web", "running", "x:1", "1 minute ago"))])
    d["stacks"][0].update(failing=True, last_failure={
        "since": "2024-05-01T11:50:00+00:00", "at": "2024-05-01T11:58:00+00:00",
        "revision": "c" * 40, "reason": "whoami: rolled back to r1; c failed: not healthy",
        "code": "RolledBack", "ongoing": True})
    text = "\n".join(status.to_text(d, NOW))
    assert "FAILED (exit 1), 1.0 s\n           [StackFailed] whoami: rolled back" in text
    assert f"  ! failing since 10 min ago at {'c' * 12}: [RolledBack] rolled back to r1" in text
