"""The typed state (host/state.py): RunRecord and StackRecord read typed fields and make every
transition; an older file is migrated on load; what is saved loads back the same."""

from __future__ import annotations

import json
from pathlib import Path

from vigo.core import reasons
from vigo.host import state

V1 = {"version": 1, "exit_code": 3, "error": "cannot fetch", "revision_applied": "r1",
      "stacks": {"web": {"hash": "h1", "revision": "r1", "outcome": "ok", "reason": ""},
                 "api": {"hash": "h2", "outcome": "failed", "reason": "api: rolled back",
                         "rolled_back_to": "r0", "failed_hash": "h3"},
                 "db": {"hash": "h4", "outcome": "failed", "reason": "db: failed (x)"}},
      "env": {}}


def test_a_version_1_file_is_migrated_on_load(tmp_path: Path) -> None:
    state.path(tmp_path).write_text(json.dumps(V1))
    st, warning = state.load(tmp_path)
    assert warning == "" and st["version"] == state.VERSION == 2
    assert st.reason == reasons.SOURCE_FAILED  # from its exit code, through the table
    assert st.stacks["web"].code == reasons.APPLIED
    assert st.stacks["api"].code == reasons.ROLLED_BACK
    assert st.stacks["db"].code == ""  # not known for sure: no guess
    state.save(tmp_path, st)
    assert json.loads(state.path(tmp_path).read_text())["version"] == 2


def test_a_future_version_is_an_unknown_format(tmp_path: Path) -> None:
    state.path(tmp_path).write_text(json.dumps({**V1, "version": 99}))
    st, warning = state.load(tmp_path)
    assert st.stacks == {} and "unknown format" in warning


def test_the_transitions_of_a_stack(tmp_path: Path) -> None:
    st, _ = state.load(tmp_path)
    web = st.record("web")
    assert isinstance(web, state.StackRecord) and web.hash == "" and web.containers == {}
    web.mark_checked(False, "web: failed (boom)", reasons.HEALTH_CHECK_FAILED, "t1", "r2")
    web.hold("h2")
    assert web.failing and web.held("h2") and web.failed_revision == "r2"
    web.note_failure("t0")
    assert web.last_failure == state.LastFailure("t1", "t1", "r2", "web: failed (boom)",
                                                 reasons.HEALTH_CHECK_FAILED, True)
    assert web.retry() and not web.retry()  # once: nothing held any more
    web.mark_applied("h3", {"a": "d"}, "r3", "t2", {"web-1": "c"}, {}, ("proxy",))
    web.mark_checked(True, "web: updated", reasons.APPLIED, "t2", "r3")
    web.note_failure("t2")
    assert (web.hash, web.revision, web.after, web.failed_revision) == ("h3", "r3", ("proxy",), "")
    assert web.last_failure is not None and not web.last_failure.ongoing and web.reason == ""
    web.mark_rolled_back({"web-1": "old"}, "r3")
    assert web.rolled_back_to == "r3" and web.containers == {"web-1": "old"}
    assert web.remember_images("r1", ["a:1"], 2) == set()
    assert web.remember_images("r2", ["a:2"], 2) == set()
    assert web.remember_images("r3", ["a:3", ""], 2) == {"a:1"}
    assert web.kept_images() == {"a:2", "a:3"}
    web.ran_jobs([{"service": "migrate", "exit": 0, "hash": "j1"},
                  {"service": "seed", "exit": 1, "hash": "j2"}], "t3", "r3")
    assert web.job_hashes == {"migrate": "j1"} and web.jobs["seed"]["revision"] == "r3"

    assert st.count_run(ok=False) == 0 and st.count_run(ok=False) == 1
    assert st.consecutive_failures == 2 and st.announced is None
    st.announce("failed")
    st.attempt("r3")
    assert st.accept("r3") and not st.accept("r3")
    st.mark_applied("r3")
    st.finish("t4", 1.23456, 1, reasons.STACK_FAILED, "web: failed")
    state.save(tmp_path, st)
    again, warning = state.load(tmp_path)
    assert warning == "" and again == st
    assert isinstance(again.stacks["web"], state.StackRecord)
    assert (again.duration, again.reason, again.revision_accepted) == (1.235, "StackFailed", "r3")
    again.forget("web")
    assert again.stack("web") is None


def test_typed_reads_of_odd_values_never_raise() -> None:
    record = state.StackRecord(after="x", images=[["r"], "y"], jobs=[1], containers={"a": 1})
    assert record.after == () and not record.has_after
    assert record.images == [] and record.jobs == {} and record.containers == {}
