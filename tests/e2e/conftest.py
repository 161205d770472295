"""End-to-end fixtures: the real engine, real git remotes, real sops and age.

Nothing here skips: if the engine or a tool is missing, every e2e test fails loudly.
Each test gets its own compose project prefix, proxy network and port, and is cleaned up after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.support.images import ensure_app_image
from tests.support.infra import AgeKey, InfraRepo, app_compose, free_port, proxy_compose, sh

TAG_A, TAG_B = "sha-1a2b3c4", "sha-5d6e7f8"



@pytest.fixture(scope="session", autouse=True)
def engine() -> str:
    """The real Docker engine, compose v2, sops and age must answer, or the suite fails."""
    for argv in (["docker", "version", "--format", "{{.Server.Version}}"],
                 ["docker", "compose", "version"], ["sops", "--version"], ["age", "--version"]):
        res = subprocess.run(argv, capture_output=True, text=True, check=False,
                             env={**os.environ, "SOPS_DISABLE_VERSION_CHECK": "1"})
        if res.returncode != 0:
            pytest.fail(f"{' '.join(argv)} failed (run scripts/test, which installs and starts "
                        f"everything):\n{res.stderr}", pytrace=False)
    for tag in (TAG_A, TAG_B):
        ensure_app_image(tag)
    return "ok"


class Host:
    """One vigo host: settings, folders, an age key and its own infra repo and remote."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = "t" + uuid.uuid4().hex[:6] + "-"
        self.key = AgeKey(root / "age.txt")
        self.repo = InfraRepo(root / "infra", [self.key.recipient])
        self.port = free_port()
        self.state = root / "state"
        self.runtime = root / "runtime"
        self.secrets = Path("/dev/shm") / f"vigo-test-{self.prefix[:-1]}"  # a tmpfs
        self.checkout = root / "checkout"
        self.config = root / "vigo.toml"
        self.config.write_text(
            f'repo = "{self.repo.remote}"\n'
            f'checkout = "{self.checkout}"\nruntime = "{self.runtime}"\n'
            f'secrets = "{self.secrets}"\nstate = "{self.state}"\n'
            f'age_key_file = "{self.key.path}"\nhost = "testhost"\n'
            f'project_prefix = "{self.prefix}"\n')

    def seed(self, stacks: dict[str, str] | None = None, secrets: dict[str, str] | None = None
             ) -> str:
        """The design's layout: a proxy and app stacks (all with a service `web`), committed."""
        stacks = {"whoami": TAG_A, "echo": TAG_B} if stacks is None else stacks
        self.repo.write("proxy/docker-compose.yml", proxy_compose(self.prefix))
        self.repo.write_env("env/proxy.env", {"HTTP_PORT": str(self.port)})
        self.repo.write_env("env/global.env", {"TZ": "UTC"})
        for name, tag in stacks.items():
            self.add_stack(name, tag, secrets if name == "whoami" else None)
        return self.repo.commit("seed")

    def add_stack(self, name: str, tag: str, secrets: dict[str, str] | None = None) -> None:
        self.repo.write(f"stacks/{name}/docker-compose.yml", app_compose(self.prefix, name, tag))
        self.repo.write_env(f"env/{name}.env",
                            {f"{name.upper()}_HOST": self.hostname(name), **(secrets or {})})

    def hostname(self, stack: str) -> str:
        return f"{stack}.{self.prefix[:-1]}.test"

    def vigo(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vigo", "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)

    def apply(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        res = self.vigo("apply", *args)
        assert res.returncode == expect, (
            f"vigo apply exited {res.returncode}, expected {expect}\n"
            f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}")
        return res

    def get(self, stack: str, expect: str = "", timeout: float = 20) -> str:
        """GET / through Traefik with the stack's Host header; retry until `expect` shows."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            req = urllib.request.Request(f"http://127.0.0.1:{self.port}/",
                                         headers={"Host": self.hostname(stack)})
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    last = resp.read().decode()
            except (urllib.error.URLError, OSError) as exc:
                last = f"error: {exc}"
            if (expect in last and not last.startswith("error")) or time.monotonic() > deadline:
                return last
            time.sleep(0.3)

    def containers(self, stack: str | None = None) -> list[dict[str, object]]:
        ids = sh("docker", "ps", "-aq", "--filter", f"label=io.vigo.instance={self.prefix}"
                 ).stdout.split()
        if not ids:
            return []
        found = json.loads(sh("docker", "inspect", *ids).stdout)
        return [c for c in found
                if stack is None or c["Config"]["Labels"].get("io.vigo.stack") == stack]

    def cleanup(self) -> None:
        shutil.rmtree(self.secrets, ignore_errors=True)
        ids = sh("docker", "ps", "-aq", "--filter", f"name=^{self.prefix}", check=False
                 ).stdout.split()
        if ids:
            sh("docker", "rm", "-f", "-v", *ids, check=False)
        nets = sh("docker", "network", "ls", "-q", "--filter", f"name={self.prefix}",
                  check=False).stdout.split()
        if nets:
            sh("docker", "network", "rm", *nets, check=False)
        volumes = [v for v in sh("docker", "volume", "ls", "-q", "--filter",
                                 f"name={self.prefix}", check=False).stdout.split()
                   if v.startswith(self.prefix)]  # named volumes of this test's projects
        if volumes:
            sh("docker", "volume", "rm", *volumes, check=False)


@pytest.fixture
def host(tmp_path: Path):
    h = Host(tmp_path)
    yield h
    h.cleanup()
