"""vigo check over base and overlay trees: findings named by their repo file, deduplicated,
with the Compose key check standing in when `docker compose` is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.tree import write_tree
from vigo.core.lint import Policy
from vigo.workstation.check import check, schema_reason

APP = """services:
  web:
    image: ghcr.io/x/app:sha-1a2b3c4
{extra}"""




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
    repo = write_tree(tmp_path, files)
    assert ids(check(repo, Policy(), no_compose)) == expected


def test_validator_reason_wins_over_fallback(tmp_path: Path) -> None:
    repo = write_tree(tmp_path, {"stacks/a/compose.yaml": APP.format(extra="")})
    found = check(repo, Policy(), lambda path: f"{path} is bad")
    assert ids(found) == [("compose-valid", "stacks/a/compose.yaml")]
    assert "vigo-check-" not in found[0].message  # the temp tree never shows


def test_schema_reason_lists_unknown_service_keys(tmp_path: Path) -> None:
    path = write_tree(tmp_path, {"c.yaml": APP.format(extra="    x-mine: 1\n    nope: 2\n")})
    assert schema_reason(path / "c.yaml") == "unknown key(s) services.web.nope"


class _Res:
    def __init__(self, stdout: str = "", err: str = "") -> None:
        self.ok, self.stdout, self.err = not err, stdout, err

    def error(self, _n: int) -> str:
        return self.err


def test_resolved_judgement_names_rule_and_line(tmp_path: Path) -> None:
    repo = write_tree(tmp_path, {"stacks/a/compose.yaml": APP.format(extra="    pid: host\n")})
    model = {"services": {"web": {"image": "x", "pid": "host"}}}
    found = check(repo, Policy(), lambda _: "", resolve=lambda *_: _Res(json.dumps(model)))
    assert [(f.rule, f.path, f.line) for f in found if f.severity == "error"] == [
        ("host-namespace", "stacks/a/compose.yaml", 4)]


def test_resolved_judgement_replaces_the_text_privilege_rules(tmp_path: Path) -> None:
    # The text says privileged; the resolved model (what Docker runs) decides.
    repo = write_tree(tmp_path,
                      {"stacks/a/compose.yaml": APP.format(extra="    privileged: true\n")})
    model = {"services": {"web": {"image": "x", "privileged": True}}}
    found = check(repo, Policy(), lambda _: "", resolve=lambda *_: _Res(json.dumps(model)))
    assert ids(found) == [("privileged", "stacks/a/compose.yaml")]
    assert "allow_privileges" in next(f for f in found if f.rule == "privileged").fix


def test_placeholders_that_compose_refuses_are_unresolved(tmp_path: Path) -> None:
    repo = write_tree(tmp_path, {
        "stacks/a/compose.yaml": APP.format(extra="    ports: ['${P}:80']\n"),
        "env/a.env": "P=ENC[AES256_GCM,data:x]\nsops_mac=ENC[x]\n"})
    envs: list[str] = []

    def resolve(_project: str, _compose: Path, env: Path) -> _Res:
        envs.append(env.read_text())
        return _Res(err="invalid port")
    found = check(repo, Policy(), lambda _: "", resolve=resolve)
    assert [f.rule for f in found if f.severity == "error" and f.rule != "sops-coverage"] == [
        "unresolved"]
    assert envs == ["P=/vigo-placeholder/P\n", "P=47100\n"]  # path-shaped, then numbers


def test_without_docker_compose_the_text_rules_stand_in_and_say_so(tmp_path: Path) -> None:
    repo = write_tree(tmp_path,
                      {"stacks/a/compose.yaml": APP.format(extra="    privileged: true\n")})
    found = check(repo, Policy(), no_compose, resolve=lambda *_: None)
    assert ("privileged", "stacks/a/compose.yaml") in ids(found)
    assert "policy-resolved" in [f.rule for f in found if f.severity == "warning"]


def test_a_climbing_bind_is_reported_once(tmp_path: Path) -> None:
    repo = write_tree(tmp_path, {"stacks/a/compose.yaml": APP.format(
        extra="    volumes: ['../../../../etc:/x']\n")})
    model = {"services": {"web": {"image": "x", "volumes": [
        {"type": "bind", "source": "/etc", "target": "/x"}]}}}
    found = check(repo, Policy(), lambda _: "", resolve=lambda *_: _Res(json.dumps(model)))
    assert ids(found) == [("path-escape", "stacks/a/compose.yaml")]
