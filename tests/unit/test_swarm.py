"""The pure parts of the Swarm engine: stack file, secret names, check rules, the verdict from
UpdateStatus and tasks, and the adapter's exact argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigo.adapters import swarm as adapter
from vigo.core import swarm, xvigo

MODEL = {
    "name": "t-web",
    "networks": {"default": {"name": "t-web_default", "ipam": {}}},
    "services": {
        "web": {
            "command": None, "entrypoint": None, "image": "ghcr.io/x/web:sha-1a2b3c4",
            "container_name": "web", "restart": "unless-stopped",
            "depends_on": {"db": {"condition": "service_healthy", "required": True}},
            "environment": {"A": "1"}, "networks": {"default": None},
            "ports": [{"mode": "host", "target": 80, "published": "8081", "protocol": "tcp"}],
            "secrets": [{"source": "token"}],
        },
        "db": {"image": "ghcr.io/x/db:sha-5d6e7f8",
               "deploy": {"update_config": {"order": "stop-first", "monitor": "30s"},
                          "restart_policy": {"condition": "on-failure"}},
               "volumes": [{"type": "volume", "source": "data", "target": "/d", "volume": {}}]},
    },
    "volumes": {"data": {"name": "t-web_data"}},
    "secrets": {"token": {"environment": "TOKEN"}, "unused": {"file": "/x"}},
}


def test_stack_file_drops_what_swarm_refuses_and_adds_safe_defaults() -> None:
    doc = swarm.stack_file(MODEL, "t-web", "web", "t-", {"token": "t-web_token_0123abcd"})
    web, db = doc["services"]["web"], doc["services"]["db"]
    assert "container_name" not in web and "depends_on" not in web and "restart" not in web
    assert "command" not in web and "name" not in doc
    assert web["ports"] == [{"mode": "host", "target": 80, "published": 8081, "protocol": "tcp"}]
    # a host-mode port: start-first would wait for a free node forever
    assert web["deploy"]["update_config"]["order"] == "stop-first"
    assert web["deploy"]["update_config"]["failure_action"] == "rollback"
    assert web["deploy"]["restart_policy"] == {"condition": "any"}
    assert db["deploy"]["update_config"] == {**swarm.UPDATE_DEFAULTS, "order": "stop-first",
                                             "monitor": "30s"}
    assert db["deploy"]["rollback_config"]["order"] == "start-first"
    assert db["deploy"]["restart_policy"] == {"condition": "on-failure"}
    assert doc["secrets"] == {"token": {"external": True, "name": "t-web_token_0123abcd"}}
    assert doc["networks"] == {"default": {"driver": "overlay"}}
    assert doc["volumes"] == {"data": None}
    labels = web["deploy"]["labels"]
    assert labels["io.vigo.stack"] == "web" and labels["io.vigo.instance"] == "t-"
    assert labels[swarm.LABEL_HASH] == db["deploy"]["labels"][swarm.LABEL_HASH]


def test_hashes_are_stable_and_follow_what_changes() -> None:
    a = swarm.stack_file(MODEL, "t-web", "web", "t-", {"token": "t-web_token_0123abcd"})
    b = swarm.stack_file(MODEL, "t-web", "web", "t-", {"token": "t-web_token_0123abcd"})
    c = swarm.stack_file(MODEL, "t-web", "web", "t-", {"token": "t-web_token_99999999"})
    h = swarm.LABEL_SERVICE_HASH
    assert a == b
    assert a["services"]["web"]["deploy"]["labels"][h] != c["services"]["web"]["deploy"][
        "labels"][h]  # a rotated secret is an update of the services that use it
    assert a["services"]["db"]["deploy"]["labels"][h] == c["services"]["db"]["deploy"][
        "labels"][h]  # ... and of no other


def test_secret_names_by_content() -> None:
    one = swarm.secret_name("t-web", "token", b"a")
    assert one.startswith("t-web_token_") and len(one.rsplit("_", 1)[1]) == 8
    assert one == swarm.secret_name("t-web", "token", b"a")
    assert one != swarm.secret_name("t-web", "token", b"b")
    assert len(swarm.secret_name("x" * 80, "k" * 80, b"a")) <= 64
    assert swarm.secret_sources(MODEL) == {"token": ("environment", "TOKEN")}


def test_check_names_the_keys_swarm_ignores() -> None:
    found = {(i.service, i.key) for i in swarm.check(MODEL["services"])}
    assert ("web", "container_name") in found and ("web", "depends_on") in found
    assert ("db", "container_name") not in found
    built = swarm.check({"a": {"build": "."}, "b": {"build": ".", "image": "x"}})
    assert [i.message.startswith("Swarm does not build") for i in built] == [True, True]
    bad = swarm.check({"a": {"ports": [{"mode": "host", "target": 80}],
                             "deploy": {"update_config": {"order": "start-first"}}}})
    assert bad[0].key == "deploy.update_config.order"


def svc(name: str, state: str = "", started: str = "", replicas: int = 1) -> dict:
    return {"ID": name + "-id", "Spec": {"Name": name, "Mode": {"Replicated": {
        "Replicas": replicas}}}, **({"UpdateStatus": {"State": state, "StartedAt": started,
                                                      "Message": "update rolled back"}}
                                    if state else {})}


def task(service: str, state: str, desired: str = "running", ts: str = "2026-01-01T00:00:05Z",
         err: str = "") -> dict:
    return {"ServiceID": service + "-id", "DesiredState": desired,
            "Status": {"State": state, "Timestamp": ts, "Err": err,
                       "ContainerStatus": {"ExitCode": 1 if err else 0}}}


SINCE = "2026-01-01T00:00:00Z"


@pytest.mark.parametrize(("services", "tasks", "marks", "want"), [
    ([svc("a")], [task("a", "running")], {}, swarm.OK),  # a new service, healthy
    ([svc("a")], [task("a", "starting")], {}, swarm.WAIT),  # healthcheck not passed yet
    ([svc("a", replicas=2)], [task("a", "running")], {}, swarm.WAIT),
    ([svc("a", "updating", "t1")], [task("a", "running")], {"a": "t0"}, swarm.WAIT),
    ([svc("a", "completed", "t1")], [task("a", "running")], {"a": "t0"}, swarm.OK),
    # an old "completed" is not this deploy's; no update started: the tasks decide
    ([svc("a", "completed", "t0")], [task("a", "running")], {"a": "t0"}, swarm.OK),
    ([svc("a", "rollback_completed", "t1")], [task("a", "running")], {"a": "t0"}, swarm.FAIL),
    ([svc("a", "paused", "t1")], [task("a", "running")], {"a": "t0"}, swarm.FAIL),
    ([svc("a", "rollback_completed", "t0")], [task("a", "running")], {"a": "t0"}, swarm.OK),
    ([svc("a")], [task("a", "failed", "shutdown", err="boom")] * 3 + [task("a", "starting")],
     {}, swarm.FAIL),  # tasks that keep failing
    ([svc("a")], [task("a", "failed", "shutdown", ts="2025-01-01T00:00:00Z")] * 3
     + [task("a", "running")], {}, swarm.OK),  # failures of before the deploy
])
def test_verdict(services, tasks, marks, want) -> None:
    assert swarm.verdict(services, tasks, marks, SINCE).status == want


def test_an_update_that_has_not_started_is_waited_for() -> None:
    # right after `docker stack deploy` the old task still runs and no UpdateStatus is new
    old = [task("a", "running")]
    assert swarm.verdict([svc("a")], old, {"a": ""}, SINCE, updating={"a"}).status == swarm.WAIT
    assert swarm.verdict([svc("a", "updating", "t1")], old, {"a": ""}, SINCE,
                         updating={"a"}).status == swarm.WAIT
    assert swarm.verdict([svc("a", "completed", "t1")], old, {"a": ""}, SINCE,
                         updating={"a"}).status == swarm.OK
    assert swarm.verdict([svc("a", "rollback_started", "t1")], old, {"a": ""}, SINCE
                         ).status == swarm.WAIT
    a = {"Spec": {"TaskTemplate": {"ContainerSpec": {"Image": "x:1"}}, "Labels": {"l": "1"}}}
    b = {"Spec": {"TaskTemplate": {"ContainerSpec": {"Image": "x:2"}}, "Labels": {"l": "1"}}}
    c = {"Spec": {"TaskTemplate": {"ContainerSpec": {"Image": "x:1"}}, "Labels": {"l": "2"}}}
    assert swarm.changed(a, b) and not swarm.changed(a, c)


def test_verdict_reasons_name_the_service() -> None:
    v = swarm.verdict([svc("a", "rollback_completed", "t1")], [], {"a": "t0"}, SINCE)
    assert v.reason == "a: Swarm stopped the update (rollback_completed: update rolled back)"
    v = swarm.verdict([svc("a", "rollback_completed", "t1")],
                      [task("a", "failed", "shutdown", err="boom")], {"a": "t0"}, SINCE)
    assert v.reason.endswith("update rolled back); last failed task: boom, exit code 1")
    v = swarm.verdict([svc("a")], [task("a", "failed", "shutdown", err="boom")] * 3, {}, SINCE)
    assert v.reason.startswith("a: 3 tasks failed since the deploy (last: boom, exit code 1")


def test_services_parse_and_status_lines() -> None:
    rows = [{"ID": "s1", "Spec": {"Name": "t-web_web", "Labels": {
        "io.vigo.stack": "web", "io.vigo.instance": "t-", swarm.SWARM_NAMESPACE: "t-web",
        swarm.LABEL_SERVICE_HASH: "abc"}, "TaskTemplate": {"ContainerSpec": {
            "Image": "ghcr.io/x/web:sha-1a2b3c4@sha256:" + "0" * 64}}},
        "ServiceStatus": {"RunningTasks": 2, "DesiredTasks": 3},
        "UpdateStatus": {"State": "updating"}}]
    (s,) = swarm.parse_services(rows)
    assert (s.service, s.image, s.config_hash, s.running, s.desired) == (
        "web", "ghcr.io/x/web:sha-1a2b3c4", "abc", 2, 3)
    assert swarm.status_lines([s], {"s1": ["n2", "n1"]}) == [
        "  web/web (swarm): 2/3 running, update updating, on n1, n2"]
    assert swarm.status_lines([s], {"s1": ["n1"]}, {"s1": ["n4"]}) == [
        "  web/web (swarm): 1/3 running, update updating, on n1; node(s) down: n4"]


def test_xvigo_engine() -> None:
    assert xvigo.parse({"engine": "swarm"})[0].engine == "swarm"
    assert xvigo.parse({})[0].engine == ""
    (problem,) = xvigo.parse({"engine": "nomad"})[1]
    assert problem.key == "x-vigo.engine"


def test_adapter_argv() -> None:
    assert adapter.deploy_argv("t-web", Path("/run/vigo/swarm/t-web.swarm.json")) == [
        "docker", "stack", "deploy", "--prune", "--with-registry-auth", "--detach=true",
        "--resolve-image", "never", "--compose-file", "/run/vigo/swarm/t-web.swarm.json",
        "t-web"]
    assert adapter.secret_create_argv("t-web_k_0123abcd", {"b": "2", "a": "1"}) == [
        "docker", "secret", "create", "--label", "a=1", "--label", "b=2", "t-web_k_0123abcd",
        "-"]
    assert adapter.query("/services", {"label": ["a=b"]}, status="true") == (
        "/services?status=true&filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D")


def test_vigo_check_warns_of_keys_swarm_ignores(tmp_path: Path) -> None:
    from vigo.core import lint

    (tmp_path / "stacks" / "web").mkdir(parents=True)
    text = ("x-vigo: {engine: swarm}\nservices:\n  web:\n    image: ghcr.io/x/web:sha-1a2b3c4\n"
            "    container_name: web\n")
    (tmp_path / "stacks/web/compose.yml").write_text(text)
    found = [f for f in lint.lint_tree(tmp_path) if f.rule == swarm.RULE]
    assert [(f.severity, f.line) for f in found] == [(lint.WARNING, 5)]
    assert "container_name" in found[0].message and found[0].fix.endswith(".")
    (tmp_path / "stacks/web/compose.yml").write_text(text.replace("engine: swarm", "after: []"))
    assert not [f for f in lint.lint_tree(tmp_path) if f.rule == swarm.RULE]


def test_a_task_swarm_finds_no_node_for_is_a_failed_gate_after_a_while() -> None:
    # start-first with max_replicas_per_node and no spare node: Swarm retries forever
    err = "no suitable node (max replicas per node limit exceed)"
    spec = svc("a", "updating", "t1", replicas=2)
    spec["Spec"].update({"UpdateConfig": {"Order": "start-first"},
                         "TaskTemplate": {"Placement": {"MaxReplicas": 1}}})
    pending = {**task("a", "pending", err=err), "CreatedAt": "2026-01-01T00:00:01.5Z"}
    tasks = [task("a", "running"), task("a", "running"), pending]
    soon = swarm.verdict([spec], tasks, {"a": "t0"}, SINCE, now="2026-01-01T00:00:20Z")
    assert soon.status == swarm.WAIT
    late = swarm.verdict([spec], tasks, {"a": "t0"}, SINCE,
                         now="2026-01-01T00:00:31.600000Z")
    assert late.status == swarm.FAIL
    assert late.reason.startswith("a: Swarm has found no node for a new task for 30s (" + err)
    assert "order: stop-first" in late.reason
    # a task pending since before the deploy is not this deploy's; nor one with no Err yet
    old = {**pending, "CreatedAt": "2025-12-31T23:59:00Z"}
    assert swarm.verdict([spec], [old], {"a": "t0"}, SINCE,
                         now="2026-01-01T00:05:00Z").status == swarm.WAIT
    quiet = {**pending, "Status": {"State": "pending", "Timestamp": SINCE}}
    assert swarm.verdict([spec], [quiet], {"a": "t0"}, SINCE,
                         now="2026-01-01T00:05:00Z").status == swarm.WAIT
    # a constraint no node meets: the other fix
    plain = svc("b", replicas=1)
    stuck = {**task("b", "pending", err="no suitable node (scheduling constraints not "
                    "satisfied on 3 nodes)"), "CreatedAt": "2026-01-01T00:00:02.123456789Z"}
    v = swarm.verdict([plain], [stuck], {}, SINCE, now="2026-01-01T00:01:00Z")
    assert v.status == swarm.FAIL and "change the placement" in v.reason
    assert swarm.verdict([plain], [stuck], {}, SINCE, now="not a time").status == swarm.WAIT
