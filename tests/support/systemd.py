"""systemd as PID 1 in a container, for tests of the real timer and of reboots.

The root is a minimal Debian 12 made with debootstrap from Debian's mirror (there is no image
registry), cached as a tarball under /var/cache/vigo-test (about 80 s on a fresh machine, then
instant). The image adds this machine's docker CLI, compose plugin and sops, vigo's one
dependency (ruamel.yaml), and a `vigo` console script that runs this checkout's src/ (mounted
read-only at /opt/vigo/src). The container gets the host's docker.sock, and one host folder
mounted at the same path inside, so that the paths vigo hands to the engine (bind sources)
mean the same on both sides. /run is a tmpfs: a restart of the container is a reboot that
empties it, the engine and its containers stay (the engine is shared: it is never restarted).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.infra import sh
from tests.support.poll import wait_for

CACHE = Path("/var/cache/vigo-test")
SRC = Path(__file__).resolve().parents[2] / "src"
MIRROR = "http://deb.debian.org/debian"
# openssh-client: git's ssh for an SSH infra repo, ssh-keygen/ssh-keyscan for bootstrap.
PACKAGES = "systemd,systemd-sysv,python3,git,ca-certificates,openssh-client"
# The cached root and its imported image are named by the package list: adding a package
# builds a new root once, and a checkout with the old list keeps using the old one.
_ROOT_ID = hashlib.sha256(PACKAGES.encode()).hexdigest()[:8]
ROOT_TAR = CACHE / f"bookworm-systemd-{_ROOT_ID}.tar"
BASE_IMAGE = f"vigo-test/systemd-root:{_ROOT_ID}"
COMPOSE_PLUGIN = Path("/usr/local/lib/docker/cli-plugins/docker-compose")


def root_tarball() -> Path:
    """The debootstrapped root, built once and kept under /var/cache."""
    if ROOT_TAR.is_file():
        return ROOT_TAR
    CACHE.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="root-", dir=CACHE))
    try:
        res = subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}",
                              "bookworm", str(root), MIRROR], capture_output=True, text=True,
                             check=False)
        if res.returncode != 0:
            raise AssertionError(f"debootstrap failed:\n{res.stdout[-3000:]}{res.stderr}")
        tmp = ROOT_TAR.with_suffix(f".{os.getpid()}.tmp")
        sh("tar", "-C", str(root), "-cf", str(tmp), ".")
        tmp.rename(ROOT_TAR)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return ROOT_TAR


def _tools() -> dict[str, Path]:
    import ruamel.yaml

    found = {"docker": shutil.which("docker"), "sops": shutil.which("sops")}
    missing = [name for name, path in found.items() if not path]
    if missing or not COMPOSE_PLUGIN.is_file():
        raise AssertionError(f"missing on this machine: {missing or COMPOSE_PLUGIN} "
                             "(run scripts/install-deps)")
    out = {name: Path(str(path)) for name, path in found.items()}
    out["docker-compose"] = COMPOSE_PLUGIN
    out["ruamel"] = Path(ruamel.yaml.__file__).parents[1]
    return out


def image() -> str:
    """The systemd image for this machine's tools; rebuilt when one of them changes."""
    tools = _tools()
    h = hashlib.sha256(f"{ROOT_TAR}:{root_tarball().stat().st_size}".encode())
    for name, path in sorted(tools.items()):
        st = path.stat()
        h.update(f"{name}:{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    tag = f"vigo-test/systemd:{h.hexdigest()[:12]}"
    if sh("docker", "image", "inspect", tag, check=False).returncode == 0:
        return tag
    if sh("docker", "image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        with open(ROOT_TAR, "rb") as f:
            res = subprocess.run(["docker", "import", "--change", "ENV container=docker",
                                  "--change", 'CMD ["/lib/systemd/systemd"]', "-", BASE_IMAGE],
                                 stdin=f, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise AssertionError(f"docker import failed: {res.stderr}")
    ctx = Path(tempfile.mkdtemp(prefix="vigo-systemd-ctx-"))
    try:
        for name in ("docker", "sops", "docker-compose"):
            shutil.copy(tools[name], ctx / name)
        shutil.copytree(tools["ruamel"], ctx / "ruamel",
                        ignore=shutil.ignore_patterns("__pycache__"))
        (ctx / "vigo").write_text(
            "#!/usr/bin/python3\n"
            "# The console script a pip install would make; src/ is this checkout's.\n"
            "import sys\n"
            'sys.path[:0] = ["/opt/vigo/src", "/opt/vigo/lib"]\n'
            "from vigo.cli.commands import entry\n"
            "sys.exit(entry())\n")
        (ctx / "Dockerfile").write_text(
            f"FROM {BASE_IMAGE}\n"
            "COPY docker /usr/bin/docker\n"
            "COPY docker-compose /usr/local/lib/docker/cli-plugins/docker-compose\n"
            "COPY sops /usr/local/bin/sops\n"
            "COPY ruamel /opt/vigo/lib/ruamel\n"
            "COPY vigo /usr/bin/vigo\n"
            "RUN chmod 755 /usr/bin/vigo /usr/bin/docker /usr/local/bin/sops "
            "/usr/local/lib/docker/cli-plugins/docker-compose"
            " && ln -sf /dev/null /etc/systemd/system/getty@tty1.service"
            " && ln -sf /dev/null /etc/systemd/system/systemd-logind.service\n"
            'CMD ["/lib/systemd/systemd"]\n')
        res = subprocess.run(["docker", "build", "-q", "--force-rm", "-t", tag, str(ctx)],
                             env={**os.environ, "DOCKER_BUILDKIT": "0"}, capture_output=True,
                             text=True, check=False)
        if res.returncode != 0:
            raise AssertionError(f"building {tag} failed:\n{res.stdout}{res.stderr}")
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return tag


@dataclass
class Run:
    """One start of vigo.service, from the journal."""

    invocation: str
    result: str  # "success", "exit-code", "timeout", ... ("" while it runs)
    lines: list[tuple[int, str]]  # (priority, message) of vigo's own lines
    started: float  # monotonic seconds (the container's clock)
    ended: float | None


class Machine:
    """A systemd container. `shared` is mounted at the same path inside."""

    def __init__(self, name: str, shared: Path) -> None:
        self.name = name
        self.shared = shared
        self.booted_at = 0.0  # CLOCK_MONOTONIC (shared with the host) at the last boot

    def start(self) -> Machine:
        # --privileged would add every capability, and this machine's bounding set lacks
        # CAP_SYS_RESOURCE; systemd needs SYS_ADMIN for the unit's mount namespace.
        sh("docker", "run", "-d", "--name", self.name, "--hostname", self.name,
           "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cap-add", "SYS_PTRACE",
           "--cap-add", "MKNOD", "--security-opt", "seccomp=unconfined",
           "--security-opt", "apparmor=unconfined", "--cgroupns=host",
           "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
           "-v", "/var/run/docker.sock:/run/docker.sock",
           "-v", f"{self.shared}:{self.shared}", "-v", f"{SRC}:/opt/vigo/src:ro",
           image())
        self.booted_at = self.uptime()
        self.wait_booted()
        return self

    def wait_booted(self) -> str:
        return wait_for(
            lambda: self.exec("systemctl", "is-system-running", check=False).stdout.strip(),
            90, 0.3, f"systemd in {self.name} to finish booting",
            ok=lambda state: state in ("running", "degraded"),
            detail=lambda: self.exec("systemctl", "--failed", check=False).stdout)

    def reboot(self, while_down: Callable[[], object] | None = None) -> None:
        """Restart the container: systemd boots again, /run (the secrets tmpfs) is empty.
        `while_down` runs while it is stopped (a push no run of the old boot can see)."""
        sh("docker", "stop", "-t", "20", self.name)
        if while_down is not None:
            while_down()
        sh("docker", "start", self.name)
        self.booted_at = self.uptime()
        self.wait_booted()

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("docker", "exec", self.name, *argv, check=check)

    def remove(self) -> None:
        sh("docker", "rm", "-f", self.name, check=False)

    def uptime(self) -> float:
        return float(self.exec("cat", "/proc/uptime").stdout.split()[0])

    def journal(self) -> list[dict[str, str]]:
        out = self.exec("journalctl", "-u", "vigo.service", "-o", "json", "--no-pager",
                        "--output-fields=MESSAGE,PRIORITY,SYSLOG_IDENTIFIER,INVOCATION_ID,"
                        "_SYSTEMD_INVOCATION_ID,JOB_RESULT,_PID", check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def runs(self) -> list[Run]:
        """The runs of vigo.service since this boot, in order (a container shares the host's
        boot id and monotonic clock: the runs of an earlier boot are left out by time)."""
        runs: dict[str, Run] = {}
        for e in self.journal():
            inv = e.get("_SYSTEMD_INVOCATION_ID") or e.get("INVOCATION_ID") or ""
            if not inv:
                continue
            mono = int(e.get("__MONOTONIC_TIMESTAMP", "0")) / 1e6
            if inv not in runs and mono < self.booted_at:
                continue
            run = runs.setdefault(inv, Run(inv, "", [], mono, None))
            msg = e.get("MESSAGE") or ""
            if not isinstance(msg, str):  # journald stores non-UTF-8 as a byte list
                msg = bytes(msg).decode(errors="replace")
            if e.get("SYSLOG_IDENTIFIER") == "vigo":
                run.lines.append((int(e.get("PRIORITY", "6")), msg))
            elif msg.startswith("Finished vigo.service"):
                run.result, run.ended = "success", mono
            elif "Failed with result" in msg:
                run.result, run.ended = msg.split("'")[1], mono
        return list(runs.values())

    def next_run(self, after: float, timeout: float, saying: str = "") -> Run:
        """The first run that started after `after` (monotonic, see uptime()), once it ended.
        With `saying`: the first run that ended after `after` with a line that starts so. Read
        `after` before the change such a run must see: a timer run may start at any moment,
        and one that started in between and saw the change leaves the next one nothing to
        do."""
        def runs() -> list[Run]:
            return [r for r in self.runs()
                    if ((r.ended is None or r.ended > after) if saying else r.started > after)]

        def pick(seen: list[Run]) -> list[Run]:
            if not saying:
                return seen[:1] if seen and seen[0].ended is not None else []
            return [r for r in seen if r.ended is not None and
                    any(msg.startswith(saying) for _, msg in r.lines)][:1]

        seen = wait_for(runs, timeout, 1, "a vigo run to start and end" + (
            f" saying {saying!r}" if saying else ""), ok=pick,
            detail=lambda: self.exec("journalctl", "-u", "vigo", "--no-pager",
                                     check=False).stdout[-4000:])
        return pick(seen)[0]

    def wait_runs(self, count: int, timeout: float) -> list[Run]:
        """Poll the journal until `count` runs have ended (since this boot)."""
        return wait_for(lambda: [r for r in self.runs() if r.ended is not None], timeout, 1,
                        f"{count} vigo runs to end", ok=lambda runs: len(runs) >= count,
                        detail=lambda: self.exec("journalctl", "-u", "vigo", "--no-pager",
                                                 check=False).stdout[-4000:]
                        + self.exec("systemctl", "list-timers", "--all", "--no-pager",
                                    check=False).stdout)


class TimerHost:
    """One vigo host inside a Machine: an age key, an infra repo with a file remote, settings
    for the unit (secrets on the /run tmpfs, a metrics file, a short run_timeout)."""

    def __init__(self, root: Path, prefix: str, run_timeout: int = 40) -> None:
        from tests.support.infra import AgeKey, InfraRepo, free_port

        self.root, self.prefix = root, prefix
        self.key = AgeKey(root / "age.txt")
        self.repo = InfraRepo(root / "infra", [self.key.recipient])
        self.port = free_port()
        self.runtime = root / "runtime"
        self.metrics = root / "metrics" / "vigo.prom"
        self.config = root / "vigo.toml"
        self.config.write_text(
            f'repo = "{self.repo.remote}"\ncheckout = "{root}/checkout"\n'
            f'runtime = "{self.runtime}"\nstate = "{root}/state"\nsecrets = "/run/vigo"\n'
            f'age_key_file = "{self.key.path}"\nhost = "testhost"\n'
            f'project_prefix = "{prefix}"\nmetrics_file = "{self.metrics}"\n'
            f"run_timeout = {run_timeout}\nhealth_timeout = 60\n")
        self.machine = Machine(prefix + "systemd", root)

    def seed(self, stacks: dict[str, str]) -> str:
        from tests.support.infra import app_compose, proxy_compose

        self.repo.write("proxy/docker-compose.yml", proxy_compose(self.prefix))
        self.repo.write_env("env/proxy.env", {"HTTP_PORT": str(self.port)})
        self.repo.write_env("env/global.env", {"TZ": "UTC"})
        for name, tag in stacks.items():
            self.repo.write(f"stacks/{name}/docker-compose.yml",
                            app_compose(self.prefix, name, tag))
            self.repo.write_env(f"env/{name}.env",
                                {f"{name.upper()}_HOST": f"{name}.{self.prefix[:-1]}.test"})
        return self.repo.commit("seed")

    def bootstrap(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.machine.exec("vigo", "--config", str(self.config), "bootstrap",
                                 "--repo", str(self.repo.remote), *extra, check=False)

    def containers(self) -> dict[str, dict]:
        """name -> docker inspect of this host's containers."""
        ids = sh("docker", "ps", "-aq", "--filter", f"label=io.vigo.instance={self.prefix}"
                 ).stdout.split()
        # A container removed between ps and inspect (a deploy in progress) is left out.
        out = sh("docker", "inspect", *ids, check=False).stdout if ids else ""
        found = json.loads(out) if out.strip().startswith("[") else []
        return {c["Name"].lstrip("/"): c for c in found}

    def ids(self) -> dict[str, str]:
        return {name: c["Id"] for name, c in self.containers().items()}

    def cleanup(self) -> None:
        self.machine.remove()
        ids = sh("docker", "ps", "-aq", "--filter", f"label=io.vigo.instance={self.prefix}",
                 check=False).stdout.split()
        if ids:
            sh("docker", "rm", "-f", "-v", *ids, check=False)
        sh("docker", "network", "rm", f"{self.prefix}proxy", check=False)
