"""Fleets, the pure parts: host rules in .sops.yaml (text in, text out, comments kept) and the
offline plan of a host (what it runs, env key names only, whether it can decrypt its files)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.tree import write_tree
from vigo.core.lint import Policy
from vigo.workstation import fleet

OP = "age1" + "o" * 58
H1, H2, H3 = ("age1" + c * 58 for c in "pqr")
TEMPLATE = f"""\
# sops: first matching rule wins.
# Add an operator: append their key.
creation_rules:
  - path_regex: (^|/)env/[^/]+\\.env$
    age: ["{OP}"]
"""


def rules(text: str) -> list[tuple[str | None, list[str]]]:
    from ruamel.yaml import YAML

    doc = YAML(typ="safe").load(text)
    return [(r.get("path_regex"), fleet.recipients(r.get("age"))) for r in doc["creation_rules"]]


def test_add_host_puts_its_rule_first_and_its_key_in_the_base_rule() -> None:
    edit = fleet.add_host_rules(TEMPLATE, "web-1.eu", H1)
    assert edit.changed
    assert edit.text.startswith("# sops: first matching rule wins.\n# Add an operator")
    assert rules(edit.text) == [(r"(^|/)hosts/web-1\.eu/env/[^/]+\.env$", [H1, OP]),
                                (r"(^|/)env/[^/]+\.env$", [OP, H1])]
    assert f'["{OP}", {H1}]' in edit.text  # the base rule's quoting is kept, one line
    # sops's choice for each file, as it will make it: the first rule that matches
    assert fleet.first_rule(edit.patterns, "hosts/web-1.eu/env/app.env") == 0
    assert fleet.first_rule(edit.patterns, "hosts/web-1xeu/env/app.env") == 1  # dot escaped
    assert fleet.first_rule(edit.patterns, "env/global.env") == 1
    assert edit.targets == {0, 1}
    again = fleet.add_host_rules(edit.text, "web-1.eu", H1)
    assert not again.changed and again.text == edit.text


def test_second_host_gets_the_operators_only_and_rotation_swaps_one_key() -> None:
    text = fleet.add_host_rules(fleet.add_host_rules(TEMPLATE, "h1", H1).text, "h2", H2).text
    assert rules(text) == [(fleet.host_rule_regex("h1"), [H1, OP]),
                           (fleet.host_rule_regex("h2"), [H2, OP]),
                           (r"(^|/)env/[^/]+\.env$", [OP, H1, H2])]
    rotated = fleet.add_host_rules(text, "h1", H3)
    assert rules(rotated.text) == [(fleet.host_rule_regex("h1"), [H3, OP]),
                                   (fleet.host_rule_regex("h2"), [H2, OP]),
                                   (r"(^|/)env/[^/]+\.env$", [OP, H3, H2])]
    assert rotated.targets == {0, 2}
    assert any("key changed" in line for line in rotated.lines)


def test_host_rule_goes_above_a_wider_rule_and_keeps_the_base_rule_options() -> None:
    text = (f"creation_rules:\n- path_regex: ^hosts/.*\\.env$\n  age: {OP}\n"
            f"- path_regex: ^env/[^/]+\\.env$\n  age: {OP}\n  unencrypted_suffix: _plain\n"
            "  pgp: [F00D, BEEF]\n")
    edit = fleet.add_host_rules(text, "h1", H1)
    assert [p for p, _ in rules(edit.text)] == [fleet.host_rule_regex("h1"), r"^hosts/.*\.env$",
                                                r"^env/[^/]+\.env$"]
    assert f"age: {OP},{H1}\n" in edit.text  # a comma-separated string stays one
    assert "- path_regex: (^|/)hosts/h1" in edit.text  # the file's own indentation
    assert edit.text.count("unencrypted_suffix: _plain") == 2
    assert edit.text.count("pgp: [F00D, BEEF]") == 2 and "&" not in edit.text  # no alias


@pytest.mark.parametrize(("text", "name", "key", "why"), [
    (TEMPLATE, "../x", H1, "not a host name"),
    (TEMPLATE, "h1", "age1short", "not an age recipient"),
    (TEMPLATE, "h1", OP, "operator's key"),
    (fleet.add_host_rules(TEMPLATE, "h2", H2).text, "h1", H2, "already host h2's key"),
    ("creation_rules:\n  - path_regex: ^secrets/\n    age: [x]\n", "h1", H1, "no creation rule"),
    ("creation_rules:\n  - key_groups: [{age: [x]}]\n", "h1", H1, "no plain `age:`"),
    ("stores: {}\n", "h1", H1, "no creation_rules"),
])
def test_refusals(text: str, name: str, key: str, why: str) -> None:
    with pytest.raises(fleet.FleetError, match=re.escape(why)):
        fleet.add_host_rules(text, name, key)


def test_rule_host_reads_back_only_vigo_rules() -> None:
    assert fleet.rule_host(fleet.host_rule_regex("a.b_c-1")) == "a.b_c-1"
    assert fleet.rule_host(r"(^|/)hosts/a.b/env/[^/]+\.env$") is None  # unescaped dot
    assert fleet.rule_host(r"(^|/)env/[^/]+\.env$") is None
    assert fleet.rule_host(None) is None


def test_governed_files_follow_the_first_match() -> None:
    edit = fleet.add_host_rules(fleet.add_host_rules(TEMPLATE, "h2", H2).text, "h1", H1)
    files = ["env/global.env", "hosts/h1/env/a.env", "hosts/h2/env/a.env", "hosts/h9/env/a.env"]
    # h1's rule and the base rule: h9 has no rule, the base rule covers its overlay too
    assert fleet.governed(edit.patterns, files, edit.targets) == [
        "env/global.env", "hosts/h1/env/a.env", "hosts/h9/env/a.env"]


# --- the offline plan --------------------------------------------------------------------------

def enc(recipient: str, **values: str) -> str:
    """A sops-encrypted dotenv file (values never in clear: only their names)."""
    lines = [f"{k}=ENC[AES256_GCM,data:{v.encode().hex()},iv:aXY=,tag:dGFn,type:str]"
             for k, v in values.items()]
    lines += [f"sops_age__list_0__map_recipient={recipient}",
              "sops_mac=ENC[AES256_GCM,data:bWFj,iv:aXY=,tag:dGFn,type:str]"]
    return "\n".join(lines) + "\n"


APP = """\
services:
  web:
    image: ghcr.io/x/app:${{APP_TAG:-{tag}}}
  side:
    image: ghcr.io/x/side:${{SIDE_TAG}}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    sops = fleet.add_host_rules(fleet.add_host_rules(TEMPLATE, "h1", H1).text, "h2", H2).text
    files = {
        ".sops.yaml": sops,
        "stacks/app/docker-compose.yml": APP.format(tag="sha-1a2b3c4"),
        "env/global.env": enc(OP, TZ="UTC"),
        "env/app.env": enc(OP, SIDE_TAG="sha-9999999", API_TOKEN="hunter2-secret"),
        "hosts/h1/env/app.env": enc(H1, SIDE_TAG="sha-1111111", API_TOKEN="h1-secret"),
        "hosts/h2/stacks/app/docker-compose.yml": APP.format(tag="sha-5d6e7f8"),
        "hosts/h2/env/.gitkeep": "",
    }
    return write_tree(tmp_path, files)


