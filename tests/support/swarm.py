"""Throw-away Docker Swarms on this one machine: 1 or 3 dockerd's, each in its own network
namespace, cabled to a bridge in a "switch" namespace of their own.

Node i is a real `dockerd` (with its own managed containerd) whose network namespace is held by
a sleeping holder process (no /run/netns name that someone else could unmount), whose mount
namespace is private (/sys and the cgroup v1 hierarchies mounted again: without them dockerd
dies, "Devices cgroup isn't mounted"), whose UTS namespace gives it its own hostname (the swarm
node name), and whose data-root, exec-root, pidfile, socket and cgroup parent are its own. Its
eth0 (10.99.0.1<i>/24) is a veth whose other end lives on the bridge of the switch namespace:
neither the host's network namespace, its iptables, docker0 nor the shared engine is touched
(the shared engine is only read: `docker save` of the images the tests need, since nodes cannot
pull). Everything is named with a random id, so two runs never meet.

Every process a swarm starts is stopped by pid: dockerd and containerd (by their pidfiles and
the node's network namespace), the containers' processes (by the node's cgroup), the holders
last; then the data goes. `start()` tears down what it started when a node does not come up,
and `Swarm.stop()` is safe to call twice.

No IPVS in this kernel: the routing mesh and service VIPs do not work; tests reach tasks with
`mode: host` ports, `endpoint_mode: dnsrr`, or Traefik's Swarm provider (task IPs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

NET = "10.99.0"
UP_TIMEOUT = 60.0
CGROUPS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")
IMAGE_CACHE = Path(tempfile.gettempdir()) / "vigo-swarm-images"

# Runs inside the node's network namespace, in a new mount and UTS namespace.
_NODE_SH = """set -e
hostname "$2"
umount -l /sys; mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
for c in {}; do mkdir -p /sys/fs/cgroup/$c; mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c; done
mkdir -p /sys/fs/cgroup/systemd /sys/fs/cgroup/unified
mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified || true
exec dockerd --config-file "$1"
""".format(" ".join(CGROUPS))


class SwarmError(RuntimeError):
    """A swarm could not be brought up (the test fails, it never skips)."""


def run(*argv: str, check: bool = True, timeout: float = 120,
        input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=input is None, check=False,
                         timeout=timeout, input=input, stdin=None if input else subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise SwarmError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr!s}")
    return res


def wait_for(what: str, probe: Callable[[], bool], timeout: float, every: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise SwarmError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def _holder(*nsenter: str) -> subprocess.Popen[bytes]:
    """A sleeping process whose only job is to keep a new network namespace alive."""
    return subprocess.Popen(["unshare", "--net", *nsenter, "sleep", "infinity"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _netns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


def _kill(pids: Sequence[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@dataclass
class Node:
    index: int
    swarm_id: str
    root: Path
    holder: subprocess.Popen[bytes]
    dockerd: subprocess.Popen[bytes] | None = None
    stopped: bool = False

    @property
    def name(self) -> str:
        return f"n{self.index}-{self.swarm_id}"

    @property
    def ip(self) -> str:
        return f"{NET}.1{self.index}"

    @property
    def sock(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    @property
    def cgroup(self) -> str:
        return f"vigo-swarm-{self.swarm_id}-n{self.index}"

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               ) -> subprocess.CompletedProcess[str]:
        return run("docker", "-H", self.host, *args, check=check, timeout=timeout)

    def nx(self, *argv: str, check: bool = False, timeout: float = 30
           ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in this node's network namespace (curl to a task, to a host port)."""
        return run("nsenter", "-t", str(self.holder.pid), "-n", "--", *argv, check=check,
                   timeout=timeout)

    def start(self) -> None:
        for sub in ("root", "x"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        config = self.root / "daemon.json"
        config.write_text(json.dumps({
            "data-root": str(self.root / "root"), "exec-root": str(self.root / "x"),
            "pidfile": str(self.root / "docker.pid"), "hosts": [self.host],
            "deprecated-key-path": str(self.root / "key.json"),
            "cgroup-parent": f"/{self.cgroup}", "storage-driver": "overlay2",
            "log-level": "warn", "shutdown-timeout": 3}))
        log = (self.root / "dockerd.log").open("ab")
        self.dockerd = subprocess.Popen(
            ["nsenter", "-t", str(self.holder.pid), "-n", "--", "env",
             "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1", "unshare", "--mount", "--uts",
             "--propagation", "slave", "sh", "-c", _NODE_SH, "sh", str(config), self.name],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()

    def wait_up(self) -> None:
        def answers() -> bool:
            if self.dockerd is not None and self.dockerd.poll() is not None:
                tail = (self.root / "dockerd.log").read_text(errors="replace")[-2000:]
                raise SwarmError(f"dockerd of {self.name} exited {self.dockerd.returncode}:\n"
                                 f"{tail}")
            return self.docker("version", check=False, timeout=10).returncode == 0
        wait_for(f"dockerd of {self.name}", answers, UP_TIMEOUT, every=0.2)

    def _members(self) -> list[int]:
        """Every process of this node but its holder: in its network namespace (dockerd,
        containerd, the shims) or in its cgroup (the containers' processes)."""
        mine, pids = _netns(self.holder.pid), set()
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.holder.pid and mine and _netns(
                    int(entry)) == mine:
                pids.add(int(entry))
        base = Path("/sys/fs/cgroup/pids") / self.cgroup
        if base.is_dir():
            for procs in base.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in procs.read_text().split())
        return sorted(pids)

    def kill(self) -> None:
        """The machine dies: every process of the node, at once (the holder stays, so the node
        can be asked no more, but its namespace is cleaned up by `stop`)."""
        for _ in range(20):
            members = self._members()
            if not members:
                break
            _kill(members)
            time.sleep(0.2)
        if self.dockerd is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.dockerd.wait(5)
        self.stopped = True

    def stop(self, graceful: bool = True) -> None:
        """Stop dockerd (TERM, then KILL; only KILL unless `graceful`), then whatever of the
        node is left, then the holder, then its cgroups."""
        pid = 0
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.root / "docker.pid").read_text().strip())
        if pid and not self.stopped and graceful:
            _kill([pid], signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and \
                    _netns(pid) == _netns(self.holder.pid):
                time.sleep(0.2)
        self.kill()
        self.holder.kill()
        self.holder.wait(5)
        for c in (*CGROUPS, "systemd"):
            base = Path("/sys/fs/cgroup") / c / self.cgroup
            if base.is_dir():
                for d in sorted((p for p in base.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        d.rmdir()
                with contextlib.suppress(OSError):
                    base.rmdir()


@dataclass
class Swarm:
    id: str
    root: Path
    switch: subprocess.Popen[bytes]
    nodes: list[Node] = field(default_factory=list)

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    def leader(self) -> Node:
        """The node that is the raft leader now (asked of every live manager)."""
        for node in self.nodes:
            if node.stopped:
                continue
            try:  # during an election a manager may not answer for a while
                out = node.docker("node", "ls", "--format", "{{.Self}} {{.ManagerStatus}}",
                                  check=False, timeout=5).stdout
            except subprocess.TimeoutExpired:
                continue
            if any(line.split()[:2] == ["true", "Leader"] for line in out.splitlines()):
                return node
        raise SwarmError("no node of the swarm is the leader")

    def new_leader(self, old: Node, timeout: float = 90) -> Node:
        """The manager elected after `old` stopped (waits for the election, and until the
        swarm marks `old` down, as a timer run after it would find it)."""
        def elected() -> bool:
            try:
                return self.leader() is not old
            except SwarmError:  # no leader yet
                return False
        wait_for("a new leader", elected, timeout, every=1)
        leader = self.leader()

        def down() -> bool:  # what a timer run a minute later meets: the swarm knows it is gone
            out = leader.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}}",
                                check=False, timeout=10).stdout
            return f"{old.name} Down" in out
        wait_for(f"{old.name} marked down", down, timeout, every=1)
        return leader

    def ready(self, node: Node) -> int:
        out = node.docker("node", "ls", "--format", "{{.Status}}", check=False).stdout
        return out.split().count("Ready")

    def stop(self) -> None:
        with ThreadPoolExecutor(max_workers=len(self.nodes) or 1) as pool:
            list(pool.map(lambda n: n.stop(graceful=False), self.nodes))  # data goes too
        if self.switch.poll() is None:
            self.switch.kill()
            self.switch.wait(5)
        if any(str(self.root) in line for line in Path("/proc/mounts").read_text().splitlines()):
            raise SwarmError(f"mounts under {self.root} remain: its data was not deleted")
        shutil.rmtree(self.root, ignore_errors=True)


