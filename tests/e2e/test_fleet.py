"""A fleet on one machine, for real: three Docker engines (tests/support/engines.py), three vigo
instances with their own settings, host names, age keys, checkouts, runtime trees and tmpfs
secrets, all following ONE bare remote whose .sops.yaml was written by `vigo host add`.

Each host runs one stack, whoami, published on its own loopback port (from its own encrypted
overlay env file); no Traefik in front: containers of an engine without iptables cannot reach
each other across a bridge here (see engines.py), and the proxy is not what a fleet changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.conftest import TAG_A, TAG_B
from tests.support.engines import Engine, engines_running, load_images
from tests.support.infra import SOPS_ENV, AgeKey, InfraRepo, free_port, sh

HOSTS = ("h1", "h2", "h3")
IMAGE = "ghcr.io/vigo-example/whoami"
WHOAMI = """\
services:
  web:
    image: ghcr.io/vigo-example/whoami:{tag}
    env_file:
      - ../../env/global.env
      - ../../env/whoami.env
    ports:
      - "127.0.0.1:${{WHOAMI_PORT}}:80"
"""


class FleetHost:
    """One host of the fleet: its engine, key, settings and folders."""

    def __init__(self, root: Path, engine: Engine, remote: Path) -> None:
        self.name = engine.name
        self.engine = engine
        self.root = root / self.name
        self.root.mkdir()
        self.key = AgeKey(self.root / "age.txt")
        self.port = free_port()
        self.runtime, self.checkout = self.root / "runtime", self.root / "checkout"
        self.secrets = Path("/dev/shm") / f"vigo-fleet-{uuid.uuid4().hex[:8]}-{self.name}"
        self.config = self.root / "vigo.toml"
        self.config.write_text(
            f'repo = "{remote}"\nhost = "{self.name}"\ncheckout = "{self.checkout}"\n'
            f'runtime = "{self.runtime}"\nsecrets = "{self.secrets}"\n'
            f'state = "{self.root / "state"}"\nage_key_file = "{self.key.path}"\n'
            "health_timeout = 30\n")

    def apply(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vigo", "--config", str(self.config),
                               "apply"], env=self.engine.env(), capture_output=True, text=True,
                              timeout=300, check=False, stdin=subprocess.DEVNULL)

    def get(self, expect: str, timeout: float = 10) -> str:
        deadline, last = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=3) as r:
                    last = r.read().decode()
            except OSError as exc:
                last = f"error: {exc}"
            if expect in last:
                break
            time.sleep(0.2)
        return last

    def container(self) -> dict:
        ids = self.engine.docker("ps", "-q", "--filter", "label=io.vigo.stack=whoami"
                                 ).stdout.split()
        assert len(ids) == 1, f"{self.name}: {ids}"
        return json.loads(self.engine.docker("inspect", ids[0]).stdout)[0]

    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.container()["Config"]["Env"])


class Fleet:
    def __init__(self, root: Path, engines: list[Engine]) -> None:
        self.operator = AgeKey(root / "operator.txt")
        self.repo = InfraRepo(root / "infra", [self.operator.recipient])
        self.hosts = [FleetHost(root, e, self.repo.remote) for e in engines]

    def vigo(self, *args: str) -> subprocess.CompletedProcess[str]:
        """vigo on the operator's workstation: no settings file, no Docker engine named."""
        env = {**os.environ, **SOPS_ENV, "SOPS_AGE_KEY_FILE": str(self.operator.path),
               "VIGO_CONFIG": "/nonexistent/vigo.toml"}
        return subprocess.run([sys.executable, "-m", "vigo", *args], env=env, text=True,
                              capture_output=True, timeout=120, check=False)

    def apply_all(self) -> dict[str, subprocess.CompletedProcess[str]]:
        """Every host's timer fires at once."""
        t0 = time.monotonic()
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            runs = dict(zip(HOSTS, pool.map(FleetHost.apply, self.hosts), strict=True))
        print(f"fleet: 3 applies in {time.monotonic() - t0:.1f}s")
        return runs


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    t0 = time.monotonic()
    docker0 = ifindex("docker0")  # the main engine's bridge: the extra engines leave it alone
    with engines_running(HOSTS) as engines:
        load_images(engines, [f"{IMAGE}:{TAG_A}", f"{IMAGE}:{TAG_B}"])
        print(f"\nfleet: 3 engines up, images loaded in {time.monotonic() - t0:.1f}s")
        fleet = Fleet(tmp_path_factory.mktemp("fleet"), engines)
        try:
            seed(fleet)
            runs = fleet.apply_all()
            for h in fleet.hosts:
                assert runs[h.name].returncode == 0, runs[h.name].stdout + runs[h.name].stderr
                assert "whoami: created" in runs[h.name].stdout
            yield fleet
        finally:
            for h in fleet.hosts:
                shutil.rmtree(h.secrets, ignore_errors=True)
    print(f"fleet: done, engines stopped and removed after {time.monotonic() - t0:.1f}s")
    assert ifindex("docker0") == docker0, "docker0 was deleted or replaced during the test"


