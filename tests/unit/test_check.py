"""vigo check over base and overlay trees: findings named by their repo file, deduplicated,
with the Compose key check standing in when `docker compose` is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigo.check import check, schema_reason
from vigo.lint import Policy

APP = """services:
  web:
    image: ghcr.io/x/app:sha-1a2b3c4
{extra}"""


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def no_compose(_: Path) -> None:
    return None


def ids(findings) -> list[tuple[str, str]]:
    return [(f.rule, f.path) for f in findings if f.severity == "error"]


@pytest.mark.parametrize(("files", "expected"), [
    pytest.param({"stacks/a/compose.yaml": APP.format(extra="")}, [], id="clean"),
    pytest.param({"stacks/a/compose.yaml": APP.format(extra=""),
                  "hosts/h1/stacks/a/compose.yaml": APP.format(extra="    privileged: true\n")},
                 [("privileged", "hosts/h1/stacks/a/compose.yaml")], id="overlay-named"),
    pytest.param({"stacks/a/compose.yaml": APP.format(extra="    privileged: true\n"),
                  "hosts/h1/stacks/a/notes.txt": "x", "hosts/h2/stacks/a/notes.txt": "y"},
                 [("privileged", "stacks/a/compose.yaml")], id="dedup-across-hosts"),
    pytest.param({"stacks/a/compose.yaml": APP.format(extra="    bogus_key: 1\n")},
                 [("compose-valid", "stacks/a/compose.yaml")], id="schema-fallback"),
])
def test_check(tmp_path: Path, files: dict[str, str], expected) -> None:
    repo = write(tmp_path, files)
    assert ids(check(repo, Policy(), no_compose)) == expected


def test_validator_reason_wins_over_fallback(tmp_path: Path) -> None:
    repo = write(tmp_path, {"stacks/a/compose.yaml": APP.format(extra="")})
    found = check(repo, Policy(), lambda path: f"{path} is bad")
    assert ids(found) == [("compose-valid", "stacks/a/compose.yaml")]
    assert "vigo-check-" not in found[0].message  # the temp tree never shows


def test_schema_reason_lists_unknown_service_keys(tmp_path: Path) -> None:
    path = write(tmp_path, {"c.yaml": APP.format(extra="    x-mine: 1\n    nope: 2\n")})
    assert schema_reason(path / "c.yaml") == "unknown key(s) services.web.nope"
