"""Per-host folders place swarm stacks (docs/swarm.md#placement), on a real swarm started here:
one manager (vigo's engine, DOCKER_HOST = its socket) and two workers. vigo's `host` is
`testhost`, no node's name, so every hosts/<node>/stacks/<stack>/ is a placement folder.

The steps build on each other, so they are one test: a folder for worker 1 (every replica
there), worker 2's added (both labelled: the running tasks stay, Swarm never rebalances, and
new tasks go to either worker, never the manager), worker 1's removed (its tasks move, its
label goes), a folder naming a node the swarm does not have (that stack fails with the message,
the others deploy), then an idle run that asks the swarm one question. A second test: a
crashing revision that also moves the stack is rolled back onto the old node (its label kept,
the failed revision's removed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import TAG_A, Host
from tests.support import swarm as swarms
from tests.support.images import BASE_IMAGE, ensure_app_image

APP = "ghcr.io/vigo-example/whoami"
PLACE = "io.vigo.place."


def compose(replicas: int = 3, env: str = "") -> str:
    return f"""x-vigo: {{engine: swarm, health_timeout: 90}}
services:
  web:
    image: {APP}:{TAG_A}
    healthcheck: {{test: ["CMD", "/bin/healthy"], interval: 1s, timeout: 3s, retries: 2}}
    environment:
      GREETING: ${{GREETING}}{env}
    deploy:
      replicas: {replicas}
      update_config: {{monitor: 1s}}
"""


class NodeHost(Host):
    """A vigo host on the swarm's manager (DOCKER_HOST = its socket)."""

    def __init__(self, root: Path, node: swarms.Node) -> None:
        super().__init__(root)
        self.node = node

    def vigo(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vigo", "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL,
                              env={**os.environ, "DOCKER_HOST": self.node.host})

    def where(self, stack: str) -> dict[str, int]:
        """node -> running tasks of the stack's service `web`."""
        out = self.node.docker("service", "ps", "--filter", "desired-state=running",
                               "--format", "{{.Node}} {{.CurrentState}}",
                               f"{self.prefix}{stack}_web").stdout
        got: dict[str, int] = {}
        for line in out.splitlines():
            if line.split()[1:2] == ["Running"]:
                got[line.split()[0]] = got.get(line.split()[0], 0) + 1
        return got

    def labels(self, node: swarms.Node) -> dict[str, str]:
        out = self.node.docker("node", "inspect", "--format",
                               "{{json .Spec.Labels}}", node.name).stdout
        return {k: v for k, v in (json.loads(out) or {}).items()
                if k.startswith(f"{PLACE}{self.prefix}")}


@pytest.fixture(scope="module")
def three() -> Iterator[swarms.Swarm]:
    ensure_app_image(TAG_A)
    with swarms.running(3, [f"{APP}:{TAG_A}", BASE_IMAGE], managers=1) as s:
        yield s


@pytest.fixture
def mhost(tmp_path: Path, three: swarms.Swarm) -> Iterator[NodeHost]:
    h = NodeHost(tmp_path, three.manager)
    yield h
    for ns in ("web", "other", "lost"):
        three.manager.docker("stack", "rm", f"{h.prefix}{ns}", check=False)
    h.cleanup()


