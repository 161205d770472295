"""Table-driven tests of vigo.core.plan: (record, observed containers, resolved, failures) in,
one Action (kind and reasons) per stack out."""

import pytest

from vigo.core.model import (
    CREATE,
    FAIL,
    KEEP,
    REMOVE,
    UNCHANGED,
    UPDATE,
    Action,
    Container,
    DesiredState,
    Observed,
    Options,
    Plan,
    Resolved,
    Stack,
)
from vigo.core.plan import conflict, needs_resolve, phases, plan
from vigo.core.records import replace

A, B = "ghcr.io/org/app:sha-a", "ghcr.io/org/app:sha-b"
COMPOSE = "stacks/app/docker-compose.yml"
DIGESTS = {COMPOSE: "d2", "stacks/app/app.ini": "i1", "env/app.env": "e1"}


def stack(name: str = "app", problems: tuple[str, ...] = ()) -> Stack:
    return Stack(name=name, compose_file=f"stacks/{name}/docker-compose.yml", files=(),
                 env_files=(), interpolation_env=(), digests=DIGESTS if name == "app" else {},
                 hash=f"{name}-h2", problems=problems)


def desired(*stacks: Stack) -> DesiredState:
    return DesiredState(revision="0123456789abcdef", host="web-1", files={}, env_files={},
                        stacks=stacks)


def ctr(service: str = "web", state: str = "running", image: str = A, cfg: str = "cfg1",
        name: str = "", stack: str = "app") -> Container:
    return Container(id=service, name=name or f"{stack}-{service}-1", stack=stack, instance="",
                     project=stack, service=service, state=state, status="Up", image=image,
                     config_hash=cfg)


def record(hash: str = "app-h2", digests: dict | None = None, **containers: str) -> dict:
    return {"hash": hash, "digests": DIGESTS if digests is None else digests,
            "containers": {f"app-{s}-1": cfg for s, cfg in (containers or {"web": "cfg1"}).items()}}


OLD = record("app-h1", {**DIGESTS, COMPOSE: "d1"})  # the compose file changed since
BOTH = {"web": "cfg1", "worker": "cfg1"}
WEB, WORKER = ctr(), ctr("worker")


