"""The operations on swarm stacks (issue 16, docs/swarm.md), on one real swarm of three managers
and a worker started here (tests/support/swarm.py): what a follower manager and a worker record
and report, the secrets of a failed revision, a global service, the metrics of the services,
the reads through a docker context (`docker system dial-stdio`), and, last (it stops the
leader), the other manager's vigo deploying the revision it never applied while it was a
follower.

vigo talks to a node's engine through DOCKER_HOST (its unix socket), as in test_swarm.py, whose
host class this module reuses. No published ports: the services' own healthchecks gate them.
If the swarm cannot start, every test here fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import TAG_A, TAG_B
from tests.e2e.test_swarm import APP, IMAGES, SwarmHost
from tests.support import swarm as swarms
from tests.support.images import ensure_app_image

pytestmark = pytest.mark.e2e


def compose(tag: str, deploy: str = "replicas: 3", env: str = "", secrets: str = "",
            timeout: int = 90) -> str:
    return f"""x-vigo: {{engine: swarm, health_timeout: {timeout}}}
services:
  web:
    image: {APP}:{tag}
    healthcheck: {{test: ["CMD", "/bin/healthy"], interval: 1s, timeout: 3s, retries: 2}}
    environment:
      GREETING: ${{GREETING}}{env}
    deploy:
      {deploy}
      update_config: {{monitor: 2s}}
{secrets}"""


SECRET = "    secrets: [db_password]\nsecrets:\n  db_password: {environment: DB_PASSWORD}\n"


class OpsHost(SwarmHost):
    """A SwarmHost with a metrics file."""

    def __init__(self, root: Path, node: swarms.Node) -> None:
        super().__init__(root, node)
        self.metrics = root / "vigo.prom"
        with self.config.open("a") as f:
            f.write(f'metrics_file = "{self.metrics}"\n')

    def state_file(self) -> dict:
        return json.loads((self.state / "state.json").read_text())

    def status_json(self) -> dict:
        out = self.vigo("status", "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)

    def secret_names(self) -> list[str]:
        return sorted(self.node.docker("secret", "ls", "--filter", f"label=io.vigo.instance="
                                       f"{self.prefix}", "--format", "{{.Name}}").stdout.split())

    def remove_stacks(self) -> None:
        for name in self.services():
            self.node.docker("stack", "rm", name.rsplit("_", 1)[0], check=False)
        swarms.wait_for("this test's services gone", lambda: not self.services(), 60)
        swarms.wait_for("this test's secrets removable", lambda: not self.secret_names() or (
            self.node.docker("secret", "rm", *self.secret_names(), check=False).returncode == 0),
            60, every=1)


def tasks_running(h: SwarmHost, service: str) -> dict[str, str]:
    """node -> image of the service's tasks that run (desired and current state running)."""
    out = h.node.docker("service", "ps", "--filter", "desired-state=running", "--format",
                        "{{.Node}} {{.CurrentState}} {{.Image}}", service).stdout
    return {p[0]: p[-1] for line in out.splitlines() if (p := line.split()) and p[1] == "Running"}


@pytest.fixture(scope="module")
def four() -> Iterator[swarms.Swarm]:
    ensure_app_image(TAG_A)
    ensure_app_image(TAG_B)
    with swarms.running(4, IMAGES, managers=3) as s:
        yield s


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, four: swarms.Swarm
            ) -> Iterator[tuple[OpsHost, OpsHost, OpsHost]]:
    """vigo on n1 (the leader), on n2 (another manager) and on n4 (a worker): the same repo,
    key and prefix, each its own folders and metrics file."""
    lead = OpsHost(tmp_path_factory.mktemp("n1"), four.nodes[0])
    others = []
    for i in (1, 3):
        h = OpsHost(tmp_path_factory.mktemp(f"n{i + 1}"), four.nodes[i])
        h.prefix, h.repo = lead.prefix, lead.repo
        h.secrets = Path("/dev/shm") / f"vigo-test-{lead.prefix[:-1]}-n{i + 1}"
        h.config.write_text(
            f'repo = "{lead.repo.remote}"\ncheckout = "{h.checkout}"\n'
            f'runtime = "{h.runtime}"\nsecrets = "{h.secrets}"\nstate = "{h.state}"\n'
            f'age_key_file = "{lead.key.path}"\nhost = "n{i + 1}"\n'
            f'project_prefix = "{lead.prefix}"\nmetrics_file = "{h.metrics}"\n')
        others.append(h)
    lead.repo.write("stacks/app/compose.yml", compose(TAG_A))
    lead.repo.write_env("env/app.env", {"GREETING": "hello"})
    lead.repo.commit("app on the swarm")
    yield lead, others[0], others[1]
    for h in (*others, lead):
        h.cleanup()


