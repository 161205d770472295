"""Stacks on Docker Swarm (docs/swarm.md), on real swarms started here: a one-node swarm for the
deploy, idle, rollback, secrets and prune cases, a three-node swarm (one per module, shared by
its tests) for spreading, promotion through Traefik's Swarm provider, a drained node and a
killed worker, and the leader stopped.

vigo talks to a node's engine through DOCKER_HOST (its unix socket); requests reach the tasks
inside the nodes' network namespaces (`Node.nx`). This kernel has no IPVS: no routing mesh, so
the tests use `mode: host` ports and Traefik's Swarm provider, never published ingress ports.
If a swarm cannot start, every test here fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import TAG_A, TAG_B, Host
from tests.support import swarm as swarms
from tests.support.images import BASE_IMAGE, ensure_app_image

APP = "ghcr.io/vigo-example/whoami"
IMAGES = [f"{APP}:{TAG_A}", f"{APP}:{TAG_B}", BASE_IMAGE]
PORT = 8081


def web_compose(tag: str, extra_env: str = "", replicas: int = 1, secrets: str = "",
                port: int = PORT) -> str:
    return f"""x-vigo: {{engine: swarm, health_timeout: 60}}
services:
  web:
    image: {APP}:{tag}
    healthcheck: {{test: ["CMD", "/bin/healthy"], interval: 1s, timeout: 3s, retries: 2}}
    environment:
      GREETING: ${{GREETING}}{extra_env}
    ports: [{{target: 80, published: {port}, mode: host}}]
    deploy:
      replicas: {replicas}
      placement: {{max_replicas_per_node: 1}}
      update_config: {{monitor: 3s}}
{secrets}"""


class SwarmHost(Host):
    """A vigo host whose engine is a swarm node (DOCKER_HOST = its socket)."""

    def __init__(self, root: Path, node: swarms.Node) -> None:
        super().__init__(root)
        self.node = node
        # Swarm publishes host-mode ports on every interface of the node (no host_ip)
        with self.config.open("a") as f:
            f.write(f'allow_ports = ["web:{PORT}"]\n')

    def vigo(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vigo", "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL,
                              env={**os.environ, "DOCKER_HOST": self.node.host})

    def services(self) -> dict[str, dict]:
        ids = self.node.docker("service", "ls", "-q", "--filter",
                               f"label=io.vigo.instance={self.prefix}").stdout.split()
        if not ids:
            return {}
        found = json.loads(self.node.docker("service", "inspect", *ids).stdout)
        return {s["Spec"]["Name"]: s for s in found}

    def curl(self, node: swarms.Node, port: int = PORT, path: str = "/") -> str:
        out = node.nx("curl", "-fsS", "-m", "3", f"http://{node.ip}:{port}{path}")
        return out.stdout if out.returncode == 0 else f"error: {out.stderr.strip()}"

    def wait_serving(self, node: swarms.Node, expect: str, timeout: float = 30,
                     port: int = PORT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            got = self.curl(node, port)
            if expect in got or time.monotonic() > deadline:
                return got
            time.sleep(0.3)


@pytest.fixture(scope="module")
def one() -> Iterator[swarms.Swarm]:
    ensure_app_image(TAG_A)
    ensure_app_image(TAG_B)
    with swarms.running(1, IMAGES) as s:
        yield s


@pytest.fixture
def shost(tmp_path: Path, one: swarms.Swarm) -> Iterator[SwarmHost]:
    h = SwarmHost(tmp_path, one.manager)
    yield h
    for name in h.services():  # this test's stacks only (its prefix)
        ns = name.rsplit("_", 1)[0]
        one.manager.docker("stack", "rm", ns, check=False)
    h.cleanup()


def seed(h: SwarmHost, tag: str = TAG_A, **kw) -> str:
    h.repo.write("stacks/web/compose.yml", web_compose(tag, **kw))
    h.repo.write_env("env/web.env", {"GREETING": "hello", "DB_PASSWORD": "s3cr3t-one"})
    return h.repo.commit("web on the swarm")


def test_deploy_idle_and_update_on_a_one_node_swarm(shost: SwarmHost) -> None:
    seed(shost)
    first = shost.apply()
    assert "web: created on the swarm" in first.stdout, first.stdout
    assert f"revision={TAG_A}" in shost.wait_serving(shost.node, TAG_A)
    svc = shost.services()[f"{shost.prefix}web_web"]
    labels = svc["Spec"]["Labels"]
    assert labels["io.vigo.stack"] == "web" and labels["io.vigo.stack-hash"]
    update = svc["Spec"]["UpdateConfig"]
    assert update["FailureAction"] == "rollback" and update["Parallelism"] == 1
    assert update["Order"] == "stop-first"  # a host-mode port: start-first would never end
    assert update["Monitor"] == 3_000_000_000  # the stack's own value wins
    version = svc["Version"]["Index"]

    idle = shost.apply()
    assert "nothing to do" in idle.stdout, idle.stdout
    assert shost.services()[f"{shost.prefix}web_web"]["Version"]["Index"] == version

    seed(shost, TAG_B)
    second = shost.apply()
    assert "web: updated on the swarm" in second.stdout, second.stdout
    assert f"revision={TAG_B}" in shost.curl(shost.node)
    state = shost.services()[f"{shost.prefix}web_web"]["UpdateStatus"]["State"]
    assert state == "completed"


def test_a_crashing_revision_is_rolled_back_and_held(shost: SwarmHost) -> None:
    seed(shost)
    good = shost.apply()
    assert "created on the swarm" in good.stdout, good.stdout
    seed(shost, TAG_B, extra_env="\n      APP_FAIL: exit")
    bad = shost.apply(expect=1)
    assert "web: rolled back to" in bad.stdout, bad.stdout
    assert f"revision={TAG_A}" in shost.wait_serving(shost.node, TAG_A)
    image = shost.services()[f"{shost.prefix}web_web"]["Spec"]["TaskTemplate"][
        "ContainerSpec"]["Image"]
    assert image.endswith(TAG_A)
    held = shost.apply(expect=1)
    assert "web: held" in held.stdout, held.stdout
    assert "docker stack deploy" not in held.stdout


def test_env_values_as_secrets_rotate_and_the_old_one_goes(shost: SwarmHost) -> None:
    secret = ("    secrets: [db_password]\nsecrets:\n  db_password: {environment: DB_PASSWORD}\n")
    seed(shost, secrets=secret)
    out = shost.apply()
    assert "created on the swarm" in out.stdout, out.stdout
    assert "s3cr3t" not in out.stdout + out.stderr

    def secrets() -> list[str]:
        return shost.node.docker("secret", "ls", "--filter", f"label=io.vigo.instance="
                                 f"{shost.prefix}", "--format", "{{.Name}}").stdout.split()
    first = secrets()
    assert len(first) == 1 and first[0].startswith(f"{shost.prefix}web_db_password_")
    cid = shost.node.docker("ps", "-q", "--filter", f"name={shost.prefix}web_web").stdout.split()
    assert shost.node.docker("exec", cid[0], "cat", "/run/secrets/db_password"
                             ).stdout == "s3cr3t-one"
    shost.repo.write_env("env/web.env", {"GREETING": "hello", "DB_PASSWORD": "s3cr3t-two"})
    shost.repo.commit("rotate")
    rotated = shost.apply()
    assert "updated on the swarm" in rotated.stdout, rotated.stdout
    now = secrets()
    assert len(now) == 1 and now != first, (first, now)
    cid = shost.node.docker("ps", "-q", "--filter", f"name={shost.prefix}web_web").stdout.split()
    assert shost.node.docker("exec", cid[0], "cat", "/run/secrets/db_password"
                             ).stdout == "s3cr3t-two"


def test_prune_removes_owned_stacks_with_the_empty_tree_guard(shost: SwarmHost) -> None:
    seed(shost)
    shost.apply()
    other = "stranger_web"  # not vigo's: never touched
    shost.node.docker("service", "create", "--detach", "--name", other, "--label",
                      "io.vigo.stack=web", f"{APP}:{TAG_A}")
    try:
        shost.repo.remove("stacks/web/compose.yml")
        shost.repo.commit("drop web")
        refused = shost.apply(expect=1)
        assert "prune refused" in refused.stdout, refused.stdout
        assert f"{shost.prefix}web_web" in shost.services()
        gone = shost.apply("--allow-empty")
        assert "web: removed from the swarm" in gone.stdout, gone.stdout
        assert shost.services() == {}
        names = shost.node.docker("service", "ls", "--format", "{{.Name}}").stdout.split()
        assert other in names
    finally:
        shost.node.docker("service", "rm", other, check=False)
