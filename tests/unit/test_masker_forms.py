"""The masker hides every form a tool prints a secret in: JSON-escaped (Python's and Go's),
Go-quoted (%q), shell-quoted, URL-encoded, the lines of a multi-line value, and a piece of a
value cut at a line's end or start. Properties over random values, tables, and the real
`docker compose config`."""

from __future__ import annotations

import json
import shlex
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigo.adapters.run import MASK, Masker, Runner, forms, go_quote

# '*' is left out: a value holding *** cannot be told from its mask.
CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="*")
VALUES = st.text(CHARS, min_size=4, max_size=40).map(str.strip).filter(lambda v: len(v) >= 4)
TEXT = st.text(CHARS, max_size=30)


def every_form(value: str) -> set[str]:
    return {f for f in forms(value) if len(f) >= 4}


@settings(max_examples=200, deadline=None)
@given(VALUES, TEXT, TEXT, st.data())
def test_no_form_of_a_value_survives(value, before, after, data):
    mask = Masker()
    mask.add([value])
    shown = data.draw(st.sampled_from(sorted(every_form(value))))
    out = mask(before + shown + after)
    for form in every_form(value):
        assert form not in out


@settings(max_examples=200, deadline=None)
@given(st.lists(VALUES, min_size=1, max_size=4), TEXT)
def test_several_values_in_one_text(values, glue):
    mask = Masker()
    mask.add(values)
    out = mask(glue.join(f"{json.dumps(v)} {go_quote(v)} {quote(v, safe='')}" for v in values))
    for value in values:
        for form in every_form(value):
            assert form not in out


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(whitelist_categories=("L", "N")), min_size=9, max_size=40),
       st.data())
def test_a_value_cut_at_a_line_end_or_start(value, data):
    cut = data.draw(st.integers(min_value=max(8, (len(value) + 1) // 2),
                                max_value=len(value) - 1))
    mask = Masker()
    mask.add([value])
    head = mask(f"error in line 3: X={value[:cut]}\nnext")
    tail = mask(f"{value[-cut:]} continued\n")
    assert value[:cut] not in head and value[-cut:] not in tail
    assert head.endswith(f"X={MASK}\nnext") and tail == f"{MASK} continued\n"


@pytest.mark.parametrize(("value", "go", "go_ascii"), [
    ('a"b\\c\n\t\x01é', 'a\\"b\\\\c\\n\\t\\x01é', 'a\\"b\\\\c\\n\\t\\x01\\u00e9'),
    ("bell\a\x7f\u0085", "bell\\a\\x7f\\u0085", "bell\\a\\x7f\\u0085"),
    ("emoji 😀", "emoji 😀", "emoji \\U0001f600"),
])
def test_go_quote_matches_strconv(value, go, go_ascii):
    """Outputs of Go's strconv.Quote and QuoteToASCII for these inputs."""
    assert go_quote(value) == go and go_quote(value, ascii_only=True) == go_ascii


def test_the_forms_of_one_value():
    value = "p&ss w'rd<\"x\">"
    assert forms(value) >= {
        value, json.dumps(value)[1:-1], 'p\\u0026ss w\'rd\\u003c\\"x\\"\\u003e',
        shlex.quote(value), quote(value, safe=""), quote_plus(value)}


def test_short_fragments_and_short_values_stay(tmp_path):
    mask = Masker()
    mask.add(["0123456789abcdef", "postgres://app:pw@db:5432/shop"])
    assert mask("port 0123456\n") == "port 0123456\n"  # 7 characters: not a fragment
    assert mask("id 01234567\n") == f"id {MASK}\n"
    assert mask("stack postgres\n") == "stack postgres\n"  # less than half the value
    assert mask("db: postgres://app:pw@\n") == f"db: {MASK}\n"


def test_real_compose_config_output_is_masked(tmp_path):
    """`docker compose config --format json` prints the value JSON-escaped (Go's encoder)."""
    secret = 'pa"ss\\w<o>rd&1'
    (tmp_path / "e.env").write_text(f"SECRET='{secret}'\n")
    (tmp_path / "c.yml").write_text("services:\n  a:\n    image: x:1\n    environment:\n"
                                    "      S: ${SECRET}\n")
    mask = Masker()
    mask.add([secret])
    res = Runner(mask).run(("docker", "compose", "--project-name", "vigo-mask-test", "--file",
                            str(tmp_path / "c.yml"), "--env-file", str(tmp_path / "e.env"),
                            "config", "--format", "json"), mask_output=False)
    assert res.ok, res.stderr
    assert json.loads(res.stdout)["services"]["a"]["environment"]["S"] == secret
    shown = mask(res.stdout)
    assert '"S": "***"' in shown
    for form in every_form(secret):
        assert form not in shown
