"""Faults survived, end to end: the real engine, compose, a git remote, sops and age. After each
fault vigo says one clear line (never a traceback), and the next run converges without losing
anything that was running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Host
from tests.support import light
from tests.support.engines import load_images
from tests.support.infra import GIT_ID, sh
from tests.support.poll import wait_for


def no_traceback(out: str) -> None:
    assert "Traceback" not in out, out


def lines(text: str, start: str) -> list[str]:
    return [x for x in text.splitlines() if x.startswith(start)]


def ifindex(interface: str) -> str | None:
    try:
        return Path(f"/sys/class/net/{interface}/ifindex").read_text().strip()
    except OSError:
        return None


def start_apply(host: Host, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`vigo apply` in the background."""
    return subprocess.Popen([sys.executable, "-m", "vigo", "--config", str(host.config), "apply"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=env)


# -- (a) the Docker engine stopped in the middle of a run -----------------------------------------

class PrivateEngine:
    """A dockerd of this test's own (socket, data-root, exec-root, pidfile, bridge), started and
    stopped by the test by its pid. Stopping the shared engine instead would stop every other
    test's containers on this machine, and end a process this test did not start; this one shows
    vigo the same thing (its engine's API gone mid-gate, its containers stopped, then back).
    Same isolation as tests/support/engines.py (no iptables, its own bridge, its own address
    pool); unlike those engines it is restarted on the same data-root, WITHOUT
    --default-address-pool: moby 20.10 deletes the host's docker0 when it restarts with address
    pools over a data-root that holds a "bridge" network (daemon_unix.go configureNetworking)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vigo-flt-", dir="/tmp"))  # short: socket path
        self.bridge = "vf" + self.root.name.rsplit("-", 1)[-1][:8].lower()
        self.pool = f"10.{250 + os.getpid() % 5}.0.0/16"
        self.proc: subprocess.Popen[bytes] | None = None
        sh("ip", "link", "add", "name", self.bridge, "type", "bridge")

    @property
    def url(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.url}

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(["docker", *args], env=self.env(), capture_output=True, text=True,
                             check=False, stdin=subprocess.DEVNULL, timeout=120)
        if check and res.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {res.stdout}{res.stderr}")
        return res

    def start(self, pools: bool) -> None:
        (self.root / "daemon.json").write_text("{}\n")  # never /etc/docker/daemon.json
        argv = ["dockerd", "--config-file", str(self.root / "daemon.json"),
                f"--bridge={self.bridge}", "--data-root", str(self.root / "data"),
                "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "pid"),
                "-H", self.url, "--iptables=false", "--ip6tables=false", "--ip-masq=false"]
        if pools:
            argv += ["--default-address-pool", f"base={self.pool},size=24"]
        with open(self.root / "dockerd.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        proc = self.proc
        wait_for(lambda: self.docker("version", check=False).returncode == 0, 30, 0.1,
                 "the private engine to answer",
                 abort=lambda: proc.poll() is not None and f"dockerd exited {proc.poll()}",
                 detail=lambda: (self.root / "dockerd.log").read_text()[-2000:])

    def stop(self) -> None:
        """SIGTERM to the dockerd this test started, and wait until it has exited."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
                self._kill_containerd()

    def _kill_containerd(self) -> None:
        """The containerd a killed dockerd started outlives it: stop it by its pid, once its
        command line shows it is this engine's."""
        try:
            pid = int((self.root / "exec/containerd/containerd.pid").read_text().strip())
            if str(self.root) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(
                    errors="replace"):
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", "-v", *ids, check=False)
            self.docker("network", "prune", "-f", check=False)
        self.stop()
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for point in sorted((m for m in mounts if m.startswith(f"{self.root}/")), key=len,
                            reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)


@pytest.fixture
def private_engine() -> Iterator[PrivateEngine]:
    """(Not `engine`: that is conftest's session fixture, which checks the shared engine.)"""
    docker0 = ifindex("docker0")
    eng = PrivateEngine()
    try:
        eng.start(pools=True)
        load_images([eng], [f"{light.IMAGE}:{light.TAG}"])  # type: ignore[list-item]
        yield eng
    finally:
        eng.close()
    assert ifindex("docker0") == docker0, "the shared engine's docker0 was deleted or replaced"


def test_engine_stopped_during_the_health_gate(host: Host,
                                               private_engine: PrivateEngine) -> None:
    engine = private_engine
    def apply(expect: int = 0) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([sys.executable, "-m", "vigo", "--config", str(host.config),
                              "apply"], env=engine.env(), capture_output=True, text=True,
                             timeout=300, check=False, stdin=subprocess.DEVNULL)
        assert res.returncode == expect, res.stdout + res.stderr
        return res

    def status(stack: str) -> list[str]:
        return engine.docker("ps", "-a", "--filter", f"label=io.vigo.stack={stack}",
                             "--format", "{{.Status}}").stdout.split("\n")[:-1]

    light.seed(host, "steady")
    apply()
    light.add(host, "slow", extra=light.SLOW)
    host.repo.commit("a stack whose health gate takes 4 s")
    run = start_apply(host, engine.env())
    wait_for(lambda: status("slow"), 60, 0.2, "slow's container to start its health gate",
             ok=lambda seen: any("health: starting" in s for s in seen))
    time.sleep(0.5)  # inside the gate: compose up has returned
    engine.stop()
    out, err = run.communicate(timeout=120)
    assert run.returncode == 1, out + err
    no_traceback(out + err)
    found = lines(out, "slow: ")
    assert len(found) == 1, out + err
    slow = found[0]
    assert slow.startswith("slow: failed (the Docker engine does not answer: Cannot connect to "
                           "the Docker daemon"), slow
    assert "; the next run tries again" in slow

    engine.start(pools=False)  # the engine comes back; its containers were stopped with it
    res = apply()
    # created by the interrupted run, never recorded: updated now, not held
    assert lines(res.stdout, "slow: ") == ["slow: updated (no record of the last apply)"]
    assert "steady: updated" in res.stdout and "is exited" in res.stdout
    assert [s.split(" (")[-1] for s in status("slow")] == ["healthy)"]
    assert [s.split(" ")[0] for s in status("steady")] == ["Up"]
    assert "nothing to do" in apply().stdout


# -- (b) the secrets or the state folder full ------------------------------------------------------

@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, unmounted after the test."""
    point = tmp_path / "tiny"
    point.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(point))
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def fill(folder: Path) -> Path:
    """Write a file until the file system is full; returns it."""
    filler = folder / "filler"
    try:
        with open(filler, "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
    except OSError:
        pass
    return filler


def test_secrets_folder_full_fails_only_the_stack_whose_env_file_cannot_be_written(
        host: Host, tiny_tmpfs: Path) -> None:
    host.config.write_text(host.config.read_text().replace(str(host.secrets), str(tiny_tmpfs)))
    light.add(host, "alpha")
    light.add(host, "beta")
    light.add(host, "big", secrets={"BLOB": "b" * 100_000})  # ~100 KiB decrypted: no room
    host.repo.commit("a stack with a huge secret")
    res = host.apply(expect=1)
    no_traceback(res.stdout + res.stderr)
    assert lines(res.stdout, "big: ") == [
        f"big: failed (env/big.env: cannot write {tiny_tmpfs}/env/big.env: No space left on "
        "device)"]
    assert "alpha: created" in res.stdout and "beta: created" in res.stdout
    assert host.containers("big") == []
    assert sorted(p.name for p in (tiny_tmpfs / "env").iterdir()) == ["alpha.env", "beta.env"]
    ids = {c["Id"] for c in host.containers()}
    sh("mount", "-o", "remount,size=1m", str(tiny_tmpfs))  # room again
    res = host.apply()
    assert lines(res.stdout, "big: ")[0].startswith("big: created")
    assert ids < {c["Id"] for c in host.containers()}  # alpha and beta untouched


def test_state_folder_full_keeps_the_previous_state_file(host: Host, tiny_tmpfs: Path) -> None:
    host.config.write_text(host.config.read_text().replace(str(host.state), str(tiny_tmpfs)))
    light.seed(host, "alpha", "beta")
    host.apply()
    state_file = tiny_tmpfs / "state.json"
    old = state_file.read_bytes()
    ids = {c["Name"]: c["Id"] for c in host.containers()}
    filler = fill(tiny_tmpfs)
    host.repo.write("stacks/alpha/docker-compose.yml", light.compose("alpha", "sha-5d6e7f8"))
    host.repo.commit("promote alpha")
    res = host.vigo("apply")
    assert res.returncode == 1, res.stdout + res.stderr
    no_traceback(res.stdout + res.stderr)
    override = tiny_tmpfs / "overrides" / f"{host.prefix}alpha.json"
    assert lines(res.stdout, "alpha: ") == [
        f"alpha: failed (cannot write {override}: No space left on device; the running "
        "containers were left as they are)"]
    assert lines(res.stdout, "state: ") == [
        f"state: cannot save {state_file}: No space left on device; the previous state file is "
        "kept, the next run starts from it"]
    assert state_file.read_bytes() == old  # atomic writes: never half a file
    assert {c["Name"]: c["Id"] for c in host.containers()} == ids
    assert not [p for p in tiny_tmpfs.iterdir() if p.name.endswith(".tmp")]
    filler.unlink()  # room again
    res = host.apply()
    assert lines(res.stdout, "alpha: ") == [
        "alpha: updated (image sha-1a2b3c4 -> sha-5d6e7f8)"]
    assert json.loads(state_file.read_text())["exit_code"] == 0


# -- (d), (e), (f) on one converged host, each leaving it converged ---------------------------

@pytest.fixture(scope="module")
def steady(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    h = Host(tmp_path_factory.mktemp("steady"))
    try:
        light.seed(h, "alpha", "beta")
        h.apply()
        yield h
    finally:
        h.cleanup()


def running(host: Host) -> dict[str, str]:
    """alpha's and beta's running containers, by name."""
    found = {c["Name"]: c["Id"] for c in host.containers()
             if c["State"]["Running"] and c["Config"]["Labels"]["io.vigo.stack"] != "slow"}
    assert len(found) == 2, found
    return found


@pytest.mark.parametrize("damage", ["garbage", "empty", "deleted"])
def test_corrupt_or_missing_state_file(steady: Host, damage: str) -> None:
    host = steady
    host.apply()
    ids = running(host)
    state_file = host.state / "state.json"
    if damage == "garbage":
        state_file.write_bytes(b'{"version": 1, "stacks": {\x00\xff')
    elif damage == "empty":
        state_file.write_bytes(b"")
    else:
        state_file.unlink()
    res = host.apply()
    warnings = lines(res.stdout, "warning: ")
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {state_file} is "), res.stdout
    assert warnings[0].endswith("; starting from what Docker runs")
    assert running(host) == ids  # no container recreated
    for name in ("alpha", "beta"):
        assert lines(res.stdout, f"{name}: ") == [
            f"{name}: unchanged (no record of the last apply; no container needed a change)"]
    assert json.loads(state_file.read_text())["exit_code"] == 0
    res = host.apply()
    assert "nothing to do" in res.stdout and "warning" not in res.stdout


def flip_alpha(host: Host) -> None:
    """A commit that changes alpha's image tag."""
    path = host.repo.work / "stacks/alpha/docker-compose.yml"
    tag = light.TAG if "sha-5d6e7f8" in path.read_text() else "sha-5d6e7f8"
    host.repo.write("stacks/alpha/docker-compose.yml", light.compose("alpha", tag))


def damage_head_commit(checkout: Path, how: str) -> None:
    """Delete or empty the file that holds the checked-out commit (its loose object, or the
    packs after a fresh clone)."""
    head = sh("git", "-C", str(checkout), "rev-parse", "HEAD").stdout.strip()
    loose = checkout / ".git/objects" / head[:2] / head[2:]
    targets = [loose] if loose.is_file() else list(checkout.glob(".git/objects/pack/*.pack"))
    assert targets
    for path in targets:
        path.chmod(0o600)
        if how == "delete":
            path.unlink()
        else:
            path.write_bytes(b"")


@pytest.mark.parametrize("damage", ["empty object", "index.lock"])
def test_corrupt_checkout_is_replaced_by_a_fresh_clone(steady: Host, damage: str) -> None:
    host = steady
    host.apply()
    ids = running(host)
    git = host.checkout / ".git"
    if damage == "index.lock":  # left by a git killed mid-write
        (git / "index.lock").write_text("")
    else:  # what a power loss leaves: an object file of 0 bytes
        damage_head_commit(host.checkout, "empty")
    flip_alpha(host)
    rev = host.repo.commit(f"alpha changes ({damage})")
    res = host.apply()
    warnings = lines(res.stdout, "warning: ")
    assert len(warnings) == 1, res.stdout
    assert warnings[0].startswith(f"warning: {host.checkout} was broken (")
    assert warnings[0].endswith("); replaced it with a fresh clone")
    assert lines(res.stdout, "alpha: ")[0].startswith("alpha: updated (image ")
    assert sh("git", "-C", str(host.checkout), "rev-parse", "HEAD").stdout.strip() == rev
    assert not (git / "index.lock").exists()
    assert not list(host.checkout.parent.glob(f".{host.checkout.name}.*"))  # no leftovers
    after = running(host)
    assert [n for n in after if "beta" in n] == [n for n in ids if "beta" in n]
    assert {after[n] for n in after if "beta" in n} == {ids[n] for n in ids if "beta" in n}
    assert "nothing to do" in host.apply().stdout


def test_deleted_object_is_fetched_again_by_git(steady: Host) -> None:
    """A deleted object file is no corruption git cannot heal: the next fetch wants the commits
    it lacks and gets them again; no fresh clone is needed."""
    host = steady
    host.apply()
    ids = running(host)
    damage_head_commit(host.checkout, "delete")
    flip_alpha(host)
    rev = host.repo.commit("alpha changes (deleted object)")
    res = host.apply()
    assert lines(res.stdout, "warning: ") == [], res.stdout
    assert lines(res.stdout, "alpha: ")[0].startswith("alpha: updated (image ")
    assert sh("git", "-C", str(host.checkout), "rev-parse", "HEAD").stdout.strip() == rev
    assert sh("git", "-C", str(host.checkout), "fsck", "--connectivity-only", "--no-dangling",
              check=False).returncode == 0
    assert {v for k, v in running(host).items() if "beta" in k} == {
        v for k, v in ids.items() if "beta" in k}
    assert "nothing to do" in host.apply().stdout


def test_force_pushed_history_is_followed_without_signed_commits(steady: Host) -> None:
    host = steady
    host.apply()
    ids = running(host)
    old = host.repo.head()
    work = str(host.repo.work)
    sh("git", "-C", work, "checkout", "-q", "--orphan", "rewritten")
    flip_alpha(host)
    sh("git", "-C", work, "add", "-A")
    sh("git", *GIT_ID, "-C", work, "commit", "-qm", "a different history")
    sh("git", "-C", work, "branch", "-qM", "rewritten", "main")
    sh("git", "-C", work, "push", "-qf", "origin", "main")
    new = host.repo.head()
    assert sh("git", "-C", work, "merge-base", "--is-ancestor", old, new,
              check=False).returncode == 1
    res = host.apply()
    assert lines(res.stdout, "alpha: ")[0].startswith("alpha: updated (image ")
    assert "beta" not in res.stdout  # unchanged, not even a compose call
    assert sh("git", "-C", str(host.checkout), "rev-parse", "HEAD").stdout.strip() == new
    after = running(host)
    assert {v for k, v in after.items() if "beta" in k} == {
        v for k, v in ids.items() if "beta" in k}
    assert json.loads((host.state / "state.json").read_text())["revision_applied"] == new
    assert "nothing to do" in host.apply().stdout


# -- (c) vigo killed with SIGKILL mid-apply (last: it leaves a third stack on the host) ---------

def test_sigkill_during_the_health_gate_then_the_next_run_converges(steady: Host) -> None:
    host = steady
    host.apply()
    ids = running(host)
    state_file = host.state / "state.json"
    light.add(host, "slow", extra=light.SLOW)
    host.repo.commit("a stack whose health gate takes 4 s")

    def slow_status() -> list[str]:
        return sh("docker", "ps", "-a", "--filter", f"label=io.vigo.instance={host.prefix}",
                  "--filter", "label=io.vigo.stack=slow", "--format", "{{.Status}}"
                  ).stdout.split("\n")[:-1]

    run = start_apply(host)
    wait_for(slow_status, 60, 0.2, "slow's health gate",
             ok=lambda seen: any("health: starting" in s for s in seen))
    time.sleep(0.5)
    run.send_signal(signal.SIGKILL)  # the process this test started, by its pid
    run.wait(timeout=30)
    assert run.returncode == -signal.SIGKILL
    json.loads(state_file.read_text())  # the old file or the new one, never half of one
    slow = {c["Name"]: c["Id"] for c in host.containers("slow")}
    res = host.apply()  # the kernel released the lock: not 75
    assert lines(res.stdout, "slow: ") == [
        "slow: unchanged (no record of the last apply; no container needed a change)"]
    assert {c["Name"]: c["Id"] for c in host.containers("slow")} == slow  # not recreated
    assert running(host) == ids
    assert all(c["State"]["Running"] for c in host.containers())
    assert "nothing to do" in host.apply().stdout
