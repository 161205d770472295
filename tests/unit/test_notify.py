"""Notifications: transitions only for webhook and ntfy, every run for healthchecks pings,
masked texts, and a dead endpoint never fails a run. A local HTTP server receives them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.infra import free_port
from tests.support.receiver import Receiver
from vigo.adapters.run import Masker
from vigo.config import Settings
from vigo.core import notify, reasons
from vigo.core.model import Report, StackResult
from vigo.host import hooks, state

SECRET = "hunter2-the-password"


@pytest.mark.parametrize("announced, status, event", [
    (None, "ok", None),
    (None, "failed", "failure"),
    ("ok", "ok", None),
    ("ok", "failed", "failure"),
    ("failed", "failed", None),
    ("failed", "ok", "recovery"),
])
def test_pending(announced: str | None, status: str, event: str | None) -> None:
    assert notify.pending(announced, status) == event


@dataclass
class FakeReconciler:
    settings: Settings
    masker: Masker = field(default_factory=Masker)
    lines: list[str] = field(default_factory=list)

    def emit(self, line: str) -> None:
        self.lines.append(self.masker(line))

    def run(self) -> hooks.Run:
        """The data a real run hands the hooks (no engine here: no metrics file is set)."""
        return hooks.Run(self.settings, self.masker, self.emit, lambda: ())


def run(reconciler: FakeReconciler, st: state.RunRecord, ok: bool) -> Report:
    """What Reconciler.apply hands the hook at the end of a run."""
    report = Report("apply", reconciler.settings.host, revision="c0ffee" * 7)
    if not ok:
        report.reason = reasons.STACK_FAILED
        report.results = [
            StackResult("whoami", "update", False,
                        f"whoami: failed (docker compose up: invalid value {SECRET})",
                        reason=reasons.DEPLOY_FAILED),
            StackResult("echo", "unchanged", True, "echo: unchanged")]
        report.error = report.results[0].message
    hooks.finished(reconciler.run(), report, st)
    return report


def settings(tmp_path: Path, url: str, **extra: Any) -> Settings:
    return Settings(repo="x", host="web-1", state=tmp_path, notify_webhook=f"{url}/hook",
                    notify_ntfy=f"{url}/vigo-alerts", healthchecks_url=f"{url}/ping/abc",
                    **extra)


def test_failure_and_recovery_are_announced_once_each(tmp_path: Path) -> None:
    with Receiver() as rx:
        rec = FakeReconciler(settings(tmp_path, rx.url))
        rec.masker.add([SECRET])
        st = state.RunRecord.of({"stacks": {}})
        run(rec, st, ok=True)
        assert rx.paths() == ["POST /ping/abc"]  # first run ever, good: nothing to announce
        assert st["ops"] == {"consecutive_failures": 0, "announced": "ok"}
        rx.take()

        run(rec, st, ok=False)
        got = {r.path: r for r in rx.take()}
        assert set(got) == {"/ping/abc/fail", "/hook", "/vigo-alerts"}
        hook = json.loads(got["/hook"].body)
        assert hook["event"] == "failure" and hook["host"] == "web-1"
        assert hook["exit_code"] == 1 and hook["consecutive_failures"] == 1
        assert hook["revision"] == "c0ffee" * 7
        assert hook["failed_stacks"] == [
            {"stack": "whoami", "reason": "whoami: failed (docker compose up: invalid value ***)",
             "code": "DeployFailed"}]
        assert hook["code"] == "StackFailed"  # the named reasons, beside the prose
        assert got["/hook"].headers["Content-Type"] == "application/json"
        ntfy = got["/vigo-alerts"]
        assert ntfy.headers["Title"] == "vigo on web-1: apply failed"
        assert ntfy.headers["Priority"] == "high"
        assert "whoami: failed" in ntfy.text and "c0ffeec0ffee" in ntfy.text
        assert "(exit 1, StackFailed)" in ntfy.text and "- [DeployFailed] whoami" in ntfy.text
        assert "whoami: failed" in got["/ping/abc/fail"].text
        for r in got.values():
            assert SECRET not in r.text and SECRET not in json.dumps(r.headers)
        assert "notified (webhook, ntfy): vigo on web-1: apply failed" in rec.lines

        for _ in range(3):  # it stays failed: only the dead man's switch hears about it
            run(rec, st, ok=False)
        assert rx.paths() == ["POST /ping/abc/fail"] * 3
        assert st["ops"]["consecutive_failures"] == 4
        rx.take()

        run(rec, st, ok=True)
        got = {r.path: r for r in rx.take()}
        assert set(got) == {"/ping/abc", "/hook", "/vigo-alerts"}
        hook = json.loads(got["/hook"].body)
        assert hook["event"] == "recovery" and hook["consecutive_failures"] == 4
        assert hook["text"] == f"web-1 converged again at {'c0ffee' * 2} after 4 failed run(s)."
        assert got["/vigo-alerts"].headers["Priority"] == "default"
        assert st["ops"] == {"consecutive_failures": 0, "announced": "ok"}

        run(rec, st, ok=True)
        assert rx.paths() == ["POST /ping/abc"]


def test_an_unreachable_endpoint_warns_and_the_next_run_tries_again(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    rec = FakeReconciler(settings(tmp_path, dead))
    st = state.RunRecord.of({"stacks": {}})
    report = run(rec, st, ok=False)
    assert report.exit_code == 1  # unchanged by the hook
    assert any(w.startswith("notify webhook: cannot reach http://127.0.0.1") for w in
               report.warnings)
    assert any(w.startswith("healthchecks ping: cannot reach") for w in report.warnings)
    assert all("/hook" not in w and "/ping/abc" not in w for w in report.warnings)
    assert "announced" not in st["ops"]  # not announced: the next run tries again
    with Receiver() as rx:
        rec.settings = settings(tmp_path, rx.url)
        run(rec, st, ok=False)
        assert sorted(rx.paths()) == ["POST /hook", "POST /ping/abc/fail", "POST /vigo-alerts"]
        assert st["ops"]["announced"] == "failed"


def test_no_channel_configured_sends_nothing_and_keeps_counting(tmp_path: Path) -> None:
    rec = FakeReconciler(Settings(repo="x", host="h", state=tmp_path))
    st = state.RunRecord.of({"stacks": {"whoami": {
        "outcome": "failed", "reason": "whoami: x", "checked_at": "2024-01-01T00:00:00+00:00",
        "failed_revision": "r1"}}})
    run(rec, st, ok=False)
    run(rec, st, ok=False)
    assert st["ops"] == {"consecutive_failures": 2, "announced": "failed"}
    last = st["stacks"]["whoami"]["last_failure"]
    assert last["since"] == "2024-01-01T00:00:00+00:00" and last["ongoing"] is True
    st["stacks"]["whoami"].update(outcome="ok", reason="", checked_at="2024-01-02T00:00:00")
    run(rec, st, ok=True)
    assert st["stacks"]["whoami"]["last_failure"]["ongoing"] is False
    assert rec.lines == []


def test_a_bug_in_the_hook_becomes_a_warning(tmp_path: Path) -> None:
    rec = FakeReconciler(Settings(repo="x", host="h", state=tmp_path))
    report = Report("apply", "h")
    hooks.finished(rec.run(), report, None)  # type: ignore[arg-type]
    assert report.exit_code == 0
    assert report.warnings and report.warnings[0].startswith("after the run: AttributeError")
