"""Inputs that crashed a run (recorded as a success) end in a RECORDED failure: exit 1, `vigo
status --json` not ok, the state's exit_code not 0, no traceback; and the next good commit
converges. A deploy that raises through a real engine timeout fails that stack only, and the
timeout leaves no `docker compose` process behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import TAG_A, Host


def no_traceback(res: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr


def last_run(host: Host) -> dict:
    res = host.vigo("status", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["last_run"]


def state(host: Host) -> dict:
    return json.loads((host.state / "state.json").read_text())


def symlink_loop(work: Path) -> None:
    folder = work / "stacks" / "echo" / "loop"
    folder.mkdir()
    os.symlink("b", folder / "a")
    os.symlink("a", folder / "b")
    os.symlink(".", folder / "self")


def non_utf8_name(work: Path) -> None:
    name = os.fsencode(work / "stacks" / "echo" / "config") + b"/caf\xe9-\xff.conf"
    os.makedirs(os.path.dirname(name), exist_ok=True)
    with open(name, "wb") as f:
        f.write(b"x=1\n")


def deep_labels(work: Path) -> None:
    compose = work / "stacks" / "echo" / "docker-compose.yml"
    text = compose.read_text().replace(
        "    labels:\n", "    labels:\n      x.deep: " + "[" * 20_000 + "]" * 20_000 + "\n"
        "    x-deep: " + "{a: " * 20_000 + "1" + "}" * 20_000 + "\n", 1)
    compose.write_text(text)


@pytest.mark.parametrize("plant", [symlink_loop, non_utf8_name, deep_labels])
def test_a_crash_input_is_a_recorded_failure_and_the_next_commit_converges(host: Host, plant):
    host.seed()
    host.apply()
    assert last_run(host)["result"] == "ok"
    good = host.repo.commit("nothing yet")
    plant(host.repo.work)
    bad = host.repo.commit("the hostile input")

    res = host.vigo("apply")
    no_traceback(res)
    assert res.returncode == 1, res.stdout + res.stderr
    run = last_run(host)
    assert run["result"] == "failed" and run["exit_code"] == 1 and run["error"]
    st = state(host)
    assert st["exit_code"] == 1 and st["error"]
    assert st.get("revision_applied") != bad
    print(plant.__name__, "->", run["error"])
    assert "revision=" in host.get("whoami", "revision=")  # the good stack still serves

    res = host.vigo("apply")  # every run fails the same way, and is recorded each time
    assert res.returncode == 1 and state(host)["ops"]["consecutive_failures"] == 2

    host.repo.revert(bad)
    fixed = host.repo.commit("revert the hostile input")
    res = host.apply()
    no_traceback(res)
    run = last_run(host)
    assert run["result"] == "ok" and state(host)["revision_applied"] == fixed != good
    assert state(host)["ops"]["consecutive_failures"] == 0


SLOW = f"""\
services:
  db:
    image: ghcr.io/vigo-example/whoami:{TAG_A}
    healthcheck:
      test: ["CMD-SHELL", "sleep 4; /bin/healthy"]
      interval: 1s
      timeout: 10s
      retries: 3
  web:
    image: ghcr.io/vigo-example/whoami:{TAG_A}
    depends_on:
      db:
        condition: service_healthy
"""


def compose_processes(project: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if project in cmdline and "compose" in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_a_deploy_that_times_out_fails_that_stack_only_and_leaves_no_process(host: Host):
    host.seed()
    host.apply()
    settings = host.config.read_text()
    host.config.write_text(settings + "compose_timeout = 1\n")
    host.repo.write("stacks/slow/docker-compose.yml", SLOW)
    host.repo.commit("a stack whose compose up waits for a slow healthcheck")

    res = host.vigo("apply")
    no_traceback(res)
    assert res.returncode == 1, res.stdout + res.stderr
    slow = [line for line in res.stdout.splitlines() if line.startswith("slow: ")]
    assert slow and "timed out after 1 s" in slow[0], res.stdout
    assert f"docker compose up (project {host.prefix}slow)" in slow[0]
    assert compose_processes(f"{host.prefix}slow") == []
    st = state(host)
    assert st["exit_code"] == 1 and st["stacks"]["slow"]["outcome"] == "failed"
    assert st["stacks"]["whoami"]["outcome"] == "ok"
    assert last_run(host)["result"] == "failed"
    assert "revision=" in host.get("whoami", "revision=")

    host.config.write_text(settings)  # the timeout back to its default: the stack converges
    host.apply()
    assert state(host)["stacks"]["slow"]["outcome"] == "ok"
    assert last_run(host)["result"] == "ok"


def alias_bomb(levels: int = 9) -> str:
    lines = ["x-a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, name in zip("abcdefghij", "bcdefghijk"[:levels - 1], strict=False):
        lines.append(f"x-{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\nservices:\n  web:\n    image: busybox:1\n"


def test_a_timeout_ends_docker_and_its_compose_plugin(tmp_path: Path):
    """The alias bomb under an `x-` key goes to `docker compose config`: at the timeout both
    docker and its docker-compose child are gone (one was seen at 19 GB minutes later)."""
    from vigo.adapters.run import UNTRUSTED_DATA_LIMIT, CommandTimeout, Runner

    bomb = tmp_path / "bomb-compose.yml"
    bomb.write_text(alias_bomb())
    argv = ("docker", "compose", "--project-name", "vigo-bomb", "--file", str(bomb),
            "--env-file", "/dev/null", "config", "--format", "json")
    with pytest.raises(CommandTimeout) as caught:
        Runner().run(argv, timeout=3, limit_data=UNTRUSTED_DATA_LIMIT)
    assert str(caught.value) == "docker compose config (project vigo-bomb) timed out after 3 s"
    assert compose_processes(str(bomb)) == []
