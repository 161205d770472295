"""Every exception in a run is a recorded failure (never exit 0, never a traceback), and
whatever one stack's deploy, removal or image cleanup raises fails that stack only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vigo.adapters.compose import DockerError
from vigo.adapters.run import CommandTimeout, Result
from vigo.config import Settings
from vigo.core.model import (
    CREATE,
    REMOVE,
    Action,
    DesiredState,
    Observed,
    Paths,
    Plan,
    Resolved,
    Stack,
    StackResult,
)
from vigo.host import engines, state
from vigo.host.crash import crash_line
from vigo.host.engines.compose import ComposeEngine, Deployer
from vigo.host.reconcile import EXIT_FAILED, Reconciler, Report
from vigo.host.resolve import _mounts_hash


def settings(tmp_path: Path) -> Settings:
    return Settings(repo=str(tmp_path / "repo"), host="h", checkout=tmp_path / "checkout",
                    runtime=tmp_path / "runtime", secrets=tmp_path / "secrets",
                    state=tmp_path / "state", secrets_on_disk=True)


def reconciler(tmp_path: Path, lines: list[str], traces: list[str] | None = None) -> Reconciler:
    return Reconciler(settings(tmp_path), emit=lines.append,
                      trace=None if traces is None else traces.append)


def deep(n: int) -> None:
    deep(n + 1)


@pytest.mark.parametrize("exc", [
    RecursionError("maximum recursion depth exceeded"),
    OSError(40, "Too many levels of symbolic links", "/srv/checkout/stacks/a/loop"),
    UnicodeEncodeError("utf-8", "x\udcff", 1, 2, "surrogates not allowed"),
    KeyError("services"),
    CommandTimeout("git fetch timed out after 120 s"),
    DockerError("Cannot connect to the Docker daemon"),
])
def test_an_exception_in_apply_is_a_recorded_failure(tmp_path, monkeypatch, exc):
    lines: list[str] = []
    rec = reconciler(tmp_path, lines)

    def boom(*_args):
        raise exc

    monkeypatch.setattr(rec, "_run_apply", boom)
    report = rec.apply()
    assert report.exit_code == EXIT_FAILED
    st = json.loads(state.path(tmp_path / "state").read_text())
    assert st["exit_code"] == EXIT_FAILED
    assert st["error"] == report.error
    expected = "git fetch timed out" if isinstance(exc, CommandTimeout) else type(exc).__name__
    assert expected in report.error
    assert st["ops"]["consecutive_failures"] == 1
    assert any(line.startswith("error: ") for line in lines)
    assert not any("Traceback" in line for line in lines)


def test_a_real_recursion_names_the_vigo_function_and_debug_shows_the_traceback(
        tmp_path, monkeypatch):
    lines: list[str] = []
    traces: list[str] = []
    rec = reconciler(tmp_path, lines, traces)
    monkeypatch.setattr(rec, "_run_apply", lambda *_a: deep(0))
    report = rec.apply()
    assert report.exit_code == EXIT_FAILED
    assert report.error == (
        "RecursionError in host/reconcile.py:apply: maximum recursion depth exceeded")
    assert len(traces) == 1 and "Traceback" in traces[0]


def test_the_error_is_masked(tmp_path, monkeypatch):
    lines: list[str] = []
    rec = reconciler(tmp_path, lines)
    rec.masker.add(["s3cr3t-value"])

    def boom(*_args):
        raise ValueError("bad token s3cr3t-value in line 3")

    monkeypatch.setattr(rec, "_run_apply", boom)
    report = rec.apply()
    text = state.path(tmp_path / "state").read_text()
    assert "s3cr3t-value" not in text + report.error + "".join(lines)
    assert "***" in report.error


def test_an_interrupt_is_never_recorded_as_ok(tmp_path, monkeypatch):
    rec = reconciler(tmp_path, [])

    def stop(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(rec, "_run_apply", stop)
    with pytest.raises(KeyboardInterrupt):
        rec.apply()
    st = json.loads(state.path(tmp_path / "state").read_text())
    assert st["exit_code"] == EXIT_FAILED and st["error"]


def test_a_crash_in_plan_is_a_failed_plan(tmp_path, monkeypatch):
    lines: list[str] = []
    rec = reconciler(tmp_path, lines)
    monkeypatch.setattr(rec.secrets, "key_refused", lambda report: False)

    def boom(*_args, **_kw):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(rec.source, "desired", boom)
    report = rec.plan()
    assert report.exit_code == EXIT_FAILED and "RecursionError" in report.error
    assert report.plan is None


def test_crash_line_names_the_innermost_vigo_function():
    try:
        _mounts_hash(None, Path("/"), set())  # type: ignore[arg-type]
    except AttributeError as exc:
        assert crash_line(exc).startswith("AttributeError in host/resolve.py:_mounts_hash: ")


def test_crash_line_is_one_printable_line():
    try:
        raise OSError(f"bad\nname \udcff {'x' * 500}")
    except OSError as exc:
        line = crash_line(exc)
    assert "\n" not in line and len(line) < 400
    line.encode("utf-8")  # no lone surrogate: printable on any terminal and in the journal


# -- one stack's deploy isolated ------------------------------------------------------------

def stack(name: str) -> Stack:
    compose = f"stacks/{name}/docker-compose.yml"
    return Stack(name, compose, (compose,), (), (), {}, f"h-{name}")


class Engine:
    """Only what _execute's bookkeeping asks of the engine besides deploy."""

    def __init__(self, down=None, rmi=None) -> None:
        self._down, self._rmi = down, rmi

    def down(self, project: str) -> Result:
        if self._down:
            raise self._down
        return Result(("docker",), 0, "", "")

    def engine_cpus(self) -> int:
        return 2

    def remove_image(self, image: str) -> Result:
        if self._rmi:
            raise self._rmi
        return Result(("docker",), 0, "", "")


