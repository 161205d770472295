"""A private infra repo over SSH under the hardened unit on a real systemd (PID 1 in a container,
tests/support/systemd.py): `vigo bootstrap --ssh-keygen --host-key-fingerprint` inside the
container against a real sshd (tests/support/gitservers.py) on the docker0 gateway; the timer's
runs (ProtectSystem=strict, UMask=0077, PrivateDevices, RestrictAddressFamilies, ...) fetch over
SSH and apply a push; a changed and an unknown host key fail the run with exit 3 and the offered
fingerprint in the journal; nothing is written under root's ~/.ssh."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import TAG_A, TAG_B
from tests.support.gitservers import SshGitServer
from tests.support.images import APP_REPOSITORY
from tests.support.infra import sh
from tests.support.registry import GATEWAY
from tests.support.systemd import Run, TimerHost

ERR = 3


@pytest.fixture
def timer_host(tmp_path: Path) -> Iterator[TimerHost]:
    h = TimerHost(tmp_path, "tq" + uuid.uuid4().hex[:6] + "-")
    yield h
    h.cleanup()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshGitServer]:
    # On the docker0 gateway: the systemd container reaches it there (not on loopback).
    server = SshGitServer(tmp_path / "sshd", GATEWAY)
    yield server
    server.stop()


def image_of(h: TimerHost, stack: str) -> str:
    return next((c["Config"]["Image"] for c in h.containers().values()
                 if c["Config"]["Labels"].get("io.vigo.stack") == stack
                 and c["State"]["Running"]), "")


def _text(run: Run) -> str:
    return "\n".join(f"<{p}> {msg}" for p, msg in run.lines)


def _host_key_line(run: Run) -> tuple[int, str]:
    line = next(((p, msg) for p, msg in run.lines if "host key" in msg), None)
    assert line is not None, _text(run)
    return line


def _accepted(sshd: SshGitServer) -> int:
    """Logins of the deploy key from a container (not from this host's loopback)."""
    return len(re.findall(r"Accepted publickey for root from 172\.", sshd.log.read_text()))


def test_ssh_repo_under_the_hardened_unit(timer_host: TimerHost, sshd: SshGitServer) -> None:
    h, m = timer_host, timer_host.machine
    etc = h.root / "etc"
    etc.mkdir()
    config, key, known = etc / "vigo.toml", etc / "deploy_key", etc / "known_hosts"
    # The TimerHost's settings (paths in the shared folder, the tmpfs secrets, the metrics
    # file, run_timeout), but written by bootstrap itself from VIGO_<KEY> variables.
    values = dict(re.findall(r'^(\w+) = "?(.*?)"?$', h.config.read_text(), flags=re.M))
    env = [f"VIGO_{k.upper()}={v}" for k, v in values.items()
           if k not in ("repo", "host", "age_key_file")]
    url = sshd.url(h.repo.remote)

    def bootstrap() -> subprocess.CompletedProcess[str]:
        return sh("docker", "exec", *(x for e in env for x in ("-e", e)), m.name,
                  "vigo", "--config", str(config), "bootstrap", "--repo", url,
                  "--host", "testhost", "--age-key-file", values["age_key_file"],
                  "--ssh-keygen", str(key), "--host-key-fingerprint", sshd.fingerprint(),
                  "--interval", "15s", check=False)

    h.seed({"whoami": TAG_A})
    m.start()
    boot = bootstrap()  # makes the deploy key and prints its public half, nothing else
    assert boot.returncode == 1, boot.stdout + boot.stderr
    public = next((x.strip() for x in boot.stdout.splitlines()
                   if x.strip().startswith("ssh-ed25519 ")), "")
    assert public and "read-only deploy key" in boot.stdout, boot.stdout
    assert key.stat().st_mode & 0o777 == 0o600
    assert known.read_text().split()[0] == f"[{GATEWAY}]:{sshd.port}"
    sshd.allow(public)
    boot = bootstrap()
    assert boot.returncode == 0, boot.stdout + boot.stderr
    assert "timer: enabled and started" in boot.stdout, boot.stdout
    assert f"  ssh       key {key}, host keys {known}" in boot.stdout, boot.stdout
    assert image_of(h, "whoami") == f"{APP_REPOSITORY}:{TAG_A}"
    unit = m.exec("systemctl", "cat", "vigo.service", "vigo.timer").stdout
    assert "ProtectSystem=strict" in unit and "OnUnitInactiveSec=15s" in unit, unit
    logins = _accepted(sshd)

    # A push: a timer run under the unit fetches it over SSH and applies it.
    whoami = h.repo.work / "stacks/whoami/docker-compose.yml"
    pushed = m.uptime()
    whoami.write_text(whoami.read_text().replace(TAG_A, TAG_B))
    h.repo.commit("promote whoami")
    run = m.next_run(pushed, 120, saying="whoami: updated")
    assert run.result == "success", _text(run)
    assert any(msg.startswith("whoami: updated") for _, msg in run.lines), _text(run)
    assert image_of(h, "whoami") == f"{APP_REPOSITORY}:{TAG_B}"
    assert _accepted(sshd) > logins, sshd.log.read_text()[-2000:]

    # The server is re-keyed: the pinned key is wrong. The unit's run fails with exit 3 and
    # the offered fingerprint; the running containers stay.
    sshd.rekey()
    whoami.write_text(whoami.read_text().replace(TAG_B, TAG_A))
    h.repo.commit("back to A: not applied while the host key is refused")
    bad = m.next_run(m.uptime(), 90)
    assert bad.result == "exit-code", _text(bad)
    status = m.exec("systemctl", "show", "vigo.service", "-p", "ExecMainStatus").stdout
    assert "ExecMainStatus=3" in status, status
    line = _host_key_line(bad)
    assert line[0] <= ERR, line
    assert f"the SSH host key of [{GATEWAY}]:{sshd.port} CHANGED" in line[1], line
    assert f"the server offers ED25519 key {sshd.fingerprint()}" in line[1], line
    journal = m.exec("journalctl", "-u", "vigo", "--no-pager").stdout
    assert sshd.fingerprint() in journal
    assert image_of(h, "whoami") == f"{APP_REPOSITORY}:{TAG_B}"

    # No key pinned for the server at all (an empty file): the offered fingerprint comes from
    # ssh-keyscan, run under the unit too.
    known.write_text("")
    unknown = m.next_run(m.uptime(), 90)
    assert unknown.result == "exit-code", _text(unknown)
    line = _host_key_line(unknown)
    assert f"the SSH host key of [{GATEWAY}]:{sshd.port} is not in {known}" in line[1], line
    assert f"the server offers ED25519 key {sshd.fingerprint()}" in line[1], line
    assert f"--host-key-fingerprint {sshd.fingerprint()}" in line[1], line
    assert image_of(h, "whoami") == f"{APP_REPOSITORY}:{TAG_B}"

    # Pinned again: the next run applies what was pushed meanwhile.
    pinned = m.uptime()
    sshd.known_hosts(known)
    fixed = m.next_run(pinned, 90, saying="whoami: updated")
    assert fixed.result == "success", _text(fixed)
    assert any(msg.startswith("whoami: updated") for _, msg in fixed.lines), _text(fixed)
    assert image_of(h, "whoami") == f"{APP_REPOSITORY}:{TAG_A}"

    # ssh wrote nothing under root's ~/.ssh (Debian's openssh-client leaves it empty), and the
    # pinned file was never rewritten.
    assert m.exec("find", "/root/.ssh", "-mindepth", "1").stdout == ""
    assert known.read_text().count("\n") == 1
    assert known.stat().st_mode & 0o777 == 0o644
