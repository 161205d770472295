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
                port: int = PORT, order: str = "", timeout: int = 60) -> str:
    order = f", order: {order}" if order else ""
    return f"""x-vigo: {{engine: swarm, health_timeout: {timeout}}}
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
      update_config: {{monitor: 3s{order}}}
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
    # `stack rm` returns before the tasks' containers are gone (they hold the host port)
    swarms.wait_for("this test's task containers gone", lambda: not one.manager.docker(
        "ps", "-aq", "--filter", f"name={h.prefix}").stdout.split(), 60)
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
    status = shost.vigo("status")
    assert "web/web (swarm): 1/1 running, update" not in status.stdout  # no update ran yet
    assert f"web/web (swarm): 1/1 running, on {shost.node.name}" in status.stdout, (
        status.stdout)
    assert "missing" not in status.stdout, status.stdout
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
    print(bad.stdout)
    assert f"revision={TAG_A}" in shost.wait_serving(shost.node, TAG_A)
    image = shost.services()[f"{shost.prefix}web_web"]["Spec"]["TaskTemplate"][
        "ContainerSpec"]["Image"]
    assert image.endswith(TAG_A)
    held = shost.apply(expect=1)
    assert "web: held" in held.stdout, held.stdout
    print(held.stdout)
    assert "docker stack deploy" not in held.stdout


def test_an_update_that_never_ends_is_a_failed_gate(shost: SwarmHost) -> None:
    # start-first with a host-mode port on one node: the new task waits for a free port forever;
    # vigo calls it failed once Swarm has found no node for it for 30 s, long before the timeout
    seed(shost, order="start-first", timeout=90)
    shost.apply()
    seed(shost, TAG_B, order="start-first", timeout=90)
    out = shost.apply(expect=1)
    assert "web: rolled back to" in out.stdout, out.stdout
    assert "Swarm has found no node for a new task for 30s (no suitable node (host-mode port" in (
        out.stdout) and "order: stop-first" in out.stdout, out.stdout
    svc = shost.services()[f"{shost.prefix}web_web"]
    assert svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].endswith(TAG_A)
    assert f"revision={TAG_A}" in shost.wait_serving(shost.node, TAG_A)
    check = shost.vigo("check", str(shost.repo.work))
    assert "start-first with a host-mode port" in check.stdout + check.stderr, check.stdout


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


def test_switching_a_running_stack_to_swarm_is_refused(shost: SwarmHost) -> None:
    # the node's engine runs the stack with Compose first (no x-vigo.engine, host default)
    shost.repo.write("stacks/web/compose.yml", web_compose(TAG_A).replace(
        "x-vigo: {engine: swarm, health_timeout: 60}", "x-vigo: {health_timeout: 60}"))
    shost.repo.write_env("env/web.env", {"GREETING": "hello", "DB_PASSWORD": "x"})
    shost.repo.commit("web on compose")
    out = shost.apply()
    assert "web: created" in out.stdout and "swarm" not in out.stdout, out.stdout
    seed(shost, TAG_B)
    moved = shost.apply(expect=1)
    assert "runs on Compose on this host and now names engine swarm" in moved.stdout, (
        moved.stdout)
    assert "docs/swarm.md#moving" in moved.stdout
    assert shost.services() == {}
    running = shost.node.docker("ps", "--filter", f"label=io.vigo.instance={shost.prefix}",
                                "--format", "{{.Image}}").stdout
    assert TAG_A in running, running
    shost.node.docker("rm", "-f", *shost.node.docker(
        "ps", "-aq", "--filter", f"label=io.vigo.instance={shost.prefix}").stdout.split())


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


# -- three managers and a worker ----------------------------------------------------------------
# Raft needs three managers to survive the loss of one (the leader test); the fourth node is a
# worker, killed in its test. Traefik (its Swarm provider, task IPs: no IPVS needed) runs on n1.

TRAEFIK = "traefik:v3.7"
EDGE = "proxy_default"  # the network vigo lets stacks share with the proxy


def routed_compose(tag: str, replicas: int = 3) -> str:
    # Swarm has no drain hook: a task keeps serving for 4 s after SIGTERM (lame duck), longer
    # than Traefik needs to drop it (refreshSeconds=1). docs/swarm.md says why.
    return f"""x-vigo: {{engine: swarm, health_timeout: 90}}
services:
  web:
    image: {APP}:{tag}
    command:
      - /bin/sh
      - -c
      - "/bin/start & p=$$!; trap 'sleep 4; kill -TERM $$p' TERM; wait $$p; wait $$p"
    healthcheck: {{test: ["CMD", "/bin/healthy"], interval: 1s, timeout: 3s, retries: 2}}
    environment:
      GREETING: ${{GREETING}}
    networks: [{EDGE}]
    deploy:
      replicas: {replicas}
      placement: {{max_replicas_per_node: 1}}
      update_config: {{monitor: 3s}}
      labels:
        traefik.enable: "true"
        traefik.swarm.network: {EDGE}
        traefik.http.routers.app.rule: Host(`app.test`)
        traefik.http.routers.app.entrypoints: web
        traefik.http.services.app.loadbalancer.server.port: "80"