def ifindex(interface: str) -> str | None:
    try:
        return Path(f"/sys/class/net/{interface}/ifindex").read_text().strip()
    except OSError:
        return None


def seed(fleet: Fleet) -> None:
    """The operator's first commit: shared env files, one overlay env file per host (written
    while only the operator's rule exists), then `vigo host add` for each host."""
    t0 = time.monotonic()
    repo = fleet.repo
    repo.write("stacks/whoami/docker-compose.yml", WHOAMI.format(tag=TAG_A))
    repo.write_env("env/global.env", {"GREETING": "hello"})
    repo.write_env("env/whoami.env", {"WHOAMI_PORT": str(free_port()), "API_TOKEN": "base"})
    for h in fleet.hosts:
        repo.write_env(f"hosts/{h.name}/env/whoami.env",
                       {"WHOAMI_PORT": str(h.port), "API_TOKEN": f"token-of-{h.name}"})
    for h in fleet.hosts:
        res = fleet.vigo("host", "add", h.name, "--age-recipient", h.key.recipient,
                         "--repo", str(repo.work))
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"hosts/{h.name}/env/whoami.env: re-encrypted" in res.stdout
    assert recipients(repo.work / "env/global.env") == {
        fleet.operator.recipient, *(h.key.recipient for h in fleet.hosts)}
    for h in fleet.hosts:
        assert recipients(repo.work / f"hosts/{h.name}/env/whoami.env") == {
            fleet.operator.recipient, h.key.recipient}
    check = fleet.vigo("check", str(repo.work))
    assert check.returncode == 0, check.stdout
    repo.commit("fleet: three hosts, each with its own secrets")
    print(f"fleet: repo seeded in {time.monotonic() - t0:.1f}s")


def recipients(path: Path) -> set[str]:
    return {line.split("=", 1)[1] for line in path.read_text().splitlines()
            if line.startswith("sops_age__list_") and "__map_recipient=" in line}


def outcome(runs: dict[str, subprocess.CompletedProcess[str]]) -> dict[str, tuple[int, str]]:
    """host -> (exit code, the line about whoami or 'nothing to do')."""
    out = {}
    for name, res in runs.items():
        lines = [line for line in res.stdout.splitlines()
                 if line.startswith("whoami:") or "nothing to do" in line]
        out[name] = (res.returncode, lines[0].split(" (")[0] if lines else res.stdout[-300:])
    return out


