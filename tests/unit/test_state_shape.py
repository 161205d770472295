"""state.json of the wrong shape: a warning, the bad parts dropped, never a traceback; the next
save writes a whole file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigo.host import state

GOOD_RECORD = {"hash": "h", "digests": {"a": "d"}, "revision": "r", "containers": {"c": "x"},
               "images": [["r", ["app:1"]]], "outcome": "ok", "reason": "",
               "last_failure": {"since": "t", "at": "t", "revision": "r", "reason": "x",
                                "ongoing": False}}


def load(tmp_path: Path, data: object) -> tuple[dict, str]:
    state.path(tmp_path).write_text(json.dumps(data))
    return state.load(tmp_path)


@pytest.mark.parametrize(("data", "dropped"), [
    ({"version": 1, "stacks": []}, "stacks"),
    ({"version": 1, "stacks": {"web": "up"}}, "stacks.web"),
    ({"version": 1, "stacks": {"web": {**GOOD_RECORD, "hash": 5}}}, "stacks.web.hash"),
    ({"version": 1, "stacks": {"web": {**GOOD_RECORD, "images": [["r", "app:1"]]}}},
     "stacks.web.images"),
    ({"version": 1, "stacks": {"web": {**GOOD_RECORD, "images": {"r": []}}}},
     "stacks.web.images"),
    ({"version": 1, "stacks": {"web": {**GOOD_RECORD, "containers": {"c": 1}}}},
     "stacks.web.containers"),
    ({"version": 1, "stacks": {"web": {**GOOD_RECORD, "last_failure": {"at": "t"}}}},
     "stacks.web.last_failure"),
    ({"version": 1, "env": ["env/a.env"]}, "env"),
    ({"version": 1, "env": {"env/a.env": 3}}, "env.env/a.env"),
    ({"version": 1, "ops": {"consecutive_failures": "many"}}, "ops.consecutive_failures"),
    ({"version": 1, "ops": 7}, "ops"),
    ({"version": 1, "exit_code": "0"}, "exit_code"),
    ({"version": 1, "exit_code": True}, "exit_code"),
    ({"version": 1, "revision_applied": ["x"]}, "revision_applied"),
])
def test_wrong_shapes_are_dropped_with_a_warning(tmp_path, data, dropped):
    st, warning = load(tmp_path, data)
    assert f"dropped what had the wrong shape ({dropped})" in warning
    assert isinstance(st["stacks"], dict) and isinstance(st["env"], dict)
    state.save(tmp_path, st)
    again, warning = state.load(tmp_path)
    assert warning == "" and again == st


def test_a_good_state_is_kept_as_it_is(tmp_path):
    data = {"version": state.VERSION, "stacks": {"web": GOOD_RECORD}, "env": {"env/a.env": "d"},
            "ops": {"consecutive_failures": 2, "announced": "failed"}, "exit_code": 1,
            "duration": 1.5, "revision_applied": "r", "custom": [1]}
    st, warning = load(tmp_path, data)
    assert warning == "" and st == data


@pytest.mark.parametrize("raw", [b"[1, 2]", b"\xff\xfe{", b"{" * 100_000, b"not json", b"7"])
def test_unreadable_or_foreign_files_start_empty(tmp_path, raw):
    state.path(tmp_path).write_bytes(raw)
    st, warning = state.load(tmp_path)
    assert st == {"version": state.VERSION, "stacks": {}, "env": {}} and warning


def test_a_state_json_that_is_a_folder(tmp_path):
    state.path(tmp_path).mkdir()
    st, warning = state.load(tmp_path)
    assert st["stacks"] == {} and "is unreadable" in warning


def test_the_reconciler_runs_on_a_healed_state(tmp_path):
    """What the reconciler and `vigo status` read from a record works on a healed one."""

    st, _ = load(tmp_path, {"version": 1, "stacks": {"web": {"outcome": "failed",
                                                             "last_failure": "x"}}})
    st.stacks["web"].note_failure("t")
    assert st["stacks"]["web"]["last_failure"]["ongoing"] is True


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=20)
KEYS = st.sampled_from([*state.TOP, *state.RECORD, *state.OPS, "version", "x"])
SHAPED = st.fixed_dictionaries(
    {"version": st.sampled_from([1, state.VERSION])},
    optional={"stacks": st.dictionaries(st.text(max_size=6), st.dictionaries(KEYS, JSON)) | JSON,
              "env": st.dictionaries(st.text(max_size=6), JSON) | JSON,
              "ops": st.dictionaries(KEYS, JSON) | JSON,
              **{k: JSON for k in state.TOP if k not in ("stacks", "env", "ops")}})


@settings(max_examples=100, deadline=None)
@given(SHAPED | JSON)
def test_any_json_loads_heals_and_saves_whole(data):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        state.path(folder).write_text(json.dumps(data))
        st_, _ = state.load(folder)
        assert isinstance(st_["stacks"], dict) and isinstance(st_["env"], dict)

        for record in st_["stacks"].values():  # what every run does with each record
            record.note_failure("t")
        state.save(folder, st_)
        again, warning = state.load(folder)
        assert warning == "" and again == st_
