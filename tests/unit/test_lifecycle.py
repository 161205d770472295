"""Service lifecycles as compose defines them: one-shot services, scale and replicas, profiles.
Tables of resolved models, containers and records in; decisions out."""

from __future__ import annotations

import pytest

from vigo.core.health import FAIL, OK, WAIT, Probe, judge, meant_to_finish, replicas
from vigo.core.model import Container
from vigo.core.plan import completed, drift, settled

NOW = 1000.0


def ctr(service: str = "init", state: str = "exited", status: str = "Exited (0) 3 minutes ago",
        cfg: str = "c1", n: int = 1) -> Container:
    return Container(id=f"{service}{n}", name=f"app-{service}-{n}", stack="app", instance="",
                     project="app", service=service, state=state, status=status, image="img",
                     config_hash=cfg)


WEB = ctr("web", "running", "Up 3 minutes")
INIT = ctr()
FAILED = ctr(status="Exited (3) 1 minute ago")


@pytest.mark.parametrize(("status", "code"), [
    ("Exited (0) 3 minutes ago", 0), ("Exited (137) 2 seconds ago", 137),
    ("Up 3 minutes (healthy)", None), ("Created", None), ("Restarting (1) 2 seconds ago", None),
])
def test_exit_code_from_status(status: str, code: int | None) -> None:
    assert ctr(status=status).exit_code == code


MODEL = {
    "web": {"image": "app", "restart": "unless-stopped",
            "depends_on": {"init": {"condition": "service_completed_successfully"},
                           "db": {"condition": "service_healthy"}}},
    "init": {"image": "app", "restart": "always"},  # waited for: meant to finish whatever
    "db": {"image": "postgres", "restart": "always"},
    "job": {"image": "app"},  # no restart policy: may finish
    "retry": {"image": "app", "restart": "on-failure:3"},
    "quoted": {"image": "app", "restart": '"no"'},
    "server": {"image": "app", "restart": "unless-stopped"},
}


@pytest.mark.parametrize(("service", "finishes"), [
    ("init", True), ("job", True), ("retry", True), ("quoted", True),
    ("web", False), ("db", False), ("server", False),
])
def test_meant_to_finish(service: str, finishes: bool) -> None:
    assert meant_to_finish(service, MODEL) is finishes


@pytest.mark.parametrize(("svc", "count"), [
    ({}, 1), ({"scale": 3}, 3), ({"scale": 0}, 0), ({"deploy": {"replicas": 0}}, 0),
    ({"deploy": {"replicas": 2, "resources": {}}}, 2), ({"scale": 2, "deploy": {"replicas": 5}}, 2),
    ({"deploy": {"resources": {}}}, 1), ({"scale": True}, 1),
])
def test_replicas(svc: dict, count: int) -> None:
    assert replicas(svc) == count


def probe(name: str = "app-web-1", service: str = "web", state: str = "running",
          exit_code: int = 0, policy: str = "unless-stopped") -> Probe:
    return Probe(id=name, name=name, service=service, state=state, health="", restarts=0,
                 started=NOW - 60, exit_code=exit_code, restart_policy=policy)


@pytest.mark.parametrize(("probes", "services", "counts", "status", "reason"), [
    pytest.param([probe("app-init-1", "init", "exited", 0, "on-failure"), probe()],
                 ["web", "init"], {}, OK, "", id="on-failure-exited-0-completed"),
    pytest.param([probe("app-init-1", "init", "exited", 2, "no"), probe()], ["web", "init"], {},
                 FAIL, "app-init-1 exited with code 2", id="one-shot-failed"),
    pytest.param([probe()], ["web"], {"web": 2}, WAIT, "service web has 1 of 2 containers",
                 id="scaled-waits-for-all"),
    pytest.param([probe(), probe("app-web-2")], ["web"], {"web": 2}, OK, "",
                 id="scaled-complete"),
    pytest.param([probe()], ["web", "worker"], {"worker": 0}, OK, "",
                 id="scale-zero-expects-none"),
])
def test_judge_lifecycles(probes, services, counts, status, reason) -> None:
    verdict = judge(probes, services, {}, NOW, counts=counts)
    assert verdict.status == status, verdict
    assert reason in verdict.reason


def test_judge_without_counts_wants_one_container_per_service() -> None:
    assert judge([probe()], ["web", "worker"], {}, NOW).reason == \
        "service worker has no container yet"


def test_completed_records_only_one_shots_that_exited_0() -> None:
    server_stopped = ctr("web", status="Exited (0) 1 second ago")
    assert completed((INIT, FAILED, WEB, server_stopped), {"init"}) == {"app-init-1": "c1"}


