"""Extra Docker engines on this machine, one per simulated host of a fleet test.

Each engine is a real `dockerd` with its own settings file, data-root, exec-root, pidfile and unix
socket. No system containerd listens at /run/containerd/containerd.sock here, so each dockerd
starts its own managed containerd under its exec-root (the main engine does the same under
/var/run/docker). It never clashes with the main engine:

- `--bridge=<its own bridge>`: a bridge interface this module creates (and deletes) per engine,
  which dockerd uses as its default bridge; docker0 stays the main engine's;
- `--iptables=false --ip6tables=false --ip-masq=false`: it never touches the iptables chains the
  main engine owns (DOCKER, DOCKER-USER, DOCKER-ISOLATION-*);
- `--default-address-pool`: its own /16 of 10.0.0.0/8 for its bridge and the networks compose
  creates, so no route overlaps another engine's.

Two ways an extra engine DELETES the host's docker0 (moby 20.10 daemon_unix.go, seen here: the
main engine then failed "could not find bridge docker0"): `--bridge=none` (removeDefaultBridge-
Interface at every start), and a restart on a data-root that already holds a "bridge" network
while default address pools are set. Hence a bridge of its own, and a fresh data-root for every
start (engines are never restarted).

Measured here (Debian 12, engine 20.10.24): an engine answers about 0.3 s after it starts and
stops in about 2.5 s. Ports published on 127.0.0.1 work (docker-proxy, the userland proxy, needs
no iptables). What does NOT work without iptables: traffic between two containers across a
bridge, because the main engine sets the FORWARD policy to DROP and br_netfilter sends bridged
frames through it (measured: connection timed out). Fleet tests therefore run one container per
stack, reached from the host, and no Traefik in front.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


@dataclass
class Engine:
    name: str
    root: Path  # everything of this engine lives here
    proc: subprocess.Popen[bytes]
    pool: str
    bridge: str  # the default bridge interface, made for it (never docker0)

    @property
    def sock(self) -> Path:
        return self.root / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    def env(self) -> dict[str, str]:
        """The caller's environment pointed at this engine (vigo passes DOCKER_HOST on)."""
        return {**os.environ, "DOCKER_HOST": self.url}

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(["docker", *args], env=self.env(), capture_output=True, text=True,
                             check=False, stdin=subprocess.DEVNULL, timeout=120)
        if check and res.returncode != 0:
            raise AssertionError(f"[{self.name}] docker {' '.join(args)} exited "
                                 f"{res.returncode}:\n{res.stdout}{res.stderr}")
        return res

    def answers(self) -> bool:
        return self.docker("version", "--format", "{{.Server.Version}}", check=False
                           ).returncode == 0

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _pools(count: int) -> list[str]:
    """Distinct 10.X.0.0/16 pools, random so that two test runs at once rarely meet (and
    dockerd skips a pool whose routes overlap an existing one)."""
    return [f"10.{x}.0.0/16" for x in random.sample(range(64, 250), count)]


def _start(root: Path, name: str, pool: str, bridge: str) -> Engine:
    home = root / name
    home.mkdir(parents=True)
    (home / "daemon.json").write_text("{}\n")  # never /etc/docker/daemon.json
    subprocess.run(["ip", "link", "add", "name", bridge, "type", "bridge"], check=True,
                   capture_output=True)
    argv = ["dockerd", "--config-file", str(home / "daemon.json"), f"--bridge={bridge}",
            "--data-root", str(home / "data"), "--exec-root", str(home / "exec"),
            "--pidfile", str(home / "dockerd.pid"), "-H", f"unix://{home / 'docker.sock'}",
            "--iptables=false", "--ip6tables=false", "--ip-masq=false",
            "--default-address-pool", f"base={pool},size=24"]
    with open(home / "dockerd.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return Engine(name, home, proc, pool, bridge)


def _wait(engine: Engine, deadline: float) -> None:
    while not engine.answers():
        if engine.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"engine {engine.name} did not start (dockerd exit "
                               f"{engine.proc.poll()}); tail of {engine.log}:\n{engine.tail()}")
        time.sleep(0.1)


@contextmanager
def engines_running(names: Sequence[str]) -> Iterator[list[Engine]]:
    """Start one engine per name (in parallel), yield them, then stop them and remove every
    file they wrote. The root is short on purpose: unix socket paths are limited to 107 bytes."""
    root = Path(tempfile.mkdtemp(prefix="vigo-eng-", dir="/tmp"))
    tag = root.name.rsplit("-", 1)[-1][:6].lower()
    bridges = [f"vg{tag}{i}" for i in range(len(names))]  # at most 15 characters
    engines: list[Engine] = []
    try:
        for name, pool, bridge in zip(names, _pools(len(names)), bridges, strict=True):
            engines.append(_start(root, name, pool, bridge))
        deadline = time.monotonic() + START_TIMEOUT
        for engine in engines:
            _wait(engine, deadline)
        yield engines
    finally:
        stop(engines)
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)
        for bridge in bridges:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)


def load_images(engines: Sequence[Engine], refs: Sequence[str]) -> None:
    """Copy images from the main engine into each engine: `docker save` once, `load` each."""
    with tempfile.TemporaryDirectory(prefix="vigo-images-") as tmp:
        archive = Path(tmp) / "images.tar"
        main = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
        subprocess.run(["docker", "save", "-o", str(archive), *refs], env=main, check=True,
                       capture_output=True)
        with ThreadPoolExecutor(len(engines) or 1) as pool:
            list(pool.map(lambda e: e.docker("load", "-q", "-i", str(archive)), engines))


def stop(engines: Sequence[Engine]) -> None:
    """Remove the containers and networks (dockerd leaves bridges behind otherwise), stop every
    dockerd (SIGTERM; it stops its containerd), SIGKILL what does not stop in time."""
    alive = [e for e in engines if e.proc.poll() is None]
    with ThreadPoolExecutor(len(alive) or 1) as pool:
        list(pool.map(_empty, alive))
    for engine in alive:
        engine.proc.send_signal(signal.SIGTERM)
    for engine in alive:
        try:
            engine.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            engine.proc.kill()
            engine.proc.wait(timeout=STOP_TIMEOUT)
            _kill_containerd(engine)


def _empty(engine: Engine) -> None:
    ids = engine.docker("ps", "-aq", check=False).stdout.split()
    if ids:
        engine.docker("rm", "-f", "-v", *ids, check=False)
    engine.docker("network", "prune", "-f", check=False)


def _kill_containerd(engine: Engine) -> None:
    """The managed containerd outlives a dockerd that had to be killed: stop it by its pid,
    once its command line shows it is this engine's."""
    try:
        pid = int((engine.root / "exec" / "containerd" / "containerd.pid").read_text().strip())
        if str(engine.root) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def _unmount_under(root: Path) -> None:
    """Anything an engine left mounted under root (it unmounts all when it stops cleanly)."""
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    for point in sorted((m for m in mounts if m.startswith(f"{root}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
