"""The one YAML loader (yamlsafe): caps on size, nesting and alias expansion, checked on the
event stream before anything is built; lint, check and apply refuse what it refuses. Property
tests: random nested structures and alias graphs load or are refused, never anything else."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigo.core import render, yamlsafe
from vigo.core.lint import lint_stack, lint_tree
from vigo.core.yamlsafe import MAX_ALIAS_NODES, MAX_BYTES, MAX_DEPTH, YamlRefused

SHA = "ghcr.io/org/app:sha-1234567"


def bomb(levels: int, under: str = "x-bomb") -> str:
    lines = [f"{under}:", '  a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nservices: {{web: {{image: {SHA}}}}}\n"


def deep(levels: int) -> str:
    return (f"services: {{web: {{image: {SHA}, labels: " + "[" * levels + "]" * levels
            + "}}\n")


@pytest.mark.parametrize("text, what", [
    pytest.param(bomb(9), f"YAML aliases expand to more than {MAX_ALIAS_NODES} nodes "
                          "(an alias bomb?)", id="bomb-under-x-key"),
    pytest.param(bomb(9, "labels-anchor"), f"YAML aliases expand to more than "
                 f"{MAX_ALIAS_NODES} nodes (an alias bomb?)", id="bomb-under-any-key"),
    pytest.param("a: &a [x, x, x]\nb: &b [" + ", ".join(["*a"] * 30) + "]\n" + "".join(
        f"c{i}: *b\n" for i in range(1000)), f"YAML aliases expand to more than "
        f"{MAX_ALIAS_NODES} nodes (an alias bomb?)", id="wide-many-aliases"),
    pytest.param("x: &a {y: *a}\n", "the alias *a is inside the node it names (a recursive "
                 "structure)", id="recursive-alias"),
    pytest.param(deep(20_000), f"nests mappings and sequences more than {MAX_DEPTH} levels "
                 "deep", id="labels-20000-deep-flow"),
    pytest.param("services:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 100)),
                 f"nests mappings and sequences more than {MAX_DEPTH} levels deep",
                 id="deep-block"),
    pytest.param("x: " + "- " * 200 + "1\n", None, id="deep-compact-sequences"),
    pytest.param("services: {}\n" + "#" * MAX_BYTES, f"is {MAX_BYTES + 13} bytes, over the "
                 f"{MAX_BYTES // 1024} KiB limit of a YAML file vigo reads", id="too-big"),
    pytest.param("a: [unclosed\n", None, id="invalid"),
    pytest.param("a: 1\na: 2\n", None, id="duplicate-key"),
    pytest.param("--- a\n--- b\n", None, id="two-documents"),
    pytest.param("a: *nowhere\n", None, id="undefined-alias"),
])
def test_refused(text: str, what: str | None) -> None:
    started = time.monotonic()
    with pytest.raises(YamlRefused) as exc:
        yamlsafe.load(text)
    if what is not None:
        assert exc.value.what == what
    print(f"refused in {time.monotonic() - started:.3f}s")


@pytest.mark.parametrize("text", [
    "x-c: &c\n" + "".join(f"  l{j}: [a, b, c]\n" for j in range(25)) + "services:\n" + "".join(
        f"  s{i}: {{<<: *c, image: {SHA}}}\n" for i in range(99)),  # a big common block
    "x-common: &c {restart: always}\nservices:\n" + "".join(
        f"  s{i}: {{<<: *c, image: {SHA}}}\n" for i in range(200)),
    "services: {web: {image: app, labels: " + "[" * (MAX_DEPTH - 3) + "]" * (MAX_DEPTH - 3)
    + "}}\n",
    "a: &a [1, 2]\nb: *a\n",
    "? [a, b]\n: c\n",
])
def test_loaded(text: str) -> None:
    assert yamlsafe.load(text) is not None


def test_not_utf8() -> None:
    with pytest.raises(YamlRefused, match="is not UTF-8 text"):
        yamlsafe.load_bytes(b"services: {web: {image: caf\xe9}}\n")


# -- lint, check, apply: each refuses it before any walker (or compose) sees it --------------

@pytest.mark.parametrize("text", [bomb(9), bomb(12, "x-deeper"), deep(20_000)],
                         ids=["bomb", "bigger-bomb", "deep"])
def test_lint_refuses_in_time(tmp_path: Path, text: str) -> None:
    (tmp_path / "stacks/app").mkdir(parents=True)
    (tmp_path / "stacks/app/docker-compose.yml").write_text(text)
    started = time.monotonic()
    found = lint_stack(tmp_path, "app", Path("stacks/app/docker-compose.yml"), set(),
                       lint_tree.__defaults__[0])
    print(f"lint: {time.monotonic() - started:.3f}s")
    assert [f.rule for f in found] == ["yaml-caps"]
    assert found[0].message.startswith("stack 'app': stacks/app/docker-compose.yml ")


def test_an_included_bomb_is_refused(tmp_path: Path) -> None:
    (tmp_path / "stacks/app").mkdir(parents=True)
    (tmp_path / "stacks/app/docker-compose.yml").write_text(
        f"include: [extra.yml]\nservices: {{web: {{image: {SHA}}}}}\n")
    (tmp_path / "stacks/app/extra.yml").write_text(bomb(9))
    found = lint_tree(tmp_path)
    assert any(f.rule == "yaml-caps" and f.path == "stacks/app/extra.yml"
               and "alias bomb" in f.message for f in found)


def test_apply_refuses_before_compose(tmp_path: Path) -> None:
    for name, text in (("app", bomb(9)), ("good", f"services: {{web: {{image: {SHA}}}}}\n")):
        (tmp_path / f"stacks/{name}").mkdir(parents=True)
        (tmp_path / f"stacks/{name}/compose.yaml").write_text(text)
    desired = render.render(tmp_path, "h", "rev")
    assert render.yaml_problems(desired, ["app", "good"]) == {"app": (
        f"stacks/app/compose.yaml:7: YAML aliases expand to more than {MAX_ALIAS_NODES} nodes "
        "(an alias bomb?)")}


# -- properties ----------------------------------------------------------------------------

_scalars = st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none())


def _tree(depth_budget: int):
    return st.recursive(_scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)),
        max_leaves=depth_budget)


def _emit(node, anchors: list[str], aliases: st.DataObject, out: list[str], n: list[int]) -> None:
    """Flow-style YAML of `node`, with random anchors on collections and random aliases to
    earlier anchors in place of scalars."""
    if isinstance(node, (list, dict)):
        anchor = ""
        if aliases.draw(st.booleans()):
            n[0] += 1
            anchor = f"&a{n[0]} "
        out.append(anchor + ("[" if isinstance(node, list) else "{"))
        items = node if isinstance(node, list) else list(node.items())
        for i, item in enumerate(items):
            if i:
                out.append(", ")
            if isinstance(node, dict):
                out.append(f"{item[0]!r}: ")
                item = item[1]
            _emit(item, anchors, aliases, out, n)
        out.append("]" if isinstance(node, list) else "}")
        if anchor:
            anchors.append(anchor[1:-1])
    elif anchors and aliases.draw(st.booleans()):
        out.append("*" + aliases.draw(st.sampled_from(anchors)))
    else:
        out.append(repr(node) if isinstance(node, str) else str(node).lower())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_tree(40), st.data())
def test_random_alias_graphs_load_or_are_refused(tree, data) -> None:
    out: list[str] = []
    _emit(tree, [], data, out, [0])
    text = "x: " + "".join(out) + "\n"
    try:
        yamlsafe.load(text)
    except YamlRefused as exc:
        assert exc.what and "\n" not in exc.what


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="[]{}&*ab:, -\n'\"!?|>#%@`", max_size=200))
def test_random_text_loads_or_is_refused(text: str) -> None:
    with contextlib.suppress(YamlRefused):  # anything else fails the test
        yamlsafe.load(text)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=400))
def test_any_nesting_depth(levels: int) -> None:
    try:
        yamlsafe.load("x: " + "[" * levels + "]" * levels)
        assert levels < MAX_DEPTH
    except YamlRefused as exc:
        assert levels >= MAX_DEPTH and exc.cap


def test_fleet_and_promote_use_the_caps(tmp_path: Path) -> None:
    from vigo.workstation import fleet, promote

    path = tmp_path / "compose.yaml"
    path.write_text(deep(20_000))
    assert fleet._images(path) == []  # the compose-parse rule says why; never a RecursionError
    with pytest.raises(promote.PromoteError, match="alias bomb"):
        promote._round_trip(bomb(9), "stacks/app/compose.yaml")
