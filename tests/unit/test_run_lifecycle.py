"""One lifecycle for every apply (host/hooks.py): `vigo apply` by hand, the timer run and
bootstrap's first apply all pass the suspension gate and send the healthchecks start ping
before the run, and the end ping after it. A local HTTP server receives the pings; the
reconcile is the real one (it stops at its first check: no tmpfs, no age key)."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from tests.support.receiver import Receiver
from vigo.cli import ops as cli_ops
from vigo.config import Settings
from vigo.core.model import Report
from vigo.host import hooks, state, suspend

SRC = Path(__file__).resolve().parents[2] / "src" / "vigo"
ARGS = argparse.Namespace(verbose=False, debug=False)


def host(tmp_path: Path, url: str = "") -> Settings:
    return Settings(repo="https://git.invalid/infra.git", host="h1", state=tmp_path / "state",
                    checkout=tmp_path / "checkout", runtime=tmp_path / "runtime",
                    secrets=tmp_path / "secrets", age_key_file=tmp_path / "no-such-key",
                    healthchecks_url=f"{url}/ping/abc" if url else "")


def test_bootstrap_sends_the_start_ping_before_the_end_ping(tmp_path: Path) -> None:
    with Receiver() as rx:
        code = cli_ops.bootstrap_apply(ARGS, host(tmp_path, rx.url))
        assert code == 2  # the secrets folder is no tmpfs: nothing applied
        assert rx.paths() == ["GET /ping/abc/start", "POST /ping/abc/fail"]
    assert state.load(tmp_path / "state")[0]["exit_code"] == 2  # the run was recorded


def test_bootstrap_on_a_suspended_host_refuses_like_a_manual_apply(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = host(tmp_path)
    suspend.suspend(s.state, "moving the database", {"USER": "alice"})
    assert cli_ops.bootstrap_apply(ARGS, s) == hooks.EXIT_SUSPENDED
    err = capsys.readouterr().err
    assert "suspended by alice" in err and "vigo resume" in err
    assert "finished" not in state.load(s.state)[0]  # no run started


@pytest.mark.parametrize(("timer", "ignore", "code", "ran"), [
    (False, False, hooks.EXIT_SUSPENDED, False),
    (True, False, 0, False),
    (False, True, 0, True),
])
def test_the_gate_decides_for_every_caller(tmp_path: Path, timer: bool, ignore: bool,
                                           code: int, ran: bool) -> None:
    s = host(tmp_path)
    suspend.suspend(s.state, "", {"USER": "bob"})
    lines: list[str] = []
    calls: list[str] = []

    def apply() -> Report:
        calls.append("apply")
        return Report("apply", s.host)

    life = hooks.Lifecycle(s, out=lines.append, err=lines.append, timer=timer,
                           ignore_suspend=ignore)
    got, report = life.run(apply)
    assert got == code and bool(calls) == ran and (report is not None) == ran
    assert lines == [] if ran else "suspended by bob" in lines[0]


def test_a_failed_start_ping_warns_and_the_run_goes_on(tmp_path: Path) -> None:
    s = host(tmp_path, "http://127.0.0.1:9")
    lines: list[str] = []
    life = hooks.Lifecycle(s, out=lines.append, err=lines.append,
                           send=lambda *a: "cannot reach http://127.0.0.1:9")
    assert life.run(lambda: Report("apply", s.host))[0] == 0
    assert lines == ["warning: healthchecks start ping: cannot reach http://127.0.0.1:9"]


def test_no_circle_between_the_reconcile_and_its_hooks() -> None:
    """hooks takes data (Run, Report), never the Reconciler: it imports nothing of reconcile."""
    tree = ast.parse((SRC / "host" / "hooks.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("reconcile" in (m or "") for m in imported)