def images_tar(images: Sequence[str]) -> Path:
    """One `docker save` of `images` from the shared engine (read-only), kept for the session
    (named by the images' ids, so a rebuilt tag makes a new file)."""
    ids = run("docker", "image", "inspect", "--format", "{{.Id}}", *images).stdout.split()
    key = hashlib.sha256(" ".join([*images, *ids]).encode()).hexdigest()[:16]
    IMAGE_CACHE.mkdir(mode=0o700, exist_ok=True)
    tar = IMAGE_CACHE / f"{key}.tar"
    if not tar.is_file():
        part = tar.with_suffix(f".{os.getpid()}.part")
        run("docker", "save", "-o", str(part), *images, timeout=300)
        part.rename(tar)
    return tar


def start(n: int, images: Sequence[str], managers: int = 1, root: Path | None = None) -> Swarm:
    """A swarm of `n` Ready nodes (node 1 made it; the first `managers` are managers), every
    node holding `images`. Tears down what it started if anything fails."""
    sid = uuid.uuid4().hex[:6]
    root = Path(tempfile.mkdtemp(prefix=f"vigo-swarm-{sid}-", dir=root))
    swarm = Swarm(sid, root, _holder())
    try:
        tar = images_tar(images)
        sw = str(swarm.switch.pid)

        def in_switch(*argv: str) -> None:
            run("nsenter", "-t", sw, "-n", "--", *argv)
        wait_for("the switch namespace", lambda: _netns(swarm.switch.pid) != _netns(
            os.getpid()) and bool(_netns(swarm.switch.pid)), 10, every=0.05)
        in_switch("ip", "link", "set", "lo", "up")
        in_switch("ip", "link", "add", "br0", "type", "bridge")
        in_switch("ip", "link", "set", "br0", "up")
        for i in range(1, n + 1):
            node = Node(i, sid, root / f"n{i}", _holder())
            swarm.nodes.append(node)
            wait_for(f"the namespace of {node.name}", lambda node=node: _netns(
                node.holder.pid) not in ("", _netns(os.getpid())), 10, every=0.05)
            in_switch("ip", "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0",
                      "netns", str(node.holder.pid))
            in_switch("ip", "link", "set", f"v{i}", "master", "br0", "up")
            node.nx("ip", "link", "set", "lo", "up", check=True)
            node.nx("ip", "addr", "add", f"{node.ip}/24", "dev", "eth0", check=True)
            node.nx("ip", "link", "set", "eth0", "up", check=True)
            node.start()
        with ThreadPoolExecutor(max_workers=n) as pool:
            list(pool.map(lambda node: node.wait_up(), swarm.nodes))
            data = tar.read_bytes()
            list(pool.map(lambda node: run("docker", "-H", node.host, "load", "-q",
                                           input=data, timeout=300), swarm.nodes))
        first = swarm.manager
        first.docker("swarm", "init", "--advertise-addr", first.ip)
        tokens = {kind: first.docker("swarm", "join-token", "-q", kind).stdout.strip()
                  for kind in ("manager", "worker")}
        for node in swarm.nodes[1:]:  # managers one by one (raft), workers after
            kind = "manager" if node.index <= managers else "worker"
            node.docker("swarm", "join", "--token", tokens[kind], "--advertise-addr", node.ip,
                        f"{first.ip}:2377")
        wait_for(f"{n} Ready nodes", lambda: swarm.ready(first) == n, UP_TIMEOUT)
    except BaseException:
        swarm.stop()
        raise
    return swarm


@contextlib.contextmanager
def running(n: int, images: Sequence[str], managers: int = 1) -> Iterator[Swarm]:
    swarm = start(n, images, managers)
    try:
        yield swarm
    finally:
        swarm.stop()
