"""The engine seam (host/engines): the one rule of which containers are this instance's, the
one dispatch to a stack's engine, and the Compose engine's removal with a recording adapter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vigo.adapters.run import CommandTimeout, Result
from vigo.config import Settings
from vigo.core.model import REMOVE, Container, Paths, Resolved
from vigo.host import engines
from vigo.host.engines.compose import ComposeEngine
from vigo.host.state import StackRecord


def container(stack: str, instance: str, project: str) -> Container:
    return Container(f"id-{stack}-{instance}-{project}", f"{project}-web-1", stack, instance,
                     project, "web", "running", "Up", "app:1", "h")


@pytest.mark.parametrize(("stack", "instance", "project", "prefix", "mine"), [
    ("web", "", "web", "", True),  # no prefix: the project is the stack
    ("web", "a-", "a-web", "a-", True),
    ("web", "b-", "b-web", "a-", False),  # another vigo instance on the same engine
    ("web", "a-", "web", "a-", False),  # a project someone else named after the stack
    ("web", "", "a-web", "a-", False),  # the label of an instance without a prefix
    ("web", "a-", "a-db", "a-", False),  # the stack label disagrees with the project
])
def test_which_containers_are_mine(stack, instance, project, prefix, mine) -> None:
    c = container(stack, instance, project)
    assert engines.mine([c], prefix) == ((c,) if mine else ())


def test_every_stack_runs_on_compose_today() -> None:
    s = Settings(repo="x", host="h")
    assert engines.of(None, s) is ComposeEngine
    assert engines.of(Resolved({}), s).name == engines.COMPOSE


class Recording:
    """The compose adapter's calls, recorded; `down` answers as told."""

    def __init__(self, down: Result | Exception) -> None:
        self.answer = down
        self.calls: list[tuple[object, ...]] = []

    def down(self, project: str) -> Result:
        self.calls.append(("down", project))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def containers(self, project: str = "", instance: str = "") -> tuple[Container, ...]:
        self.calls.append(("containers", project, instance))
        return (container("web", "a-", "a-web"), container("web", "b-", "b-web"))


def engine(tmp_path: Path, compose: Recording, lines: list[str] | None = None) -> ComposeEngine:
    paths = Paths(tmp_path / "rt", tmp_path / "sec", tmp_path / "ov", tmp_path / "man")
    out = lines if lines is not None else []
    return ComposeEngine.start(engines.Run(
        Settings(repo="x", host="h", project_prefix="a-"), compose, paths,  # type: ignore[arg-type]
        out.append, out.append, mask=lambda t: t.replace("s3cr3t", "***")))


def test_remove_downs_the_project_and_forgets_its_healthy_model(tmp_path: Path) -> None:
    compose = Recording(Result(("docker",), 0, "", ""))
    e = engine(tmp_path, compose)
    good = e.run.paths.good_model("a-web")
    good.parent.mkdir(parents=True)
    good.write_text("{}")
    result = e.remove("web")
    assert compose.calls == [("down", "a-web")]
    assert (result.action, result.ok, result.message) == (
        REMOVE, True, "web: removed (no longer in the repo)")
    assert not good.exists()


@pytest.mark.parametrize(("answer", "message"), [
    (Result(("docker",), 1, "", "Error response from daemon: busy"),
     "web: failed to remove (docker compose down: Error response from daemon: busy)"),
    (CommandTimeout("docker compose down (project a-web) timed out after 600 s"),
     "web: failed to remove (docker compose down (project a-web) timed out after 600 s)"),
    (ValueError("odd s3cr3t"),
     "web: failed to remove (ValueError in host/engines/compose.py:remove: odd ***)"),
])
def test_a_failed_removal_is_one_line(tmp_path: Path, answer, message) -> None:
    result = engine(tmp_path, Recording(answer)).remove("web")
    assert (result.ok, result.message) == (False, message)


def test_observe_asks_once_and_keeps_only_mine(tmp_path: Path) -> None:
    compose = Recording(Result(("docker",), 0, "", ""))
    e = engine(tmp_path, compose)
    assert [c.instance for c in e.observe().containers] == ["a-"]
    assert [c.instance for c in e.observe("web").containers] == ["a-"]
    assert compose.calls == [("containers", "", "a-"), ("containers", "a-web", "a-")]


def test_observing_imports_no_deployer() -> None:
    """An idle run observes through engines.observe: the Compose engine is not imported."""
    code = ("import sys, vigo.host.reconcile, vigo.host.engines\n"
            "bad = [m for m in ('vigo.host.engines.compose', 'vigo.core.health',"
            " 'vigo.core.rollout', 'vigo.core.registries') if m in sys.modules]\n"
            "print(bad)\n")
    src = str(Path(engines.__file__).parents[2])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": src}, check=True)
    assert out.stdout.strip() == "[]"


