"""Reboots, simulated on the shared engine: the systemd container (tests/support/systemd.py) is
stopped and started again, its /run tmpfs (vigo's secrets) comes back empty, the engine and its
containers stay (the shared engine is never restarted). The first run of each boot comes from
the timer (OnBootSec)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import TAG_A, TAG_B, Host
from tests.e2e.test_faults import PrivateEngine, private_engine  # noqa: F401 - the fixture
from tests.support import light
from tests.support.poll import wait_for
from tests.support.systemd import Machine, Run, TimerHost

ERR = 3


@pytest.fixture
def timer_host(tmp_path: Path) -> Iterator[TimerHost]:
    h = TimerHost(tmp_path, "tr" + uuid.uuid4().hex[:6] + "-")
    yield h
    h.cleanup()


def start(m: Machine, expect_ok: bool) -> Run:
    """One run by hand (`systemctl start` waits for a oneshot), as read from the journal."""
    count = len([r for r in m.runs() if r.ended is not None])
    res = m.exec("systemctl", "start", "vigo.service", check=False)
    assert (res.returncode == 0) == expect_ok, res.stdout + res.stderr
    return m.wait_runs(count + 1, 30)[-1]


def running(h: TimerHost) -> dict[str, str]:
    return {name: c["Id"] for name, c in h.containers().items() if c["State"]["Running"]}


def test_reboot_re_decrypts_recreates_nothing_and_keeps_running_without_the_remote(
        timer_host: TimerHost) -> None:
    h, m = timer_host, timer_host.machine
    h.seed({"whoami": TAG_A, "echo": TAG_B})
    m.start()
    boot = h.bootstrap()
    assert boot.returncode == 0, boot.stdout + boot.stderr
    before = running(h)
    assert len(before) == 3, before  # the proxy, whoami, echo

    # Reboot 1: the secrets tmpfs is empty. A change to echo's secrets was pushed meanwhile:
    # the boot's timer run decrypts again what it needs, updates echo, recreates nothing else.
    # (An idle run decrypts nothing: docs/idle.md.)
    assert m.exec("test", "-f", "/run/vigo/env/whoami.env", check=False).returncode == 0

    def rotate() -> None:
        h.repo.write_env("env/echo.env", {"ECHO_HOST": f"echo.{h.prefix[:-1]}.test",
                                          "NEW_SECRET": "rotated-after-boot"})
        h.repo.commit("rotate a secret of echo")

    m.reboot(while_down=rotate)
    assert m.exec("test", "-e", "/run/vigo/env", check=False).returncode != 0
    run = m.wait_runs(1, 120)[0]
    assert run.result == "success", run.lines
    assert m.exec("test", "-f", "/run/vigo/env/echo.env", check=False).returncode == 0, (
        run.lines)
    changed = [msg for _, msg in run.lines if any(
        w in msg for w in ("created", "updated", "removed", "failed"))]
    assert len(changed) == 1 and changed[0].startswith("echo: updated"), run.lines
    now = running(h)
    echo = next(name for name in before if "echo" in name)
    assert {k: v for k, v in now.items() if "echo" not in k} == {
        k: v for k, v in before.items() if k != echo}
    before = now

    # Reboot 2 with the remote unreachable: the last applied state keeps running, exit 3.
    away = h.repo.remote.with_name("remote.git.away")
    h.repo.remote.rename(away)
    m.reboot()
    run = m.wait_runs(1, 120)[0]
    assert run.result == "exit-code", run.lines
    status = m.exec("systemctl", "show", "vigo.service", "-p", "ExecMainStatus").stdout
    assert "ExecMainStatus=3" in status, status
    source = [(p, msg) for p, msg in run.lines if msg.startswith("source: ")]
    assert source and source[0][0] == ERR, run.lines
    assert "nothing changed, the next run tries again" in source[0][1]
    assert running(h) == before
    away.rename(h.repo.remote)

    # The age key lost (and the tmpfs empty since the boot), and a change pushed: the run
    # fails with the fix before any stack is touched; nothing is pruned, nothing recreated.
    hidden = h.key.path.with_name("age.txt.lost")
    h.key.path.rename(hidden)
    h.repo.write_env("env/whoami.env", {"WHOAMI_HOST": f"whoami.{h.prefix[:-1]}.test",
                                        "NEW_SECRET": "after-the-key-was-lost"})
    h.repo.commit("a new secret for whoami")
    run = start(m, expect_ok=False)
    status = m.exec("systemctl", "show", "vigo.service", "-p", "ExecMainStatus").stdout
    assert "ExecMainStatus=2" in status, status
    lost = [msg for p, msg in run.lines if p == ERR and msg.startswith("settings: the age key")]
    assert lost and "fix: restore" in lost[0] and "age_key_file" in lost[0], run.lines
    assert not any("removed" in msg for _, msg in run.lines)
    assert running(h) == before

    # The settings file lost: the run fails with the fix, touches nothing.
    settings = h.config.with_name("vigo.toml.lost")
    h.config.rename(settings)
    run = start(m, expect_ok=False)
    assert any(p == ERR and "settings file not found" in msg for p, msg in run.lines), run.lines
    assert running(h) == before

    # Both back: the next run converges and still recreates nothing.
    h.key.path.parent.joinpath("age.txt.lost").rename(h.key.path)
    settings.rename(h.config)
    run = start(m, expect_ok=True)
    assert run.result == "success", run.lines
    assert any(msg.startswith("whoami: updated") for _, msg in run.lines), run.lines
    now = running(h)
    assert {k: v for k, v in now.items() if "whoami" not in k} == {
        k: v for k, v in before.items() if "whoami" not in k}


def test_engine_restart_containers_come_back_by_restart_policy_and_nothing_is_recreated(
        host: Host, private_engine: PrivateEngine) -> None:  # noqa: F811 - the fixture
    """An engine restart needs an engine of the test's own (test_faults.PrivateEngine): the
    shared one is never restarted. The secrets tmpfs is emptied as a boot would."""
    eng = private_engine

    def apply() -> subprocess.CompletedProcess[str]:
        res = subprocess.run([sys.executable, "-m", "vigo", "--config", str(host.config),
                              "apply"], env=eng.env(), capture_output=True, text=True,
                             timeout=300, check=False, stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stdout + res.stderr
        return res

    def containers() -> dict[str, tuple[str, str]]:
        out = eng.docker("ps", "-a", "--filter", f"label=io.vigo.instance={host.prefix}",
                         "--format", '{{.Label "io.vigo.stack"}} {{.ID}} {{.State}}').stdout
        return {s: (i, state) for s, i, state in (line.split() for line in out.splitlines())}

    light.add(host, "always", extra="    restart: unless-stopped\n")
    light.add(host, "failure", extra="    restart: on-failure\n")
    host.repo.commit("two stacks with a restart policy")
    apply()
    before = containers()
    assert {s: state for s, (_, state) in before.items()} == {"always": "running",
                                                              "failure": "running"}
    shutil.rmtree(host.secrets)  # a boot empties the tmpfs
    host.repo.write_env("env/failure.env", {"STACK_ID": "id-failure", "NEW": "after-boot"})
    host.repo.commit("a new secret for one stack")
    eng.stop()
    eng.start(pools=False)
    wait_for(containers, 60, 0.5, "the engine to restart stack always's container",
             ok=lambda found: found.get("always", ("", ""))[1] == "running")
    after_boot = containers()
    assert after_boot["always"][0] == before["always"][0]  # restarted, not recreated
    res = apply()
    assert (host.secrets / "env" / "failure.env").is_file()  # decrypted again
    now = containers()
    assert now["always"][0] == before["always"][0], res.stdout  # unchanged: not recreated
    assert now["failure"][0] != before["failure"][0]  # its secrets changed
    assert "failure: updated" in res.stdout and "always:" not in res.stdout, res.stdout
    assert all(state == "running" for _, state in now.values()), now
    again = apply()
    assert "nothing to do" in again.stdout and containers() == now