networks:
  {EDGE}: {{external: true, name: {EDGE}}}
"""


def traefik_stack(node: swarms.Node) -> str:
    return f"""services:
  traefik:
    image: {TRAEFIK}
    command:
      - --providers.swarm.endpoint=unix:///var/run/docker.sock
      - --providers.swarm.exposedByDefault=false
      - --providers.swarm.refreshSeconds=1
      - --entrypoints.web.address=:80
      - --ping=true
    ports: [{{target: 80, published: 8080, mode: host}}]
    volumes: ["{node.sock}:/var/run/docker.sock:ro"]
    networks: [{EDGE}]
    deploy:
      placement: {{constraints: [node.hostname == {node.name}]}}
networks:
  {EDGE}: {{external: true, name: {EDGE}}}
"""


LOAD = r"""
import sys, time, urllib.request, pathlib
stop, ok, failed, errors = pathlib.Path(sys.argv[2]), 0, 0, {}
while not stop.exists():
    req = urllib.request.Request(sys.argv[1], headers={"Host": "app.test", "Connection": "close"})
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            r.read(); ok += 1
    except Exception as exc:
        failed += 1; errors[str(exc)[:60]] = errors.get(str(exc)[:60], 0) + 1
print(ok, failed, errors)
"""


@pytest.fixture(scope="module")
def four() -> Iterator[swarms.Swarm]:
    ensure_app_image(TAG_A)
    ensure_app_image(TAG_B)
    with swarms.running(4, [*IMAGES, TRAEFIK], managers=3) as s:
        n1 = s.manager
        n1.docker("network", "create", "--driver", "overlay", "--attachable", EDGE)
        f = n1.root / "traefik.yml"
        f.write_text(traefik_stack(n1))
        n1.docker("stack", "deploy", "--resolve-image", "never", "-c", str(f), "edge")
        swarms.wait_for("Traefik answering on n1", lambda: n1.nx(
            "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{n1.ip}:8080/"
        ).stdout == "404", 60)
        yield s


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, four: swarms.Swarm
            ) -> Iterator[tuple[SwarmHost, SwarmHost]]:
    """vigo on n1 (the leader) and on n2 (another manager): the same repo, key and prefix,
    each its own folders."""
    lead = SwarmHost(tmp_path_factory.mktemp("n1"), four.nodes[0])
    other = SwarmHost(tmp_path_factory.mktemp("n2"), four.nodes[1])
    other.prefix, other.repo = lead.prefix, lead.repo
    other.secrets = Path("/dev/shm") / f"vigo-test-{lead.prefix[:-1]}-n2"
    other.config.write_text(
        f'repo = "{lead.repo.remote}"\ncheckout = "{other.checkout}"\n'
        f'runtime = "{other.runtime}"\nsecrets = "{other.secrets}"\nstate = "{other.state}"\n'
        f'age_key_file = "{lead.key.path}"\nhost = "n2"\nproject_prefix = "{lead.prefix}"\n')
    lead.repo.write("stacks/app/compose.yml", routed_compose(TAG_A))
    lead.repo.write_env("env/app.env", {"GREETING": "hello"})
    lead.repo.commit("app on the swarm")
    yield lead, other
    other.cleanup()
    lead.cleanup()


def routed(node: swarms.Node, expect: str = "revision=", timeout: float = 30) -> str:
    """GET / through Traefik on n1 (Host: app.test), polled until `expect` shows."""
    deadline = time.monotonic() + timeout
    while True:
        out = node.nx("curl", "-sS", "-m", "3", "-H", "Host: app.test", f"http://{node.ip}:8080/")
        got = out.stdout + out.stderr
        if expect in got or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def tasks_by_node(h: SwarmHost, service: str) -> dict[str, str]:
    out = h.node.docker("service", "ps", "--filter", "desired-state=running", "--format",
                        "{{.Node}} {{.CurrentState}}", service).stdout
    return {line.split()[0]: line.split(" ", 1)[1] for line in out.splitlines()
            if line and line.split()[1] == "Running"}


def test_three_managers_first_deploy_spreads_and_idle_asks_the_swarm_once(
        cluster: tuple[SwarmHost, SwarmHost], four: swarms.Swarm) -> None:
    lead, other = cluster
    first = lead.apply()
    assert "app: created on the swarm" in first.stdout, first.stdout
    service = f"{lead.prefix}app_web"
    running = tasks_by_node(lead, service)
    assert len(running) == 3 and set(running) <= {n.name for n in four.nodes}, running
    assert all(state.startswith("Running") for state in running.values()), running
    assert "revision=" + TAG_A in routed(four.manager, TAG_A)

    follower = other.apply()  # another manager: observes, reports, changes nothing
    assert "app: not applied (not the leader (the swarm leader n1-" in follower.stdout, (
        follower.stdout)

    idle = lead.apply("-v")
    questions = [line for line in idle.stdout.splitlines() + idle.stderr.splitlines()
                 if line.startswith("$ ") and ("GET unix://" in line or "docker" in line)]
    swarm_questions = [q for q in questions if "/services?" in q or "docker stack" in q
                       or "docker service" in q]
    assert "nothing to do" in idle.stdout, idle.stdout
    assert len(swarm_questions) == 1 and "/services?status=true" in swarm_questions[0], (
        questions)
    print(f"idle run on the swarm leader: {len(questions)} engine question(s): {questions}")


def test_promotion_through_traefik_loses_no_request(cluster: tuple[SwarmHost, SwarmHost],
                                                    four: swarms.Swarm, tmp_path: Path) -> None:
    lead, _ = cluster
    n1 = four.manager
    stop = tmp_path / "stop"
    load = subprocess.Popen(["nsenter", "-t", str(n1.holder.pid), "-n", "--", sys.executable,
                             "-c", LOAD, f"http://{n1.ip}:8080/", str(stop)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        lead.repo.write("stacks/app/compose.yml", routed_compose(TAG_B))
        lead.repo.commit("promote app")
        out = lead.apply()
        assert "app: updated on the swarm" in out.stdout, out.stdout
        assert TAG_B in routed(n1, TAG_B), "Traefik never routed the new revision"
        time.sleep(6)  # the last old task's lame duck ends
    finally:
        stop.touch()
        stdout, stderr = load.communicate(timeout=30)
    ok, failed, errors = stdout.split(" ", 2)
    print(f"promotion through Traefik's Swarm provider: {failed} failed of "
          f"{int(ok) + int(failed)} requests ({errors.strip()})")
    assert int(ok) > 100, (stdout, stderr)
    assert int(failed) == 0, (stdout, stderr)


def test_drained_node_and_killed_worker_keep_it_serving(cluster: tuple[SwarmHost, SwarmHost],
                                                        four: swarms.Swarm) -> None:
    lead, _ = cluster
    n1, n4 = four.nodes[0], four.nodes[3]
    service = f"{lead.prefix}app_web"
    drained = next(n for n in four.nodes[1:] if n.name in tasks_by_node(lead, service))
    n1.docker("node", "update", "--availability", "drain", drained.name)
    try:
        swarms.wait_for("the drained node's task moved", lambda: drained.name not in (
            tasks_by_node(lead, service)) and len(tasks_by_node(lead, service)) == 3, 60)
        assert "revision=" in routed(n1)
        status = lead.vigo("status")
        assert "app/web (swarm): 3/3 running, update completed, on " in status.stdout, (
            status.stdout)
        assert drained.name not in status.stdout, status.stdout
        idle = lead.apply()  # Swarm keeps the replicas: nothing for vigo to redo
        assert "nothing to do" in idle.stdout, idle.stdout
    finally:
        n1.docker("node", "update", "--availability", "active", drained.name)
    n4.kill()  # the worker's machine dies: the swarm marks it down, the stack serves on

    def down() -> bool:
        nodes = n1.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout
        return f"{n4.name} Down" in nodes
    swarms.wait_for("the killed worker marked down", down, 60)
    assert "revision=" in routed(n1)
    swarms.wait_for("3 tasks running again", lambda: len(tasks_by_node(lead, service)) == 3
                    and n4.name not in tasks_by_node(lead, service), 90)
    status = lead.vigo("status")
    assert "app/web (swarm): 3/3 running, update completed, on " in status.stdout, (
        status.stdout)
    assert n4.name not in status.stdout.split("swarm services:")[1].split("down")[0], (
        status.stdout)
    idle = lead.apply()
    assert "nothing to do" in idle.stdout, idle.stdout


def test_leader_stopped_another_manager_takes_over(cluster: tuple[SwarmHost, SwarmHost],
                                                   four: swarms.Swarm) -> None:
    lead, other = cluster
    n1 = four.nodes[0]
    n1.stop()
    other.node = four.new_leader(n1)  # vigo of the manager that leads now
    # n1 and n4 are gone: two nodes, and max_replicas_per_node 1 with start-first needs a spare
    # node for every update (2 replicas would wait forever; vigo fails that after 30 s)
    lead.repo.write("stacks/app/compose.yml", routed_compose(TAG_A, replicas=1))
    lead.repo.commit("after the leader went")
    out = other.apply()
    assert "app: created on the swarm" in out.stdout, out.stdout  # its first apply of it
    replicas = other.node.docker("service", "inspect", "--format",
                                 "{{.Spec.Mode.Replicated.Replicas}}", f"{lead.prefix}app_web")
    assert replicas.stdout.strip() == "1"
