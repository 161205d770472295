"""vigo.timer on a real systemd (PID 1 in a container, tests/support/systemd.py): `vigo bootstrap`
installs the units; the timer's runs converge, apply a push, log with priorities, pull a private
image with credentials from the secrets tmpfs under the unit's sandbox, write the metrics file,
and a run that hangs is ended by TimeoutStartSec (run_timeout) and the next one works."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import TAG_A, TAG_B
from tests.support.images import APP_REPOSITORY
from tests.support.infra import sh
from tests.support.registry import Registry
from tests.support.systemd import TimerHost

HANG = """\
services:
  web:
    image: {image}
    healthcheck:
      test: ["CMD", "true"]
      interval: {interval}
      start_period: 0s
networks:
  default:
    external: true
    name: {prefix}proxy
x-vigo:
  health_timeout: 600
"""

INFO, WARNING, ERR = 6, 4, 3


@pytest.fixture
def timer_host(tmp_path: Path) -> Iterator[TimerHost]:
    h = TimerHost(tmp_path, "ts" + uuid.uuid4().hex[:6] + "-")
    yield h
    h.cleanup()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(tmp_path / "registry").start()
    yield reg
    reg.stop()


def image_of(h: TimerHost, stack: str) -> str:
    """The image of the stack's running container ('' in the moment of a replacement)."""
    return next((c["Config"]["Image"] for c in h.containers().values()
                 if c["Config"]["Labels"].get("io.vigo.stack") == stack
                 and c["State"]["Running"]), "")


def test_timer_runs_converge_apply_a_push_and_survive_a_hung_run(
        timer_host: TimerHost, registry: Registry) -> None:
    h, m = timer_host, timer_host.machine
    private_ref, _ = registry.push(f"{APP_REPOSITORY}:{TAG_A}", f"vigo/private:{TAG_A}")
    h.seed({"whoami": TAG_A})
    m.start()
    boot = h.bootstrap("--interval", "15s")  # the timer's cadence (60 s by default)
    assert boot.returncode == 0, boot.stdout + boot.stderr
    assert "timer: enabled and started" in boot.stdout, boot.stdout
    unit = m.exec("systemctl", "cat", "vigo.service").stdout
    assert "TimeoutStartSec=40" in unit and "ProtectSystem=strict" in unit
    assert "OnUnitInactiveSec=15" in m.exec("systemctl", "cat", "vigo.timer").stdout

    # The first timer run (30 s after boot, or at once when bootstrap took longer) converges.
    first = m.wait_runs(1, 120)[0]
    assert first.result == "success", first.lines

    # A private image with repo credentials, and a warning line (.gitmodules) so the journal
    # shows two priorities: applied by the next timer run.
    h.repo.write("stacks/private/docker-compose.yml",
                 (h.repo.work / "stacks/whoami/docker-compose.yml").read_text()
                 .replace(f"ghcr.io/vigo-example/whoami:{TAG_A}", private_ref)
                 .replace("whoami", "private").replace("WHOAMI", "PRIVATE"))
    h.repo.write_env("env/private.env", {"PRIVATE_HOST": f"private.{h.prefix[:-1]}.test"})
    h.repo.write_env("env/registries.env", {"CI_REGISTRY": registry.host,
                                            "CI_USERNAME": registry.user,
                                            "CI_PASSWORD": registry.password})
    h.repo.write(".gitmodules", "")
    h.repo.commit("private stack")
    pushed = m.uptime()  # a run that starts later sees the commit
    assert not registry.has_locally(private_ref)

    first = m.next_run(pushed, 120)
    text = "\n".join(msg for _, msg in first.lines)
    assert first.result == "success", text
    assert (INFO, "private: created (new stack)") in first.lines, first.lines
    assert any(p == WARNING and ".gitmodules" in msg for p, msg in first.lines), first.lines
    assert image_of(h, "private") == private_ref
    cfg = m.exec("stat", "-c", "%a", "/run/vigo/docker/config.json").stdout.strip()
    assert cfg == "600"
    assert h.metrics.is_file() and "vigo_" in h.metrics.read_text()
    for secret in registry.secrets():
        assert secret not in text

    # A push is applied by the next timer run (15 s after the last one ended). It also moves
    # the private stack to a new image and drops the repo's credentials: that pull uses root's
    # `docker login` on the host (here: in the systemd container), under the unit's sandbox.
    new_private, _ = registry.push(f"{APP_REPOSITORY}:{TAG_B}", f"vigo/private:{TAG_B}")
    sh("docker", "exec", "-i", m.name, "docker", "login", "-u", registry.user,
       "--password-stdin", registry.host, input=registry.password)
    whoami = h.repo.work / "stacks/whoami/docker-compose.yml"
    whoami.write_text(whoami.read_text().replace(TAG_A, TAG_B))
    private = h.repo.work / "stacks/private/docker-compose.yml"
    private.write_text(private.read_text().replace(private_ref, new_private))
    h.repo.remove("env/registries.env")
    h.repo.commit("promote whoami and private")
    pushed, pushed_at = time.monotonic(), m.uptime()
    deadline = pushed + 100
    while image_of(h, "whoami") != f"{APP_REPOSITORY}:{TAG_B}":
        assert time.monotonic() < deadline, "the timer did not apply the push"
        time.sleep(1)
    print(f"push applied by the timer {time.monotonic() - pushed:.1f} s after it was pushed")
    second = m.next_run(pushed_at, 60)
    assert second.result == "success"
    assert any(p == INFO and msg.startswith("whoami: updated") for p, msg in second.lines), (
        second.lines)
    assert any(p == INFO and msg.startswith("private: updated") for p, msg in second.lines), (
        second.lines)
    assert image_of(h, "private") == new_private
    gap = second.started - (first.ended or 0)
    print(f"run 2 started {gap:.1f} s after run 1 ended")

    # A run that hangs (a health wait longer than run_timeout) is ended by TimeoutStartSec.
    h.repo.write("stacks/hang/docker-compose.yml", HANG.format(
        image=f"{APP_REPOSITORY}:{TAG_A}", interval="1h", prefix=h.prefix))
    h.repo.commit("a stack whose health wait blocks")
    pushed_at = m.uptime()
    hung = m.next_run(pushed_at, 60 + 40 + 60)
    assert hung.result == "timeout", hung
    # The next one works: the stack fixed, the run converges.
    h.repo.write("stacks/hang/docker-compose.yml", HANG.format(
        image=f"{APP_REPOSITORY}:{TAG_A}", interval="1s", prefix=h.prefix))
    h.repo.commit("fix the health check")
    pushed_at = m.uptime()
    after = m.next_run(pushed_at, 60 + 60 + 60)
    assert after.result == "success", after.lines
    assert any(msg.startswith("hang: ") and "failed" not in msg for _, msg in after.lines), (
        after.lines)
    status = m.exec("systemctl", "show", "vigo.service", "-p", "Result,ExecMainStatus").stdout
    assert "Result=success" in status and "ExecMainStatus=0" in status