def test_host_folders_place_a_stack_and_follow_the_set(mhost: NodeHost,
                                                       three: swarms.Swarm) -> None:
    h = mhost
    _, w1, w2 = three.nodes
    h.repo.write("stacks/web/compose.yml", compose())
    h.repo.write_env("env/web.env", {"GREETING": "hello"})
    h.repo.write(f"hosts/{w1.name}/stacks/web/.gitkeep", "")
    h.repo.commit("web on worker 1")
    first = h.apply()
    assert "web: created on the swarm" in first.stdout, first.stdout
    assert f"placement: {w1.name}" in first.stdout, first.stdout
    assert h.where("web") == {w1.name: 3}
    (label,) = h.labels(w1)
    assert h.labels(w2) == {} and h.labels(three.manager) == {}

    # worker 2 joins the set (and a folder naming no node: a warning, not a failure)
    h.repo.write(f"hosts/{w2.name}/stacks/web/.gitkeep", "")
    h.repo.write("hosts/node-9/stacks/web/.gitkeep", "")
    h.repo.commit("web on both workers")
    second = h.apply()
    assert "web: updated on the swarm" in second.stdout, second.stdout
    assert f"placement: {w1.name}, {w2.name}" in second.stdout, second.stdout
    assert ("hosts/node-9/stacks/web places web on node-9, which is not a node of this "
            "swarm (nodes: ") in second.stdout, second.stdout
    assert "hosts/" in second.stdout and "added" in second.stdout  # the plan's reason
    # both nodes carry the new set's label; the running tasks fit it, so Swarm leaves them on
    # worker 1 (it never rebalances) and the deploy converges without an update
    assert h.where("web") == {w1.name: 3}
    h.node.docker("service", "scale", "--detach", f"{h.prefix}web_web=5")
    swarms.wait_for("the new replicas scheduled", lambda: sum(h.where("web").values()) == 5,
                    60)
    assert set(h.where("web")) == {w1.name, w2.name}, h.where("web")  # never the manager
    h.node.docker("service", "scale", "--detach", f"{h.prefix}web_web=3")
    swarms.wait_for("back to 3 replicas", lambda: sum(h.where("web").values()) == 3, 60)
    both = h.labels(w1)
    assert both == h.labels(w2) and len(both) == 1 and label not in both, (both, label)

    # worker 1 leaves the set: its tasks move, its label goes
    h.repo.remove(f"hosts/{w1.name}")
    h.repo.commit("web off worker 1")
    third = h.apply()
    assert "web: updated on the swarm" in third.stdout, third.stdout
    assert h.where("web") == {w2.name: 3}
    assert h.labels(w1) == {} and len(h.labels(w2)) == 1 and h.labels(w2) != both

    # a stack placed only on a node the swarm does not have fails; the others deploy
    h.repo.write("stacks/lost/compose.yml", compose(1))
    h.repo.write("hosts/node-9/stacks/lost/.gitkeep", "")
    h.repo.write("stacks/other/compose.yml", compose(1))
    h.repo.write_env("env/lost.env", {"GREETING": "hello"})
    h.repo.write_env("env/other.env", {"GREETING": "hello"})
    h.repo.commit("lost and other")
    fourth = h.apply(expect=1)
    assert ("lost: failed (hosts/node-9/stacks/lost places lost on node-9, which is not a node "
            f"of this swarm (nodes: {', '.join(sorted(n.name for n in three.nodes))})"
            ) in fourth.stdout, fourth.stdout
    assert "other: created on the swarm" in fourth.stdout, fourth.stdout
    assert f"{h.prefix}lost_web" not in h.node.docker("service", "ls", "--format",
                                                      "{{.Name}}").stdout
    assert h.where("web") == {w2.name: 3}

    # fixed (the stack goes); then an idle run asks the swarm one question, reads no node
    h.repo.remove("stacks/lost")
    h.repo.remove("hosts/node-9/stacks/lost")
    h.repo.remove("env/lost.env")
    h.repo.commit("drop lost")
    h.apply()
    idle = h.apply("-v")
    assert "nothing to do" in idle.stdout, idle.stdout
    asked = [line for line in idle.stdout.splitlines() + idle.stderr.splitlines()
             if line.startswith("$ ") and ("GET unix://" in line or "docker" in line)]
    swarm_asked = [q for q in asked if "/services?" in q or "/nodes" in q
                   or "docker stack" in q or "docker service" in q or "docker node" in q]
    assert len(swarm_asked) == 1 and "/services?status=true" in swarm_asked[0], asked
    print(f"idle run with placed stacks: {len(asked)} engine question(s): {asked}")


def test_a_failed_move_is_rolled_back_onto_the_old_nodes(mhost: NodeHost,
                                                         three: swarms.Swarm) -> None:
    h = mhost
    _, w1, w2 = three.nodes
    h.repo.write("stacks/web/compose.yml", compose(2))
    h.repo.write_env("env/web.env", {"GREETING": "hello"})
    h.repo.write(f"hosts/{w1.name}/stacks/web/.gitkeep", "")
    h.repo.commit("web on worker 1")
    assert "web: created on the swarm" in h.apply().stdout
    old = h.labels(w1)
    assert len(old) == 1 and h.where("web") == {w1.name: 2}

    # a crashing revision that also moves to worker 2: the gate fails, the last healthy stack
    # file (the old constraint) comes back on worker 1, whose label was kept; the failed
    # revision's label leaves worker 2 once the rollback converged
    h.repo.remove(f"hosts/{w1.name}")
    h.repo.write(f"hosts/{w2.name}/stacks/web/.gitkeep", "")
    h.repo.write("stacks/web/compose.yml", compose(2, "\n      APP_FAIL: exit"))
    h.repo.commit("move and crash")
    bad = h.apply(expect=1)
    assert "web: rolled back to" in bad.stdout, bad.stdout
    swarms.wait_for("the old tasks on worker 1", lambda: h.where("web") == {w1.name: 2}, 60)
    assert h.labels(w1) == old and h.labels(w2) == {}, (h.labels(w1), h.labels(w2))