@pytest.mark.parametrize("exc", [
    CommandTimeout("docker compose config (project a) timed out after 60 s"),
    OSError(28, "No space left on device"), DockerError("engine gone"),
    RecursionError("maximum recursion depth exceeded"), ValueError("odd"),
])
def test_one_deploy_that_raises_fails_that_stack_only(tmp_path, monkeypatch, exc):
    lines: list[str] = []
    rec = reconciler(tmp_path, lines)
    rec.compose = Engine(down=exc)  # type: ignore[assignment]
    names = ["a", "b", "c", "d", "e", "f"]
    desired = DesiredState("r" * 40, "h", {}, {}, tuple(stack(n) for n in names))

    def deploy(self, s, action, *_args):
        if s.name == "c":
            raise exc
        return StackResult(s.name, action.kind, True, f"{s.name}: created")

    monkeypatch.setattr(Deployer, "deploy", deploy)
    the_plan = Plan("r" * 40, (*(Action(n, CREATE) for n in names), Action("gone", REMOVE)))
    st = state._empty()
    st["stacks"]["gone"] = {"hash": "x"}
    report = Report("apply", "h")
    paths = Paths(tmp_path / "rt", tmp_path / "sec", tmp_path / "ov", tmp_path / "man")
    rec._execute(report, the_plan, desired, Observed(()),
                 {n: Resolved({}) for n in names}, st, paths)
    by = {r.stack: r for r in report.results}
    assert [n for n in names if by[n].ok] == ["a", "b", "d", "e", "f"]
    assert not by["c"].ok and by["c"].message.startswith("c: failed (")
    assert not by["gone"].ok and by["gone"].message.startswith("gone: failed to remove (")
    assert report.exit_code == EXIT_FAILED
    assert st["stacks"]["a"]["outcome"] == "ok" and st["stacks"]["c"]["outcome"] == "failed"
    assert "gone" in st["stacks"]  # not removed: still recorded for the next try
    assert "revision_applied" not in st


def test_image_cleanup_that_raises_is_a_warning(tmp_path):
    lines: list[str] = []
    rec = reconciler(tmp_path, lines)
    rec.compose = Engine(rmi=CommandTimeout("docker rmi old:1 timed out after 600 s"))  # type: ignore[assignment]
    paths = Paths(tmp_path / "rt", tmp_path / "sec", tmp_path / "ov", tmp_path / "man")
    engine = ComposeEngine(engines.Run(rec.settings, rec.compose, paths, rec.emit, rec.emit))
    engine.remove_images({"old:1"})
    assert lines == ["warning: image old:1: not removed (docker rmi old:1 timed out after "
                     "600 s)"]


class SlowSave:
    """A healthy deploy whose last step (saving the model for a rollback) times out."""

    def resolved(self, *_args) -> Result:
        raise CommandTimeout("docker compose config (project x-a) timed out after 600 s")


def test_a_timeout_saving_the_good_model_keeps_the_deploy_ok(tmp_path):
    paths = Paths(tmp_path / "rt", tmp_path / "sec", tmp_path / "ov", tmp_path / "man")
    d = Deployer(SlowSave(), "x-", paths, 10, lambda _line: None)  # type: ignore[arg-type]
    why = d._save_good("x-a", [], [])
    assert why.startswith("its healthy state was not saved for a rollback: docker compose "
                          "config (project x-a) timed out")


def test_a_state_that_cannot_be_serialised_is_a_failure_not_a_crash(tmp_path, monkeypatch):
    lines: list[str] = []
    rec = reconciler(tmp_path, lines)

    def odd(report, st, options):
        st["stacks"]["web"] = {"x": object()}  # a bug elsewhere

    monkeypatch.setattr(rec, "_run_apply", odd)
    report = rec.apply()
    assert report.exit_code == EXIT_FAILED
    assert next(x for x in lines if x.startswith("state: cannot save ")).endswith(
        "the previous state file is kept, the next run starts from it")


def test_a_crash_reaches_the_metrics(tmp_path, monkeypatch):
    from vigo.core.records import replace

    lines: list[str] = []
    rec = reconciler(tmp_path, lines)
    rec.settings = replace(rec.settings, metrics_file=tmp_path / "m" / "vigo.prom")

    def boom(*_args):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(rec, "_run_apply", boom)
    monkeypatch.setattr(rec.compose, "containers", lambda project="": ())
    rec.apply()
    text = (tmp_path / "m" / "vigo.prom").read_text()
    assert "\nvigo_last_run_success 0\n" in text
    assert "\nvigo_consecutive_failures 1\n" in text