@pytest.mark.parametrize("rec, containers, resolved, failures, kind, reasons", [
    pytest.param(None, (), Resolved({"web": B}), {}, CREATE, ("new stack",), id="new-stack"),
    pytest.param({"outcome": "failed"}, (), Resolved({"web": B}), {}, CREATE, (),
                 id="create-again-after-a-failed-create"),
    pytest.param(record(), (WEB,), None, {}, UNCHANGED, (), id="unchanged"),
    pytest.param(OLD, (WEB,), Resolved({"web": B}), {}, UPDATE, ("image sha-a -> sha-b",),
                 id="image-change"),
    pytest.param(OLD, (ctr(image="nginx:1.25"),), Resolved({"web": B}), {}, UPDATE,
                 (f"image nginx:1.25 -> {B}",), id="image-from-another-repository"),
    pytest.param(record("app-h1", {**DIGESTS, COMPOSE: "d1"}, **BOTH), (WEB, WORKER),
                 Resolved({"web": B, "worker": B}), {}, UPDATE,
                 ("web: image sha-a -> sha-b", "worker: image sha-a -> sha-b"),
                 id="multi-service-prefixed"),
    pytest.param(OLD, (WEB,), Resolved({"web": A, "worker": A}), {}, UPDATE,
                 ("worker: new service",), id="new-service"),
    pytest.param(OLD, (WEB,), Resolved({"web": A, "worker": A}, replicas={"worker": 0}), {},
                 UPDATE, (f"{COMPOSE} changed",), id="a-service-scaled-to-0-is-no-new-service"),
    pytest.param(record(web="cfg1", init="cfg1") | {"completed": {"app-init-1": "cfg1"}},
                 (WEB, replace(ctr("init", state="exited"), status="Exited (0) 1 hour ago")),
                 Resolved({"web": A, "init": A}), {}, UPDATE, ("converge",),
                 id="a-completed-one-shot-is-no-drift"),
    pytest.param(record("app-h1", {**DIGESTS, COMPOSE: "d1"}, **BOTH), (WEB, WORKER),
                 Resolved({"web": A}), {}, UPDATE, ("service worker removed",),
                 id="service-removed"),
    pytest.param(OLD, (WEB,), Resolved({"web": A}), {}, UPDATE, (f"{COMPOSE} changed",),
                 id="compose-changed-same-images"),
    pytest.param(record("app-h1", {**DIGESTS, "env/app.env": "e0"}), (WEB,), Resolved({"web": A}),
                 {}, UPDATE, ("secrets in env/app.env changed",), id="env-digest-change"),
    pytest.param(record("app-h1", {COMPOSE: "d2", "env/app.env": "e1", "stacks/app/old.ini": "o"}),
                 (WEB,), Resolved({"web": A}), {}, UPDATE,
                 ("stacks/app/app.ini added", "stacks/app/old.ini removed"),
                 id="files-added-and-removed"),
    pytest.param(record("app-h1"), (WEB,), Resolved({"web": A}), {}, UPDATE,
                 ("vigo's rendering changed",), id="same-files-other-hash"),
    pytest.param(None, (WEB,), Resolved({"web": A}), {}, UPDATE,
                 ("no record of the last apply",), id="state-lost-containers-run"),
    pytest.param(record(), (), Resolved({"web": A}), {}, UPDATE,
                 ("container app-web-1 was removed",), id="drift-all-removed"),
    pytest.param(record(**BOTH), (WEB,), Resolved({"web": A, "worker": A}), {}, UPDATE,
                 ("container app-worker-1 was removed",), id="drift-one-removed"),
    pytest.param(record(), (ctr(state="exited"),), Resolved({"web": A}), {}, UPDATE,
                 ("container app-web-1 is exited",), id="drift-exited"),
    pytest.param(record(), (ctr(cfg="cfg2"),), Resolved({"web": A}), {}, UPDATE,
                 ("container app-web-1 was recreated with another configuration",),
                 id="drift-recreated"),
    pytest.param(record(), (WEB, ctr("debug")), Resolved({"web": A}), {}, UPDATE,
                 ("container app-debug-1 was not started by vigo",), id="drift-unknown-extra"),
    pytest.param(record(), (WEB,), Resolved({"web": A}), {}, UPDATE, ("converge",),
                 id="resolved-but-nothing-differs"),
    pytest.param(OLD, (WEB,), Resolved({"web": B}), {"app": "env/app.env: cannot decrypt"}, FAIL,
                 ("env/app.env: cannot decrypt",), id="failure-before-planning"),
    pytest.param(OLD, (WEB,), Resolved({}, error=f"{COMPOSE} is not valid: boom"), {}, FAIL,
                 (f"{COMPOSE} is not valid: boom",), id="compose-config-error"),
])
def test_one_stack(rec, containers, resolved, failures, kind, reasons):
    records = {} if rec is None else {"app": rec}
    res = {} if resolved is None else {"app": resolved}
    result = plan(desired(stack()), Observed(containers), records, res, failures)
    assert result.actions == (Action("app", kind, reasons),)
    assert result.refusal == ""


def test_problems_come_first_then_failures_then_compose_errors():
    result = plan(desired(stack(problems=("p1", "p2"))), Observed(()), {},
                  {"app": Resolved({}, error="e")}, {"app": "f"})
    assert result.actions == (Action("app", FAIL, ("p1", "p2", "f", "e")),)


@pytest.mark.parametrize("options, reasons", [
    (Options(), ("converge",)),
    (Options(force=True), ("forced",)),
])
def test_nothing_differs(options, reasons):
    result = plan(desired(stack()), Observed((WEB,)), {"app": record()},
                  {"app": Resolved({"web": A})}, {}, options)
    assert result.actions == (Action("app", UPDATE, reasons),)


@pytest.mark.parametrize("problems, rec, containers, force, included", [
    pytest.param((), None, (), False, True, id="new"),
    pytest.param((), record(), (WEB,), False, False, id="unchanged"),
    pytest.param((), OLD, (WEB,), False, True, id="hash-changed"),
    pytest.param((), record(), (ctr(state="exited"),), False, True, id="drift"),
    pytest.param((), record(), (WEB,), True, True, id="forced"),
    pytest.param(("broken",), None, (), True, False, id="problems-never"),
])
def test_needs_resolve(problems, rec, containers, force, included):
    records = {} if rec is None else {"app": rec}
    names = needs_resolve(desired(stack(problems=problems)), Observed(containers), records, force)
    assert names == (["app"] if included else [])