@pytest.fixture
def fresh(tmp_path: Path, four: swarms.Swarm) -> Iterator[OpsHost]:
    """A host of its own (its own prefix and repo) on the leader n1."""
    h = OpsHost(tmp_path, four.nodes[0])
    yield h
    h.remove_stacks()
    h.cleanup()


def test_a_follower_and_a_worker_record_what_they_did_not_apply(
        cluster: tuple[OpsHost, OpsHost, OpsHost]) -> None:
    lead, other, worker = cluster
    first = lead.apply()
    assert "app: created on the swarm" in first.stdout, first.stdout
    prom = lead.metrics.read_text()
    for line in ('vigo_swarm_service_running_replicas{stack="app",service="web"} 3',
                 'vigo_swarm_service_desired_replicas{stack="app",service="web"} 3',
                 'vigo_swarm_service_update_state{stack="app",service="web",state="none"} 1',
                 'vigo_swarm_service_nodes_down{stack="app",service="web"} 0',
                 'vigo_stack_up{stack="app"} 1'):
        assert line in prom, prom

    out = other.apply()  # a manager that is not the leader: exit 0, nothing recorded as done
    assert "app: not applied (not the leader (the swarm leader n1-" in out.stdout, out.stdout
    data = other.state_file()
    record = data["stacks"]["app"]
    assert (data["exit_code"], data["reason"]) == (0, "NotLeader"), data
    assert not data.get("revision_applied"), data
    assert (record["outcome"], record["code"]) == ("not-applied", "NotLeader"), record
    assert "hash" not in record and "revision" not in record and "applied_at" not in record
    status = other.status_json()
    stack = next(s for s in status["stacks"] if s["stack"] == "app")
    assert (stack["outcome"], stack["code"], stack["revision"]) == ("not-applied", "NotLeader",
                                                                    ""), stack
    assert status["last_run"]["reason"] == "NotLeader" and not status["revision"]["applied"]
    text = other.vigo("status").stdout
    print(text)
    assert "not applied here: [NotLeader] not the leader (the swarm leader n1-" in text, text
    assert "swarm services (not the leader (the swarm leader n1-" in text, text
    assert "app/web (swarm): 3/3 running, on " in text, text
    prom = other.metrics.read_text()
    assert 'vigo_stack_reason_info{stack="app",reason="NotLeader"} 1' in prom, prom
    assert 'vigo_last_run_reason_info{reason="NotLeader"} 1' in prom, prom
    assert 'vigo_stack_failed{stack="app"} 0' in prom and "vigo_applied_revision_info{" not in prom

    work = worker.vigo("apply")  # a worker: its swarm stacks fail, named
    assert work.returncode == 1, work.stdout + work.stderr
    assert "app: not applied (this node is a swarm worker" in work.stdout, work.stdout
    record = worker.state_file()["stacks"]["app"]
    assert (record["outcome"], record["code"]) == ("failed", "NotSwarmManager"), record
    assert 'vigo_stack_reason_info{stack="app",reason="NotSwarmManager"} 1' in (
        worker.metrics.read_text())