class Hashing(Recording):
    def config_hashes(self, project, files, env_files) -> dict[str, str]:
        self.calls.append(("config --hash", project, tuple(Path(f).name for f in files)))
        return {"migrate": "h-migrate", "web": "h-web"}


def test_resolve_asks_the_engine_for_the_hash_each_job_gets(tmp_path: Path) -> None:
    """A release job's config hash comes with vigo's override (host/resolve -> the engine)."""
    from vigo.adapters.run import Masker
    from vigo.core.model import Stack
    from vigo.core.xvigo import BEFORE, Job
    from vigo.host.resolve import Resolver

    compose = Hashing(Result(("docker",), 0, "", ""))
    settings = Settings(repo="x", host="h", project_prefix="a-")
    resolver = Resolver(settings, compose, Masker(), print, print)  # type: ignore[arg-type]
    paths = Paths(tmp_path / "rt", tmp_path / "sec", tmp_path / "ov", tmp_path / "man")
    stack = Stack("web", "stacks/web/compose.yaml", (), (), (), {}, "h")
    res = resolver._job_hashes(stack, paths, Resolved({"web": "app:1", "migrate": "app:1"},
                                                      jobs=(Job("migrate", BEFORE),)))
    assert res.job_hashes == {"migrate": "h-migrate"}
    assert compose.calls == [("config --hash", "a-web", ("compose.yaml", "a-web.json"))]


def test_apply_order_joins_after_and_the_networks_a_stack_uses() -> None:
    from vigo.core.model import DesiredState
    from vigo.host.resolve import apply_order

    net = {"backend": {"name": "shared-net"}}
    db = Resolved({}, model={"services": {"db": {"networks": {"backend": None}}},
                             "networks": net})
    app = Resolved({}, after=("cache",), model={
        "services": {"web": {"networks": {"backend": None}}},
        "networks": {"backend": {**net["backend"], "external": True}}})
    desired = DesiredState("r" * 40, "h", {}, {}, ())
    records = {"gone": StackRecord(after=["db"]),  # a removed stack's order
               "db": StackRecord(after="odd")}
    assert apply_order(desired, records, {"db": db, "app": app}, lambda n: "x-" + n) == {
        "gone": ("db",), "app": ("cache", "db")}


class Concurrent:
    """compose's config, config --hash and nothing else: the real `config` waits until the
    placeholder `config` (of `vigo check`'s view) has started, so a resolve that runs them one
    after the other would time out here."""

    MODEL = ('{"services": {"web": {"image": "app:2", "labels": {"traefik.enable": "true"},'
             ' "healthcheck": {"test": ["CMD", "/bin/healthy"], "interval": "1s"}}}}')

    def __init__(self) -> None:
        import threading

        self.placeholder_started = threading.Event()
        self.calls: list[str] = []

    def config(self, project, files, env_files) -> Result:
        if any("placeholders" in str(e) for e in env_files):
            self.calls.append("config (placeholders)")
            self.placeholder_started.set()
        else:
            assert self.placeholder_started.wait(10), "the placeholder config did not run beside"
            self.calls.append("config")
        return Result(("docker",), 0, self.MODEL, "")

    def config_hashes(self, project, files, env_files) -> dict[str, str]:
        self.calls.append("config --hash")
        return {"web": "h-web"}


def test_resolve_runs_the_placeholder_config_beside_and_asks_the_hash_once(tmp_path) -> None:
    """Resolve's compose processes that do not need each other's answer run at once; the
    rollout's config hash comes with the model (the deploy does not ask again)."""
    from vigo.adapters.run import Masker
    from vigo.core.model import Stack
    from vigo.host.resolve import Resolver

    compose = Concurrent()
    settings = Settings(repo="x", host="h", project_prefix="a-")
    resolver = Resolver(settings, compose, Masker(), print, print)  # type: ignore[arg-type]
    paths = Paths(tmp_path / "rt", tmp_path / "sec", tmp_path / "ov", tmp_path / "man")
    for p in (paths.runtime, paths.secrets, paths.overrides):
        p.mkdir()
    stack = Stack("web", "stacks/web/compose.yaml", (), ("env/web.env",), (), {}, "h")
    res = resolver.resolve(stack, paths, set(), keys={"WEB_HOST"})
    assert not res.error and not res.policy, res
    assert res.config_hashes == {"web": "h-web"}
    assert sorted(compose.calls) == ["config", "config (placeholders)", "config --hash"]