APPLIED = {"containers": {"app-web-1": "c1", "app-init-1": "c1"},
           "completed": {"app-init-1": "c1"}}


@pytest.mark.parametrize(("containers", "record", "reasons"), [
    pytest.param((WEB, INIT), APPLIED, [], id="completed-one-shot-is-converged"),
    pytest.param((WEB, INIT), {**APPLIED, "completed": {}}, ["container app-init-1 is exited"],
                 id="exited-but-not-recorded-as-completed"),
    pytest.param((WEB, FAILED), APPLIED, ["container app-init-1 exited with code 3"],
                 id="one-shot-failed-since"),
    pytest.param((WEB, ctr(cfg="c2")), APPLIED,
                 ["container app-init-1 is exited"], id="one-shot-recreated-by-hand"),
    pytest.param((WEB, ctr(state="running", status="Up 2 seconds")), APPLIED, [],
                 id="one-shot-running-again"),
    pytest.param((WEB,), APPLIED, ["container app-init-1 was removed"], id="one-shot-removed"),
    pytest.param((ctr("web", status="Exited (0) 2 seconds ago"), INIT), APPLIED,
                 ["container app-web-1 is exited"], id="server-stopped-by-hand-is-drift"),
])
def test_drift_with_one_shots(containers, record, reasons) -> None:
    assert drift(containers, record) == reasons


@pytest.mark.parametrize(("containers", "hashes", "done"), [
    pytest.param((WEB, INIT), {"init": "c1", "web": "c9"}, {"init"}, id="unchanged-one-shot"),
    pytest.param((WEB, INIT), {"init": "c2", "web": "c9"}, set(), id="one-shot-changed"),
    pytest.param((WEB, FAILED), {"init": "c1"}, set(), id="failed-one-shot-runs-again"),
    pytest.param((WEB, INIT, ctr(n=2)), {"init": "c1"}, set(),
                 id="a-container-not-recorded-runs-again"),
])
def test_settled(containers, hashes, done) -> None:
    assert settled(containers, APPLIED, hashes) == done


class Hashes:
    """The one engine call `Deployer._to_start` makes: `compose config --hash`."""

    def __init__(self, hashes: dict[str, str]) -> None:
        self.hashes = hashes
        self.calls = 0

    def config_hashes(self, *_args) -> dict[str, str]:
        self.calls += 1
        return self.hashes


@pytest.mark.parametrize(("before", "hashes", "expected", "asks"), [
    pytest.param((WEB, INIT), {"init": "c1", "web": "c9"}, ["web"], True,
                 id="completed-one-shot-left-out"),
    pytest.param((WEB, INIT), {"init": "c2", "web": "c9"}, [], True,
                 id="changed-one-shot-runs-with-the-rest"),
    pytest.param((WEB,), {}, [], False, id="no-completed-container-no-engine-call"),
    pytest.param((WEB, FAILED), {"init": "c1"}, [], False, id="failed-one-shot-runs-again"),
])
def test_up_leaves_out_one_shots_that_completed(tmp_path, before, hashes, expected,
                                                asks) -> None:
    from vigo.core.model import Paths, Resolved
    from vigo.host.engines.compose import Deployer

    engine = Hashes(hashes)
    d = Deployer(engine, "x-", Paths(tmp_path, tmp_path, tmp_path, tmp_path / "m"), 30,  # type: ignore[arg-type]
                 lambda _line: None)
    res = Resolved({"web": "img", "init": "img"}, finishes=frozenset({"init"}))
    assert d._to_start("x-app", [], [], res, before, APPLIED) == expected
    assert bool(engine.calls) is asks


def test_the_deploy_asks_the_config_hash_at_most_once(tmp_path) -> None:
    """Resolve asked it already (res.config_hashes): no compose process; else one per deploy,
    shared by the rollout, the one-shots and the jobs."""
    from vigo.core.model import Paths, Resolved
    from vigo.host.engines.compose import Deployer

    engine = Hashes({"web": "c9"})
    d = Deployer(engine, "x-", Paths(tmp_path, tmp_path, tmp_path, tmp_path / "m"), 30,  # type: ignore[arg-type]
                 lambda _line: None)
    asked = Resolved({"web": "img"}, config_hashes={"web": "c1"})
    assert d._hashes("x-web", [], [], asked) == {"web": "c1"}
    assert engine.calls == 0
    fresh = Resolved({"web": "img"})
    assert d._hashes("x-web", [], [], fresh) == d._hashes("x-web", [], [], fresh) == {"web": "c9"}
    assert engine.calls == 1