def same(name: str) -> dict:
    return {"hash": f"{name}-h2", "digests": {}, "containers": {f"{name}-web-1": "cfg1"}}


@pytest.mark.parametrize("tree, running, allow_empty, expected, refused", [
    pytest.param(["proxy", "app"], ["proxy", "app", "old"], False,
                 [("proxy", UNCHANGED, ()), ("app", UNCHANGED, ()),
                  ("old", REMOVE, ("no longer in the repo",))], False, id="stack-gone"),
    pytest.param([], ["proxy", "app"], False,
                 [("app", KEEP, ("not pruned: the tree has no stacks",)),
                  ("proxy", KEEP, ("not pruned: the tree has no stacks",))], True,
                 id="empty-tree-refused"),
    pytest.param(["proxy"], ["proxy", "app"], False,
                 [("proxy", UNCHANGED, ()), ("app", KEEP, ("not pruned: the tree has no stacks",))],
                 True, id="proxy-only-tree-refused"),
    pytest.param(["proxy"], ["proxy", "app"], True,
                 [("proxy", UNCHANGED, ()), ("app", REMOVE, ("no longer in the repo",))], False,
                 id="proxy-only-tree-allow-empty"),
    pytest.param([], ["proxy", "b", "a"], True,
                 [(n, REMOVE, ("no longer in the repo",)) for n in ("a", "b", "proxy")], False,
                 id="allow-empty-removes-proxy-last"),
    pytest.param(["proxy"], ["proxy"], False, [("proxy", UNCHANGED, ())], False,
                 id="proxy-only-tree-proxy-only-running"),
    pytest.param([], ["proxy"], False, [("proxy", KEEP, ("not pruned: the tree has no stacks",))],
                 True, id="empty-tree-only-proxy-running"),
])
def test_prune(tree, running, allow_empty, expected, refused):
    observed = Observed(tuple(ctr(stack=name) for name in running))
    result = plan(desired(*(stack(n) for n in tree)), observed, {n: same(n) for n in running}, {},
                  {}, Options(allow_empty=allow_empty))
    assert [(a.stack, a.kind, a.reasons) for a in result.actions] == expected
    assert bool(result.refusal) is refused
    if refused:
        assert "0123456789ab" in result.refusal and "--allow-empty" in result.refusal


def _kinds(*pairs: tuple[str, str]) -> Plan:
    return Plan(revision="r", actions=tuple(Action(name, kind) for name, kind in pairs))


@pytest.mark.parametrize("actions, expected", [
    pytest.param([("web2", CREATE), ("site", REMOVE)], [["site"], ["web2"]],
                 id="rename-frees-the-port-before-taking-it"),
    pytest.param([("proxy", UPDATE), ("a", CREATE), ("b", UPDATE), ("old", REMOVE),
                  ("c", UNCHANGED), ("d", FAIL)], [["proxy"], ["old"], ["a", "b"]],
                 id="proxy-first-then-removals-then-the-rest"),
    pytest.param([("a", CREATE), ("proxy", REMOVE), ("x", REMOVE)],
                 [["x"], ["a"], ["proxy"]], id="the-proxy-goes-last"),
    pytest.param([("a", KEEP), ("b", UNCHANGED)], [], id="nothing-to-run"),
])
def test_phases(actions, expected) -> None:
    assert [[a.stack for a in phase] for phase in phases(_kinds(*actions))] == expected


@pytest.mark.parametrize("message, is_conflict", [
    ("web2: failed (docker compose up: Error response from daemon: driver failed programming "
     "external connectivity on endpoint x: Bind for 127.0.0.1:8080 failed: port is already "
     "allocated; nothing to roll back to)", True),
    ("app: failed (docker compose up: Error starting userland proxy: listen tcp4 0.0.0.0:80: "
     "bind: address already in use)", True),
    ('app: failed (docker compose up: Conflict. The container name "/db" is already in use by '
     'container "0af3". You have to remove (or rename) that container)', True),
    ("app: rolled back to abc; def failed: container app-web-1 exited with code 1", False),
    ("app: failed (image x cannot be pulled: manifest unknown)", False),
])
def test_conflict(message, is_conflict) -> None:
    assert conflict(message) is is_conflict