def test_a_failed_revision_leaves_no_secret(fresh: OpsHost) -> None:
    fresh.repo.write("stacks/web/compose.yml", compose(TAG_A, "replicas: 1", secrets=SECRET))
    fresh.repo.write_env("env/web.env", {"GREETING": "hello", "DB_PASSWORD": "s3cr3t-one"})
    fresh.repo.commit("web with a secret")
    good = fresh.apply()
    assert "web: created on the swarm" in good.stdout, good.stdout
    first = fresh.secret_names()
    assert len(first) == 1 and first[0].startswith(f"{fresh.prefix}web_db_password_"), first
    fresh.repo.write("stacks/web/compose.yml", compose(
        TAG_B, "replicas: 1", env="\n      APP_FAIL: exit", secrets=SECRET))
    fresh.repo.write_env("env/web.env", {"GREETING": "hello", "DB_PASSWORD": "s3cr3t-two"})
    fresh.repo.commit("a crashing revision with a rotated secret")
    bad = fresh.apply("-v", expect=1)
    said = bad.stdout + bad.stderr
    assert "web: rolled back to" in bad.stdout, said
    assert "web: secret db_password: created" in said, said  # the rotated one was made
    assert "web: removed 1 secret(s) no service uses" in said, said
    assert "s3cr3t" not in said
    assert fresh.secret_names() == first
    svc = fresh.services()[f"{fresh.prefix}web_web"]
    refs = [r["SecretName"] for r in svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]]
    assert refs == first


def test_a_global_service_runs_on_every_node(fresh: OpsHost, four: swarms.Swarm) -> None:
    fresh.repo.write("stacks/g/compose.yml", compose(TAG_A, "mode: global"))
    fresh.repo.write_env("env/g.env", {"GREETING": "hello"})
    fresh.repo.commit("a global service")
    first = fresh.apply()
    assert "g: created on the swarm" in first.stdout, first.stdout
    service = f"{fresh.prefix}g_web"
    nodes = {n.name for n in four.nodes}
    running = tasks_running(fresh, service)
    assert set(running) == nodes, running  # one task per node, the worker's too
    status = fresh.vigo("status").stdout
    assert f"g/web (swarm): {len(nodes)}/{len(nodes)} running, on " in status, status

    def questions(res: subprocess.CompletedProcess[str]) -> list[str]:
        return [line for line in (res.stdout + res.stderr).splitlines()
                if line.startswith("$ ") and ("GET " in line or "docker" in line)]
    with_metrics = fresh.apply("-v")
    config = fresh.config  # the idle run's own questions: the same host without its metrics
    fresh.config = fresh.root / "no-metrics.toml"
    fresh.config.write_text(config.read_text().replace(f'metrics_file = "{fresh.metrics}"\n',
                                                       ""))
    try:
        idle = fresh.apply("-v")
    finally:
        fresh.config = config
    assert "nothing to do" in idle.stdout and "nothing to do" in with_metrics.stdout
    asked = questions(idle)
    swarm_asked = [q for q in asked if "/services?" in q or "/tasks" in q or "/nodes" in q
                   or "docker stack" in q or "docker service" in q]
    assert len(swarm_asked) == 1 and "/services?status=true" in swarm_asked[0], asked
    print(f"idle run with a global service: {len(asked)} engine question(s), "
          f"{len(questions(with_metrics))} with a metrics file")

    fresh.repo.write("stacks/g/compose.yml", compose(TAG_B, "mode: global"))
    fresh.repo.commit("update the global service")
    t0 = time.monotonic()
    update = fresh.apply()
    print(f"global update on {len(nodes)} nodes: {time.monotonic() - t0:.1f} s")
    assert "g: updated on the swarm" in update.stdout, update.stdout
    running = tasks_running(fresh, service)
    assert set(running) == nodes and all(TAG_B in image for image in running.values()), running
    status = fresh.vigo("status").stdout
    assert f"g/web (swarm): {len(nodes)}/{len(nodes)} running, update completed" in status, (
        status)
    prom = fresh.metrics.read_text()
    for line in (f'vigo_swarm_service_desired_replicas{{stack="g",service="web"}} {len(nodes)}',
                 f'vigo_swarm_service_running_replicas{{stack="g",service="web"}} {len(nodes)}',
                 'vigo_swarm_service_update_state{stack="g",service="web",state="completed"} 1'):
        assert line in prom, prom


