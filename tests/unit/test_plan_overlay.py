"""guard_overlay: a run whose hosts/<host>/ overlay vanished never prunes the stacks only the
overlay had (a renamed machine, a lost folder), unless --allow-empty confirms it. A table."""

from __future__ import annotations

import pytest

from vigo.core.model import CREATE, KEEP, REMOVE, UNCHANGED, Action, DesiredState, Options, Plan
from vigo.core.plan import guard_overlay, overlay_record


def desired(has_overlay: bool, overlay_stacks: tuple[str, ...] = ()) -> DesiredState:
    return DesiredState(revision="rev", host="web-2", files={}, env_files={}, stacks=(),
                        has_overlay=has_overlay, overlay_stacks=frozenset(overlay_stacks))


PLAN = Plan("rev", (Action("app", UNCHANGED), Action("shop", REMOVE, ("no longer in the repo",)),
                    Action("old", REMOVE, ("no longer in the repo",))))
LAST = {"host": "web-1", "stacks": ["shop"]}
WHY = ('hosts/web-2/ does not exist, but the last apply ran with hosts/web-1/ and its stack(s) '
       'shop: not pruning them (a renamed machine must not take its sites down); if this host '
       'is web-1, set host = "web-1" in the settings; if the overlay was removed on purpose, '
       'run `vigo apply --allow-empty` once')


@pytest.mark.parametrize("tree, last, options, kinds, refusal", [
    pytest.param(desired(False), LAST, Options(), {"shop": KEEP, "old": REMOVE}, WHY,
                 id="overlay-vanished-keeps-its-stacks"),
    pytest.param(desired(False), LAST, Options(allow_empty=True),
                 {"shop": REMOVE, "old": REMOVE}, "", id="allow-empty-confirms"),
    pytest.param(desired(True), LAST, Options(), {"shop": REMOVE, "old": REMOVE}, "",
                 id="overlay-still-there-stack-removed-from-it"),
    pytest.param(desired(False), {}, Options(), {"shop": REMOVE, "old": REMOVE}, "",
                 id="never-had-an-overlay"),
    pytest.param(desired(False), None, Options(), {"shop": REMOVE, "old": REMOVE}, "",
                 id="no-record"),
    pytest.param(desired(False), {"host": "web-1", "stacks": []}, Options(),
                 {"shop": REMOVE, "old": REMOVE}, "", id="overlay-had-no-stacks"),
    pytest.param(desired(False), ["junk"], Options(), {"shop": REMOVE, "old": REMOVE}, "",
                 id="corrupt-record"),
    pytest.param(desired(False), {"host": "web-1", "stacks": ["gone-already"]}, Options(),
                 {"shop": REMOVE, "old": REMOVE}, "", id="nothing-of-the-overlay-runs"),
])
def test_guard_overlay(tree, last, options, kinds, refusal) -> None:
    out = guard_overlay(PLAN, tree, last, options)
    assert {a.stack: a.kind for a in out.actions if a.stack != "app"} == kinds
    assert out.refusal == refusal
    assert out.actions[0] == PLAN.actions[0]


def test_an_earlier_refusal_is_kept() -> None:
    out = guard_overlay(Plan("rev", PLAN.actions, refusal="empty tree"), desired(False), LAST)
    assert out.refusal == f"empty tree; {WHY}"


@pytest.mark.parametrize("tree, record", [
    (desired(True, ("shop", "blog")), {"host": "web-2", "stacks": ["blog", "shop"]}),
    (desired(True), {"host": "web-2", "stacks": []}),
    (desired(False), {}),
])
def test_overlay_record(tree, record) -> None:
    assert overlay_record(tree) == record


def test_create_is_never_touched() -> None:
    the_plan = Plan("rev", (Action("new", CREATE),))
    assert guard_overlay(the_plan, desired(False), LAST) == the_plan