def no_compose(_: Path) -> None:
    return None


def test_plan_of_a_host_shows_origin_images_and_key_names(repo: Path) -> None:
    h1, h2 = (fleet.plan_host(repo, h, Policy(), no_compose) for h in ("h1", "h2"))
    (app1,), (app2,) = h1.stacks, h2.stacks
    assert app1.compose_file == "stacks/app/docker-compose.yml"
    assert app2.compose_file == "hosts/h2/stacks/app/docker-compose.yml"
    # ${APP_TAG:-x}: no env file defines APP_TAG, so the default is what runs; SIDE_TAG is
    # defined in an env file whose value is secret: shown as written
    assert dict(app2.images) == {"web": "ghcr.io/x/app:sha-5d6e7f8",
                                 "side": "ghcr.io/x/side:${SIDE_TAG}"}
    assert [(e.path, e.keys) for e in app1.env] == [
        ("env/global.env", ("TZ",)), ("hosts/h1/env/app.env", ("API_TOKEN", "SIDE_TAG"))]
    assert h1.overlay == ("env/app.env",) and h2.overlay == ("stacks/app/docker-compose.yml",)
    # h1's own file is encrypted to it, the shared ones (to the operator only) are not yet
    assert {(f.rule, f.path) for f in h1.findings if f.severity == "error"} == {
        ("host-recipient", "env/global.env")}
    text = "\n".join(fleet.format_host(h1))
    assert "hosts/h1/env/app.env (overlay): API_TOKEN, SIDE_TAG" in text
    assert "secret" not in text and "1111111" not in text


def test_all_hosts_summary_counts_errors_per_host(repo: Path) -> None:
    (repo / "hosts/h2/stacks/app/docker-compose.yml").write_text("services: [broken\n")
    for rel in ("env/global.env", "env/app.env"):  # the shared files: every host a recipient
        (repo / rel).write_text((repo / rel).read_text() + "".join(
            f"sops_age__list_{i}__map_recipient={k}\n" for i, k in enumerate((H1, H2), 1)))
    plans = fleet.plan_fleet(repo, Policy(), no_compose)
    assert [(p.label, p.errors) for p in plans] == [("base", 0), ("h1", 0), ("h2", 1)]
    summary = fleet.format_summary(plans)
    assert summary[-1] == "2 host(s) and the base: errors in h2"
    assert any(line.startswith("  hosts/h2/stacks/app/docker-compose.yml:2: error "
                               "[compose-parse]") for line in summary)


ROUTED_APP = """\
services:
  web:
    image: ghcr.io/x/{name}:sha-1a2b3c4
    labels:
      - traefik.enable=true
      - traefik.http.routers.{name}.rule=Host(`${{APP_HOST}}`)
    networks: [proxy]
networks:
  proxy:
    external: true
    name: proxy_default
"""


@pytest.mark.parametrize("where, errors, warned", [
    pytest.param("own", 0, True, id="each-stack-its-own-env-file-no-clash"),
    pytest.param("global", 1, False, id="one-global-value-clashes"),
])
def test_all_hosts_reason_per_stack_about_shared_variable_names(
        tmp_path: Path, where: str, errors: int, warned: bool) -> None:
    files = {".sops.yaml": TEMPLATE,
             "env/global.env": enc(OP, TZ="UTC", **({"APP_HOST": "x"} if where == "global"
                                                    else {}))}
    for name in ("shop", "blog"):
        files[f"stacks/{name}/docker-compose.yml"] = ROUTED_APP.format(name=name)
        if where == "own":
            files[f"env/{name}.env"] = enc(OP, APP_HOST=f"{name}.example.com")
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    plans = fleet.plan_fleet(tmp_path, Policy(), no_compose)
    assert sum(p.errors for p in plans) == errors, [f.message for p in plans for f in p.findings]
    hosts = [f for p in plans for f in p.findings if f.rule == "traefik-host-unique"]
    assert all((f.severity == "warning") is warned for f in hosts) and hosts
    if warned:
        assert "waits for the real values" in hosts[0].message
    assert "example.com" not in "\n".join(line for p in plans for line in fleet.format_host(p))
