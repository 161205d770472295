"""Issue 16's operations on swarm stacks: the follower's record, its reasons, status and
metrics (pure parts and the state transitions; the real swarms: tests/e2e/test_swarm_ops.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from vigo.core import reasons
from vigo.core import swarm as core
from vigo.core.model import CREATE, KEEP, UPDATE, DesiredState, Stack, StackResult
from vigo.host import record, state, status
from vigo.host.engines import swarm as engine


class FakeApi:
    """The engine reads leader() makes, answered from a table."""

    def __init__(self, local: str = "active", control: bool = True, leader: bool = False
                 ) -> None:
        self.local, self.control, self.is_leader = local, control, leader

    def info(self) -> dict[str, Any]:
        return {"Swarm": {"LocalNodeState": self.local, "ControlAvailable": self.control,
                          "NodeID": "me"}}

    def node(self, node_id: str) -> dict[str, Any]:
        return {"ManagerStatus": {"Leader": self.is_leader}}

    def nodes(self) -> list[dict[str, Any]]:
        return [{"ID": "L", "Description": {"Hostname": "node-1"},
                 "ManagerStatus": {"Leader": True}}]


@pytest.mark.parametrize(("api", "ok", "reason", "text"), [
    (FakeApi(), True, reasons.NOT_LEADER, "not the leader (the swarm leader node-1 applies)"),
    (FakeApi(control=False), False, reasons.NOT_MANAGER, "this node is a swarm worker"),
    (FakeApi(local="inactive"), False, reasons.NOT_MANAGER, "not part of an active swarm"),
])
def test_a_node_that_does_not_apply_names_why(api: FakeApi, ok: bool, reason: str,
                                              text: str) -> None:
    why, follower = engine.leader_state(api)  # type: ignore[arg-type]
    result = engine.not_leader("app", UPDATE, follower, f"app: not applied ({why})")
    assert (result.ok, result.reason) == (ok, reason) and text in result.message
    assert result.reason in reasons.STACK and (result.reason in reasons.OK) == ok
    assert engine.leader_state(FakeApi(leader=True)) == ("", False)  # type: ignore[arg-type]


def test_exit_codes_of_the_reasons_that_do_not_apply() -> None:
    assert reasons.exit_code(reasons.NOT_LEADER) == 0
    assert "not the leader" in reasons.exit_codes_help()


def _desired(stack_hash: str = "h2") -> DesiredState:
    return DesiredState(revision="r2" * 20, host="n2", files={}, env_files={}, stacks=(Stack(
        name="app", compose_file="stacks/app/compose.yml", files=(), env_files=(),
        interpolation_env=(), digests={}, hash=stack_hash),))


def test_a_follower_records_what_it_did_not_do() -> None:
    st = state.RunRecord.of({"version": state.VERSION, "stacks": {}, "env": {},
                             "revision_applied": "r1"})
    rec = st.record("app")
    rec.mark_applied("h1", {}, "r1", "2026-01-01T00:00:00+00:00", {"x_app_web": "c1"}, {})
    rec.mark_checked(True, "app: updated", reasons.APPLIED, "2026-01-01T00:00:00+00:00", "r1")
    result = engine.not_leader("app", KEEP, True, "app: not applied (not the leader (the "
                               "swarm leader node-1 applies))")
    record.write(_desired(), {"app": result}, st, {}, 3, str)
    rec = st.record("app")
    assert (rec.hash, rec.revision, rec.containers) == ("h1", "r1", {"x_app_web": "c1"})
    assert rec.outcome == state.NOT_APPLIED and rec.not_applied and not rec.failing
    assert rec.code == reasons.NOT_LEADER and "node-1 applies" in rec.reason
    assert st.revision_applied == "r1"
    # the next run on a leader: the record still differs from the tree, so it deploys
    assert rec.hash != _desired().stacks[0].hash


def test_a_worker_fails_its_swarm_stacks_named() -> None:
    st = state.RunRecord.of({"version": state.VERSION, "stacks": {}, "env": {}})
    result = engine.not_leader("app", CREATE, False, "app: not applied (this node is a swarm "
                               "worker; vigo runs on the managers (docs/swarm.md))")
    record.write(_desired(), {"app": result}, st, {}, 3, str)
    rec = st.record("app")
    assert rec.failing and rec.code == reasons.NOT_MANAGER and not rec.hash


def test_status_says_a_stack_was_left_to_the_leader() -> None:
    data: dict[str, Any] = {
        "host": "n2", "now": "2026-01-01T00:01:00+00:00", "suspended": None, "running": None,
        "last_run": {"started": "2026-01-01T00:00:59+00:00",
                     "finished": "2026-01-01T00:01:00+00:00", "duration": 1.0,
                     "exit_code": 0, "result": "ok", "reason": reasons.NOT_LEADER,
                     "error": "not applied on this node: app (the swarm's leader applies)"},
        "consecutive_failures": 0, "revision": {"applied": "", "fetched": "r2" * 20,
                                                "attempted": "r2" * 20},
        "stacks": [{"stack": "app", "state": "running", "outcome": state.NOT_APPLIED,
                    "code": reasons.NOT_LEADER, "reason": "app: not applied (not the leader "
                    "(the swarm leader node-1 applies))", "revision": "", "applied_at": "",
                    "failing": False, "last_failure": None, "containers": [], "jobs": []}],
        "swarm": ["", "swarm services (not the leader (the swarm leader node-1 applies)):",
                  "  app/web (swarm): 3/3 running, on node-1, node-2, node-3"],
        "docker_error": "", "warning": ""}
    text = "\n".join(status.to_text(data, datetime(2026, 1, 1, 0, 1, tzinfo=UTC)))
    assert "  not applied here: [NotLeader] not the leader (the swarm leader node-1 applies)" \
        in text, text
    assert "the swarm leader node-1 applies)):" in text
    assert "revision   applied -" in text


def test_a_not_leader_result_is_fine_but_not_applied() -> None:
    result = StackResult("app", KEEP, True, "app: not applied", reason=reasons.NOT_LEADER)
    assert result.reason in reasons.NOT_APPLIED and result.reason in reasons.OK


def test_the_secrets_a_rollback_keeps() -> None:
    doc = {"services": {}, "secrets": {"db": {"external": True, "name": "x_app_db_11111111"}}}
    rows = [{"Spec": {"TaskTemplate": {"ContainerSpec": {"Secrets": [
        {"SecretName": "x_app_tls_22222222", "SecretID": "s2"}]}}}}, {"Spec": {}}]
    assert engine.used_secrets(doc, rows) == {"x_app_db_11111111", "x_app_tls_22222222"}
    assert engine.used_secrets({"services": {}}, []) == set()


# -- global services and jobs ------------------------------------------------------------------

def _global(desired: int | None, name: str = "g") -> dict[str, Any]:
    row: dict[str, Any] = {"ID": name + "-id", "Spec": {"Name": name, "Mode": {"Global": {}}}}
    if desired is not None:
        row["ServiceStatus"] = {"RunningTasks": 0, "DesiredTasks": desired}
    return row


def _task(state: str, node: str) -> dict[str, Any]:
    return {"ServiceID": "g-id", "DesiredState": "running", "NodeID": node,
            "Status": {"State": state, "Timestamp": "2026-01-01T00:00:05Z"}}


@pytest.mark.parametrize(("row", "nodes", "want"), [
    ({"Spec": {"Mode": {"Replicated": {"Replicas": 3}}}}, 5, 3),
    (_global(2), 5, 2),  # the swarm's count (placement, nodes up) wins over the node count
    (_global(None), 4, 4),  # an answer without ServiceStatus: the ready nodes
    (_global(0), 4, 0),
])
def test_the_tasks_a_service_wants(row: dict[str, Any], nodes: int, want: int) -> None:
    assert core.wanted_tasks(row, nodes) == want


@pytest.mark.parametrize(("desired", "tasks", "want"), [
    (3, [_task("running", "n1"), _task("running", "n2"), _task("running", "n3")], core.OK),
    (3, [_task("running", "n1"), _task("starting", "n2"), _task("running", "n3")], core.WAIT),
    (2, [_task("running", "n1"), _task("running", "n2")], core.OK),  # 4 nodes, 2 eligible
    (0, [], core.WAIT),  # nothing placed yet: not done
])
def test_a_global_service_waits_for_the_swarm_desired_count(desired: int, tasks: list,
                                                             want: str) -> None:
    verdict = core.verdict([_global(desired)], tasks, {}, "2026-01-01T00:00:00Z", nodes=4)
    assert verdict.status == want, verdict


def test_job_modes_are_refused() -> None:
    model = {"services": {"migrate": {"image": "x", "deploy": {"mode": "replicated-job"}},
                          "web": {"image": "y", "deploy": {"mode": "global"}}}}
    assert core.job_services(model["services"]) == ["migrate"]
    assert "migrate: deploy.mode replicated-job / global-job is not supported" in \
        core.job_problem(model)
    assert core.job_problem({"services": {"web": {"deploy": {"mode": "global"}}}}) == ""


def test_vigo_check_refuses_a_swarm_job(tmp_path) -> None:
    from vigo.core import lint

    (tmp_path / "stacks" / "web").mkdir(parents=True)
    (tmp_path / "stacks/web/compose.yml").write_text(
        "x-vigo: {engine: swarm}\nservices:\n  once:\n    image: ghcr.io/x/web:sha-1a2b3c4\n"
        "    deploy: {mode: global-job}\n")
    found = [f for f in lint.lint_tree(tmp_path) if f.rule == core.JOB_RULE]
    assert [(f.severity, f.line) for f in found] == [(lint.ERROR, 5)], found
    assert "global-job" in found[0].message and "keeps running" in found[0].fix


# -- metrics ------------------------------------------------------------------------------------

def test_the_metrics_of_swarm_services() -> None:
    from vigo.host import metrics

    snap = metrics.Snapshot(1.0, True, 1.0, "r", 0, {"app": (True, False)}, services=(
        metrics.ServiceSample("app", "web", 2, 3, "completed", 1),
        metrics.ServiceSample("app", "g\"x", 4, 4, "")))
    text = metrics.render(snap)
    assert 'vigo_swarm_service_running_replicas{stack="app",service="web"} 2' in text
    assert 'vigo_swarm_service_desired_replicas{stack="app",service="web"} 3' in text
    assert 'vigo_swarm_service_update_state{stack="app",service="web",state="completed"} 1' in text
    assert 'vigo_swarm_service_update_state{stack="app",service="web",state="paused"} 0' in text
    assert 'vigo_swarm_service_update_state{stack="app",service="g\\"x",state="none"} 1' in text
    assert 'vigo_swarm_service_nodes_down{stack="app",service="web"} 1' in text
    for name in ("running_replicas", "desired_replicas", "update_state", "nodes_down"):
        assert f"# TYPE vigo_swarm_service_{name} gauge" in text
    odd = metrics.render(metrics.Snapshot(1.0, True, 1.0, "r", 0, {}, services=(
        metrics.ServiceSample("a", "b", 1, 1, "rolling_sideways"),)))
    assert 'state="rolling_sideways"} 1' in odd and 'state="none"} 0' in odd
    assert "vigo_swarm" not in metrics.render(metrics.Snapshot(1.0, True, 1.0, "r", 0, {}))


def test_a_swarm_stack_is_up_when_every_service_runs_what_it_wants() -> None:
    from vigo.host import hooks, metrics

    st = state.RunRecord.of({"version": state.VERSION, "stacks": {"app": {}, "db": {}},
                             "env": {}})
    snap = hooks._snapshot(st, 1.0, True, 1.0, (), services=(
        metrics.ServiceSample("app", "web", 3, 3), metrics.ServiceSample("app", "w2", 1, 1),
        metrics.ServiceSample("db", "db", 0, 1)))
    assert snap.stacks == {"app": (True, False), "db": (False, False)}


# -- the engine's endpoint: its unix socket, or the docker CLI's dial-stdio -----------------------

@pytest.mark.parametrize(("env", "config", "where"), [
    ({}, None, "unix:///var/run/docker.sock"),
    ({"DOCKER_HOST": "unix:///run/n1/docker.sock"}, None, "unix:///run/n1/docker.sock"),
    ({"DOCKER_HOST": "tcp://10.0.0.11:2376"}, None,
     "docker system dial-stdio (DOCKER_HOST=tcp://...)"),
    ({"DOCKER_HOST": "ssh://ops@m1"}, None, "docker system dial-stdio (DOCKER_HOST=ssh://...)"),
    ({"DOCKER_HOST": "unix://relative.sock"}, None,
     "docker system dial-stdio (DOCKER_HOST=unix://...)"),
    ({"DOCKER_CONTEXT": "m1"}, None, "docker system dial-stdio (docker context m1)"),
    ({"DOCKER_CONTEXT": "default"}, None, "unix:///var/run/docker.sock"),
    ({}, '{"currentContext": "m1"}', "docker system dial-stdio (the docker CLI's current "
     "context)"),
    ({}, '{"currentContext": "default"}', "unix:///var/run/docker.sock"),
    ({"DOCKER_HOST": "tcp://h:2375", "DOCKER_CONTEXT": "m1"}, None,
     "docker system dial-stdio (DOCKER_HOST=tcp://...)"),  # DOCKER_HOST wins, as in the CLI
])
def test_the_endpoint_of_the_engine_reads(env: dict[str, str], config: str | None,
                                          where: str) -> None:
    from vigo.adapters import engine as api

    assert api.endpoint(env, config) == where


def test_the_swarm_reads_go_through_dial_stdio_for_another_endpoint() -> None:
    from tests.support.recording import RecordingRunner
    from vigo.adapters import swarm as adapter
    from vigo.adapters.compose import Compose

    info = '{"Swarm": {"LocalNodeState": "active", "ControlAvailable": true, "NodeID": "n"}}'
    runner = RecordingRunner().on("dial-stdio", stdout=f"HTTP/1.0 200 OK\r\n\r\n{info}")
    compose = Compose(runner)
    compose._socket = ""
    api = adapter.Swarm(runner, compose)
    assert api.info()["Swarm"]["NodeID"] == "n"
    assert runner.argvs == [("docker", "system", "dial-stdio")]
    assert (runner.calls[0].stdin or "").startswith("GET /info HTTP/1.0\r\n")
