"""The name and tag grammars live in core/model.py, once: render, lint, config, promote and fleet
call them. A table of names each accepts or refuses."""

from __future__ import annotations

import pytest

from vigo import config
from vigo.core import model
from vigo.core.lint.images import _classify_image
from vigo.workstation import fleet, promote


@pytest.mark.parametrize("name, ok", [
    ("app", True), ("a-b_c9", True), ("9lives", True), ("proxy", False), ("App", False),
    ("-app", False), ("_app", False), ("", False), ("app\n", False), ("a.b", False),
])
def test_stack_name(name: str, ok: bool) -> None:
    assert model.is_stack_name(name) is ok


@pytest.mark.parametrize("name, ok", [
    ("web-1", True), ("Web.example.org", True), ("a" * 253, True), ("a" * 254, False),
    ("-web", False), ("web\n", False), ("", False), ("we b", False),
])
def test_host_name_is_one_grammar_for_settings_fleet_and_promote(name: str, ok: bool) -> None:
    assert model.is_host_name(name) is ok
    assert bool(fleet.HOST_NAME.match(name)) is ok  # the cli matches this one
    env = {"VIGO_REPO": "/srv/infra", "VIGO_HOST": name}
    if ok:
        assert config.load(None, {**env, "VIGO_CONFIG": "/nonexistent"}).host == name
    elif name:  # '' takes the machine's name
        with pytest.raises(config.ConfigError, match="is not a valid host name"):
            config.load(None, {**env, "VIGO_CONFIG": "/nonexistent"})


@pytest.mark.parametrize("tag, pinned", [
    ("sha-1a2b3c4", True), ("sha-" + "a" * 40, True), ("sha-" + "a" * 41, False),
    ("sha-1a2b3c", False), ("sha256:" + "0" * 64, True), ("sha256:" + "0" * 63, False),
    ("latest", False), ("v1.2", False), ("sha-1a2b3c4\n", False),
])
def test_pinned_tag_is_one_grammar_for_lint_and_promote(tag: str, pinned: bool) -> None:
    assert model.is_pinned_tag(tag) is pinned
    ref = f"ghcr.io/o/web@{tag}" if tag.startswith("sha256:") else f"ghcr.io/o/web:{tag}"
    assert (_classify_image(ref)[0] == "pinned") is pinned
    assert promote.is_pinned(ref) is pinned


def test_located() -> None:
    assert model.located("stacks/app/compose.yaml", 7) == "stacks/app/compose.yaml:7"
    assert model.located("stacks/app/compose.yaml", None) == "stacks/app/compose.yaml"


def test_default_caps_are_one_list() -> None:
    from vigo.core.policy import DEFAULT_CAPS, Policy

    settings = config.load(None, {"VIGO_REPO": "/srv/infra", "VIGO_CONFIG": "/nonexistent"})
    assert config.policy_of(settings) == Policy() and set(model.DEFAULT_CAPS) == DEFAULT_CAPS
