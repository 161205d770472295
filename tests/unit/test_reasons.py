"""Named reasons (core/reasons.py): one table from a run's reason to its exit code, the help
text written from it, and the reason every stack result and report carries."""

from __future__ import annotations

import json

import pytest

from vigo.cli import commands
from vigo.core import reasons, trust
from vigo.core.model import (
    CREATE,
    FAIL,
    HOLD,
    KEEP,
    REMOVE,
    UNCHANGED,
    UPDATE,
    Report,
    StackResult,
)
from vigo.host import hooks, reconcile


def test_every_exit_code_of_the_help_comes_from_the_table() -> None:
    text = commands.EXIT_CODES
    assert text == reasons.exit_codes_help()
    listed = {int(line.split()[0]) for line in text.splitlines()[1:]
              if line[2:3].isdigit()}
    assert listed == {code for code, _ in reasons.EXIT.values()} == {0, 1, 2, 3, 4, 75}
    assert all(len(line) <= 88 for line in text.splitlines())
    for code in listed:  # every code is explained by at least one reason
        assert any(c == code and why for c, why in reasons.EXIT.values())


def test_the_help_shows_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        commands.main(["apply", "--help"])
    out = capsys.readouterr().out
    assert "  75  another vigo run holds the lock: nothing done" in out
    assert "      or vigo is suspended (vigo suspend; apply --timer exits 0 then)" in out


@pytest.mark.parametrize(("reason", "code"), [
    (reasons.CONVERGED, 0), (reasons.STACK_FAILED, 1), (reasons.PRUNE_REFUSED, 1),
    (reasons.CRASHED, 1), (reasons.INTERRUPTED, 1), (reasons.SUSPENDED, 1),
    (reasons.SETTINGS_INVALID, 2), (reasons.SOURCE_FAILED, 3), (reasons.SIGNATURE_REFUSED, 4),
    (reasons.LOCKED, 75), ("SomethingNew", 1),
])
def test_exit_code_of_a_reason(reason: str, code: int) -> None:
    assert reasons.exit_code(reason) == code


def test_the_other_exit_constants_agree_with_the_table() -> None:
    assert reasons.exit_code(reasons.SIGNATURE_REFUSED) == trust.EXIT_REFUSED
    assert reasons.exit_code(reasons.SUSPENDED) == hooks.EXIT_SUSPENDED
    assert (reconcile.EXIT_OK, reconcile.EXIT_FAILED, reconcile.EXIT_INVALID,
            reconcile.EXIT_SOURCE, reconcile.EXIT_LOCKED) == (0, 1, 2, 3, 75)


@pytest.mark.parametrize(("result", "reason"), [
    (StackResult("a", CREATE, True, "a: created"), reasons.APPLIED),
    (StackResult("a", UPDATE, True, "a: updated"), reasons.APPLIED),
    (StackResult("a", UNCHANGED, True, "a: unchanged"), reasons.UNCHANGED),
    (StackResult("a", KEEP, True, "a: kept"), reasons.KEPT),
    (StackResult("a", REMOVE, True, "a: removed"), reasons.REMOVED),
    (StackResult("a", REMOVE, False, "a: failed to remove"), reasons.REMOVE_FAILED),
    (StackResult("a", HOLD, False, "a: held"), reasons.HELD),
    (StackResult("a", UPDATE, False, "a: rolled back", rolled_back_to="r1"),
     reasons.ROLLED_BACK),
    (StackResult("a", UPDATE, False, "a: failed"), reasons.DEPLOY_FAILED),
    (StackResult("a", FAIL, False, "a: failed", reason=reasons.DECRYPT_FAILED),
     reasons.DECRYPT_FAILED),
])
def test_every_result_carries_a_reason(result: StackResult, reason: str) -> None:
    assert result.reason == reason and result.reason in reasons.STACK
    assert result.to_json()["reason"] == reason
    assert (result.reason in reasons.OK) == result.ok


def test_the_report_json_names_its_reason() -> None:
    report = Report("apply", "h")
    assert report.to_json()["reason"] == "Converged" and report.exit_code == 0 and report.ok
    report.fail(reasons.SOURCE_FAILED, "cannot fetch")
    out = json.loads(json.dumps(report.to_json()))
    assert (out["reason"], out["exit_code"], out["error"]) == ("SourceFailed", 3, "cannot fetch")


def test_a_stack_the_plan_fails_names_where_it_failed(tmp_path) -> None:
    from vigo.config import Settings
    from vigo.core.model import DesiredState, Stack

    def stack(name: str, problems: tuple[str, ...] = ()) -> Stack:
        return Stack(name, f"stacks/{name}/compose.yaml", (), (), (), {}, "h", problems)

    rec = reconcile.Reconciler(Settings(repo="x", host="h", state=tmp_path))
    desired = DesiredState("r", "h", {}, {}, (stack("a", ("bad name",)), stack("b"), stack("c")))
    codes: dict[str, str] = dict.fromkeys(["b"], reasons.DECRYPT_FAILED)
    reconcile._coded(codes, {"b": "x", "c": "y"}, reasons.POLICY_REFUSED)  # only c is new
    assert codes == {"b": reasons.DECRYPT_FAILED, "c": reasons.POLICY_REFUSED}
    rec.fail_codes = codes
    assert [rec._fail_reason(desired, n) for n in "abcd"] == [
        reasons.RENDER_FAILED, reasons.DECRYPT_FAILED, reasons.POLICY_REFUSED,
        reasons.RESOLVE_FAILED]  # d: compose config's own error (Resolved.error)
