"""The fault paths of one stack's deploy, with a fake engine: the races the end-to-end tests in
tests/e2e/test_faults.py cannot pin down (the engine gone while `compose up` runs), and writes
that fail on a full folder. Each ends in one line, never an exception."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigo.adapters.compose import DockerError
from vigo.adapters.run import Result
from vigo.core import health
from vigo.core.model import CREATE, UPDATE, Action, Container, Paths, Resolved, Stack
from vigo.host.engines.compose import Deployer, rollback_timeout
from vigo.host.state import StackRecord

STACK = Stack("app", "stacks/app/docker-compose.yml", ("stacks/app/docker-compose.yml",), (), (),
              {}, "h1")
DOWN = ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker "
        "daemon running?")


def ok(stdout: str = "") -> Result:
    return Result(("docker",), 0, stdout, "")


def failed(stderr: str) -> Result:
    return Result(("docker",), 1, "", stderr)


class FakeEngine:
    """Answers like a real engine until `stop()`; then every call fails the way docker does."""

    def __init__(self) -> None:
        self.up_stops_engine = False
        self.running = True
        self.health = ""  # the container's health status ('' without a healthcheck)
        self.calls: list[str] = []

    def stop(self) -> None:
        self.running = False

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if not self.running:
            raise DockerError(f"{call}: {DOWN}")

    def local_images(self) -> set[str]:
        self._check("docker images")
        return {"app:sha-1"}

    def up(self, *_args) -> Result:
        self.calls.append("up")
        if self.up_stops_engine:
            self.stop()
            return failed(f"Error response from daemon: {DOWN}")
        return ok()

    def containers(self, project: str = "") -> tuple[Container, ...]:
        self._check("cannot list containers")
        return (Container("c1", f"{project}-web-1", "app", "x-", project, "web", "running", "Up",
                          "app:sha-1", "h"),)

    def inspect(self, ids) -> list[dict]:
        self._check("docker inspect")
        state = {"Status": "running", "StartedAt": "2000-01-01T00:00:00Z"}
        if self.health:
            state["Health"] = {"Status": self.health}
        return [{"Id": "c1", "Name": "/x-app-web-1", "State": state,
                 "Config": {"Labels": {"com.docker.compose.service": "web"}}}]

    def logs(self, *_args) -> str:
        return ""

    def resolved(self, *_args) -> Result:
        return ok('{"services": {"web": {}}}')

    def up_model(self, *_args) -> Result:
        self.calls.append("up_model")
        return ok()

    def engine_ok(self) -> str:
        if not self.running:
            raise DockerError(f"the Docker engine does not answer: {DOWN}")
        return "20.10"


def deployer(tmp_path: Path, engine: FakeEngine) -> Deployer:
    paths = Paths(tmp_path / "runtime", tmp_path / "secrets", tmp_path / "overrides",
                  tmp_path / "rendered.json")
    return Deployer(engine, "x-", paths, 30, lambda _line: None,  # type: ignore[arg-type]
                    sleep=lambda _s: None)


RECORD = StackRecord(revision="a" * 40, containers={"x-app-web-1": "h"})


def test_engine_gone_during_compose_up_is_neither_rolled_back_nor_held(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.up_stops_engine = True
    d = deployer(tmp_path, engine)
    d.paths.good_model("x-app").parent.mkdir(parents=True)
    d.paths.good_model("x-app").write_text('{"services": {"web": {}}}')
    result = d.deploy(STACK, Action("app", UPDATE), Resolved({"web": "app:sha-1"}), (), RECORD,
                      "b" * 40)
    assert not result.ok and not result.hold and not result.rolled_back_to
    assert result.message.startswith(f"app: failed (the Docker engine does not answer: {DOWN}; "
                                      "the next run tries again; docker compose up: ")
    assert "up_model" not in engine.calls  # no rollback into a dead engine


def test_engine_gone_during_the_health_gate(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.health = "starting"
    d = deployer(tmp_path, engine)
    d.sleep = lambda _s: engine.stop()  # the engine stops while the gate waits
    result = d.deploy(STACK, Action("app", CREATE), Resolved({"web": "app:sha-1"}), (),
                      StackRecord(), "b" * 40)
    assert not result.ok and not result.hold
    assert result.message == (f"app: failed (the Docker engine does not answer: {DOWN}; the "
                              "next run tries again)")


def test_override_that_cannot_be_written_fails_the_stack_and_touches_nothing(
        tmp_path: Path) -> None:
    engine = FakeEngine()
    d = deployer(tmp_path, engine)
    d.paths.overrides.write_text("a file where the folder must be")
    result = d.deploy(STACK, Action("app", UPDATE), Resolved({"web": "app:sha-1"}), (), RECORD,
                      "b" * 40)
    assert not result.ok and not result.hold
    assert result.message.startswith(f"app: failed (cannot write {d.paths.overrides}/x-app.json: ")
    assert result.message.endswith("; the running containers were left as they are)")
    assert engine.calls == []


def test_healthy_state_that_cannot_be_saved_is_said_not_fatal(tmp_path: Path) -> None:
    engine = FakeEngine()
    d = deployer(tmp_path, engine)
    (tmp_path / "secrets").write_text("a file where the folder must be")
    result = d.deploy(STACK, Action("app", CREATE, ("new stack",)), Resolved({"web": "app:sha-1"}),
                      (), StackRecord(), "b" * 40)
    assert result.ok
    assert result.message.startswith("app: created (new stack; its healthy state was not saved "
                                     f"for a rollback: cannot write {tmp_path}/secrets/good/")


@pytest.mark.parametrize(("saved", "failed", "default", "expected"), [
    ({}, None, 30, 30),  # neither revision sets one: the host's health_timeout
    ({}, 300, 30, 300),  # the failed revision's: the gate before the rollback waited as long
    ({"x-vigo": {"health_timeout": 200}}, 300, 30, 200),  # the revision brought back
    ({"x-vigo": {"health_timeout": 200}}, None, 30, 200),
    ({"x-vigo": {"health_timeout": "odd"}}, 300, 30, 300),  # unreadable: as if unset
    ({"x-vigo": "odd"}, None, 30, 30),
])
def test_rollback_timeout(saved, failed, default, expected) -> None:
    assert rollback_timeout(saved, Resolved({}, health_timeout=failed), default) == expected


@pytest.mark.parametrize(("saved", "failed", "expected"), [
    ('{"services": {"web": {}}}', None, 30),
    ('{"services": {"web": {}}}', 300, 300),
    ('{"services": {"web": {}}, "x-vigo": {"health_timeout": 200}}', 300, 200),
])
def test_the_rollback_gate_waits_the_stacks_health_timeout(tmp_path: Path, saved, failed,
                                                          expected) -> None:
    engine = FakeEngine()
    d = deployer(tmp_path, engine)
    d.paths.good_model("x-app").parent.mkdir(parents=True)
    d.paths.good_model("x-app").write_text(saved)
    waited: list[float] = []

    def gate(project, services, timeout, only=None, counts=None):
        waited.append(timeout)
        return health.Verdict(health.FAIL if len(waited) == 1 else health.OK, "unhealthy")

    d.gate = gate  # type: ignore[method-assign]
    result = d.deploy(STACK, Action("app", UPDATE), Resolved({"web": "app:sha-1"},
                      health_timeout=failed), (), RECORD, "b" * 40)
    assert result.rolled_back_to == "a" * 12, result.message
    assert waited == [failed or 30, expected]  # the gate, then the gate after the rollback
