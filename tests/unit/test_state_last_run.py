"""An idle run writes its times to last-run.json (no fsync) instead of rewriting state.json;
`state.load` lays them over state.json's, so `vigo status` shows the last run."""

from __future__ import annotations

import json
import os

import pytest

from vigo.host import state


def _run(started: str, **more) -> dict:
    st = {"version": state.VERSION, "env": {}, "exit_code": 0, "error": "",
          "revision_applied": "r1",
          "stacks": {"app": {"hash": "h1", "revision": "r1", "outcome": "ok",
                             "checked_at": started},
                     "old": {"hash": "h0", "revision": "r0"}}}
    st.update(started=started, finished=started, duration=0.1, **more)
    return st


@pytest.fixture
def fsyncs(monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    return calls


def test_idle_run_writes_only_its_times(tmp_path, fsyncs):
    state.save(tmp_path, _run("2026-12-01T10:00:00+00:00"))
    assert len(fsyncs) == 1 and not (tmp_path / state.LAST_RUN).exists()
    before = state.path(tmp_path).read_bytes()
    state.save(tmp_path, _run("2026-12-01T10:01:00+00:00"))
    assert state.path(tmp_path).read_bytes() == before  # not rewritten
    assert len(fsyncs) == 1  # and nothing fsynced
    assert json.loads((tmp_path / state.LAST_RUN).read_text()) == {
        "started": "2026-12-01T10:01:00+00:00", "finished": "2026-12-01T10:01:00+00:00",
        "duration": 0.1, "checked_at": {"app": "2026-12-01T10:01:00+00:00"}}
    st, warning = state.load(tmp_path)
    assert warning == "" and st == _run("2026-12-01T10:01:00+00:00")


@pytest.mark.parametrize("change", [
    {"exit_code": 1, "error": "boom"},  # a failed run after a good one
    {"revision_applied": "r2"},
    {"ops": {"consecutive_failures": 0}},
])
def test_any_other_change_writes_the_whole_file(tmp_path, fsyncs, change):
    state.save(tmp_path, _run("2026-12-01T10:00:00+00:00"))
    state.save(tmp_path, _run("2026-12-01T10:01:00+00:00"))  # idle: last-run.json
    state.save(tmp_path, _run("2026-12-01T10:02:00+00:00", **change))
    assert len(fsyncs) == 2
    assert not (tmp_path / state.LAST_RUN).exists()
    assert json.loads(state.path(tmp_path).read_text()) == _run("2026-12-01T10:02:00+00:00",
                                                                **change)
    assert state.load(tmp_path)[0] == _run("2026-12-01T10:02:00+00:00", **change)


def test_a_stack_record_change_writes_the_whole_file(tmp_path, fsyncs):
    state.save(tmp_path, _run("2026-12-01T10:00:00+00:00"))
    st = _run("2026-12-01T10:01:00+00:00")
    st["stacks"]["app"]["hash"] = "h2"
    state.save(tmp_path, st)
    assert len(fsyncs) == 2 and state.load(tmp_path)[0] == st


@pytest.mark.parametrize("last_run", [
    "",  # a power cut before the (unsynced) data reached the disk
    "{not json",
    "[]",
    json.dumps({"started": 5, "finished": "x", "duration": 1}),
    json.dumps({"started": "2026-12-01T11:00:00+00:00", "duration": True}),
    json.dumps({"started": "2026-12-01T11:00:00+00:00", "stacks": {}}),  # never more than times
    json.dumps({"finished": "2026-12-01T11:00:00+00:00"}),
    json.dumps({"started": "2026-12-01T11:00:00+00:00", "checked_at": {"app": 5}}),
    json.dumps({"started": "2026-12-01T11:00:00+00:00", "checked_at": ["app"]}),
    json.dumps({"started": "2026-12-01T09:00:00+00:00", "finished": "2026-12-01T09:00:01+00:00",
                "duration": 1.0}),  # older than state.json (a crash between write and unlink)
])
def test_a_bad_or_older_last_run_is_ignored(tmp_path, last_run):
    state.save(tmp_path, _run("2026-12-01T10:00:00+00:00"))
    (tmp_path / state.LAST_RUN).write_text(last_run)
    assert state.load(tmp_path) == (_run("2026-12-01T10:00:00+00:00"), "")


def test_last_run_alone_shows_earlier_runs(tmp_path):
    """state.json lost but last-run.json there: earlier runs, so a warning."""
    state.save(tmp_path, _run("2026-12-01T10:00:00+00:00"))
    state.save(tmp_path, _run("2026-12-01T10:01:00+00:00"))
    state.path(tmp_path).unlink()
    st, warning = state.load(tmp_path)
    assert "missing" in warning and st["stacks"] == {}


def test_checked_at_of_a_stack_no_longer_there_is_ignored(tmp_path):
    state.save(tmp_path, _run("2026-12-01T10:00:00+00:00"))
    (tmp_path / state.LAST_RUN).write_text(json.dumps(
        {"started": "2026-12-01T11:00:00+00:00", "checked_at": {"gone": "x", "old": "y"}}))
    st, _ = state.load(tmp_path)
    assert "gone" not in st["stacks"] and st["stacks"]["old"]["checked_at"] == "y"
    assert st["started"] == "2026-12-01T11:00:00+00:00"