def test_a_commit_changes_exactly_the_hosts_it_concerns(fleet: Fleet) -> None:
    h1, h2, h3 = fleet.hosts
    for h in fleet.hosts:
        assert f"revision={TAG_A}" in h.get(TAG_A)
        assert h.env()["API_TOKEN"] == f"token-of-{h.name}"
    # 1. a canary tag in h2's overlay: h2 alone changes; the others fetch and do nothing
    fleet.repo.write("hosts/h2/stacks/whoami/docker-compose.yml", WHOAMI.format(tag=TAG_B))
    rev = fleet.repo.commit("h2: canary")
    plan = fleet.vigo("plan", "--all-hosts", "--repo", str(fleet.repo.work),
                      "--diff-base", f"{rev}~1")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert plan.stdout.count("no change") == 3  # the base, h1, h3
    assert f"whoami changed (web: {IMAGE}:{TAG_A} -> {IMAGE}:{TAG_B})" in plan.stdout
    assert outcome(fleet.apply_all()) == {
        "h1": (0, f"{rev[:12]}: nothing to do, 1 stack(s) unchanged"),
        "h2": (0, "whoami: updated"),
        "h3": (0, f"{rev[:12]}: nothing to do, 1 stack(s) unchanged")}
    assert f"revision={TAG_B}" in h2.get(TAG_B)
    assert f"revision={TAG_A}" in h1.get(TAG_A) and f"revision={TAG_A}" in h3.get(TAG_A)
    # 2. a shared env file changes: every host decrypts it with its own key and updates
    fleet.repo.write_env("env/global.env", {"GREETING": "hello again"})
    fleet.repo.commit("global: a new greeting")
    assert outcome(fleet.apply_all()) == {h.name: (0, "whoami: updated") for h in fleet.hosts}
    assert {h.name: h.env()["GREETING"] for h in fleet.hosts} == dict.fromkeys(
        HOSTS, "hello again")
    # 3. a broken overlay in h3 fails h3 alone; h3 keeps running what it ran
    before = h3.container()["Id"]
    fleet.repo.write("hosts/h3/stacks/whoami/docker-compose.yml",
                     WHOAMI.format(tag=TAG_B) + "    bogus_key: 1\n")
    rev = fleet.repo.commit("h3: a typo")
    plan = fleet.vigo("plan", "--all-hosts", "--repo", str(fleet.repo.work))
    assert plan.returncode == 1, plan.stdout + plan.stderr
    assert ("h3: 1 stack(s): whoami; overlay env/whoami.env, stacks/whoami/docker-compose.yml; "
            "1 error(s)") in plan.stdout
    assert "h1: 1 stack(s): whoami; overlay env/whoami.env; 0 error(s)" in plan.stdout
    runs = fleet.apply_all()
    assert outcome(runs) == {
        "h1": (0, f"{rev[:12]}: nothing to do, 1 stack(s) unchanged"),
        "h2": (0, f"{rev[:12]}: nothing to do, 1 stack(s) unchanged"),
        "h3": (1, "whoami: failed")}
    assert "bogus_key" in runs["h3"].stdout
    assert h3.container()["Id"] == before
    assert f"revision={TAG_A}" in h3.get(TAG_A)


def test_each_host_holds_only_its_own_secrets(fleet: Fleet) -> None:
    h1, h2, _ = fleet.hosts
    work = fleet.repo.work

    def decrypt(key: AgeKey, rel: str) -> subprocess.CompletedProcess[str]:
        return sh("sops", "-d", "--input-type", "dotenv", "--output-type", "dotenv", rel,
                  cwd=work, env={"SOPS_AGE_KEY_FILE": str(key.path)}, check=False)

    denied = decrypt(h1.key, "hosts/h2/env/whoami.env")
    assert (denied.returncode, denied.stdout) == (128, "")
    assert "token-of-h2" in decrypt(h2.key, "hosts/h2/env/whoami.env").stdout
    assert "GREETING=" in decrypt(h1.key, "env/global.env").stdout  # the shared file
    assert decrypt(h1.key, "env/whoami.env").returncode == 0  # base files: every host
    # h1's engine, runtime tree and tmpfs hold h1's values and nothing that came from hosts/h2/
    assert h1.env()["API_TOKEN"] == "token-of-h1"
    h2_files = {digest(p) for p in (h1.checkout / "hosts/h2").rglob("*") if p.is_file()}
    assert h2_files  # the checkout has them, encrypted: git holds the whole repo
    seen = [p for folder in (h1.runtime, h1.secrets) for p in folder.rglob("*") if p.is_file()]
    assert seen and not h2_files & {digest(p) for p in seen}
    assert not [p for p in seen if b"token-of-h2" in p.read_bytes()]
    assert "token-of-h1" in (h1.secrets / "env/whoami.env").read_text()
    # and each engine runs only its own host's container
    for h in fleet.hosts:
        names = h.engine.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
        assert names == ["whoami-web-1"], (h.name, names)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rotating_a_host_key(fleet: Fleet, tmp_path: Path) -> None:
    """`vigo host add` again with a new key, in a copy of the clone (the fleet's stays as is)."""
    work = tmp_path / "clone"
    shutil.copytree(fleet.repo.work, work)
    h3 = fleet.hosts[2]
    new = AgeKey(tmp_path / "h3-new.txt")
    res = fleet.vigo("host", "add", "h3", "--age-recipient", new.recipient, "--repo", str(work))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "h3's key changed" in res.stdout
    assert h3.key.recipient not in (work / ".sops.yaml").read_text()
    for rel in ("hosts/h3/env/whoami.env", "env/global.env"):
        old = sh("sops", "-d", "--input-type", "dotenv", "--output-type", "dotenv", rel,
                 cwd=work, env={"SOPS_AGE_KEY_FILE": str(h3.key.path)}, check=False)
        assert old.returncode == 128, rel
        assert sh("sops", "-d", "--input-type", "dotenv", "--output-type", "dotenv", rel,
                  cwd=work, env={"SOPS_AGE_KEY_FILE": str(new.path)}).stdout