def test_a_docker_context_reads_through_the_cli(fresh: OpsHost, tmp_path: Path) -> None:
    """DOCKER_CONTEXT names a context (in a DOCKER_CONFIG of the test's own: the machine's
    docker config is untouched) whose endpoint is n1's socket: every engine read goes through
    `docker system dial-stdio`, none to a unix socket of vigo's choosing."""
    config = tmp_path / "docker-config"
    config.mkdir()
    context = f"vigo-t-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    env.update(DOCKER_CONFIG=str(config), DOCKER_CONTEXT=context)
    subprocess.run(["docker", "context", "create", context, "--docker",
                    f"host={fresh.node.host}"], env={**env, "DOCKER_CONTEXT": "default"},
                   check=True, capture_output=True, timeout=30)

    def vigo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vigo", "--config", str(fresh.config),
                               *args], capture_output=True, text=True, timeout=300,
                              check=False, stdin=subprocess.DEVNULL, env=env)
    fresh.repo.write("stacks/web/compose.yml", compose(TAG_A, "replicas: 1"))
    fresh.repo.write_env("env/web.env", {"GREETING": "hello"})
    fresh.repo.commit("web through a docker context")
    first = vigo("apply", "-v")
    said = first.stdout + first.stderr
    assert first.returncode == 0, said
    assert "web: created on the swarm" in first.stdout, said
    assert "$ docker system dial-stdio" in said, said
    assert "GET (docker system dial-stdio) /services?status=true" in said, said
    assert "GET unix://" not in said, said
    assert fresh.services()[f"{fresh.prefix}web_web"]  # on n1's engine, as the context says
    idle = vigo("apply", "-v")
    said = idle.stdout + idle.stderr
    assert idle.returncode == 0 and "nothing to do" in idle.stdout, said
    assert "GET unix://" not in said, said
    asked = [line for line in said.splitlines() if line.startswith("$ GET ")]
    dials = said.count("$ docker system dial-stdio")
    assert dials == len(asked) > 0, said
    print(f"idle run through a docker context (with its metrics file): {len(asked)} engine "
          f"question(s), {dials} dial-stdio process(es): {[q[:60] for q in asked]}")
    status = vigo("status")
    assert "web/web (swarm): 1/1 running, on " in status.stdout, status.stdout + status.stderr


def test_leader_stopped_the_follower_deploys_what_it_never_applied(
        cluster: tuple[OpsHost, OpsHost, OpsHost], four: swarms.Swarm) -> None:
    lead, other, _ = cluster
    lead.repo.write("stacks/app/compose.yml", compose(TAG_B, "replicas: 2"))
    rev = lead.repo.commit("a revision the leader never applies")
    skipped = other.apply()  # still a follower: leaves it to n1, whose vigo does not run
    assert "app: not applied (not the leader" in skipped.stdout, skipped.stdout
    assert other.state_file()["stacks"]["app"]["code"] == "NotLeader"
    n1 = four.nodes[0]
    n1.stop()
    other.node = four.new_leader(n1)  # the manager that leads now, with n2's vigo state
    out = other.apply()
    assert "app: created on the swarm" in out.stdout or "app: updated on the swarm" in (
        out.stdout), out.stdout
    svc = other.services()[f"{lead.prefix}app_web"]
    assert svc["Spec"]["Mode"]["Replicated"]["Replicas"] == 2
    assert svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].endswith(TAG_B)
    data = other.state_file()
    record = data["stacks"]["app"]
    assert (record["outcome"], record["code"], record["revision"]) == ("ok", "Applied", rev)
    assert (data["reason"], data["revision_applied"]) == ("Converged", rev), data
