"""Table-driven tests of vigo.core.dotenv: sops dotenv in, pairs out; pairs -> compose dotenv ->
pairs."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigo.core.dotenv import DotenvError, format_for_compose, key_names, parse_sops, parse_written

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize("text, pairs", [
    pytest.param("A=1\nB=two\n", [("A", "1"), ("B", "two")], id="plain"),
    pytest.param("# comment\n\n   \n  # indented comment\nA=1\n", [("A", "1")],
                 id="comments-and-blanks"),
    pytest.param("URL=postgres://u:p@db/x?a=b&c=d\n", [("URL", "postgres://u:p@db/x?a=b&c=d")],
                 id="equals-in-value"),
    pytest.param("KEY=line1\\nline2\\n\n", [("KEY", "line1\nline2\n")], id="newline-escapes"),
    pytest.param("A=\nB= spaced \nC=\"quoted\"\n", [("A", ""), ("B", " spaced "),
                                                     ("C", '"quoted"')], id="kept-verbatim"),
    pytest.param("A=x # not a comment\n", [("A", "x # not a comment")], id="hash-in-value"),
    pytest.param("my.key-1=v\n_X=y", [("my.key-1", "v"), ("_X", "y")], id="key-characters"),
])
def test_parse_sops(text, pairs):
    assert parse_sops(text) == pairs


@pytest.mark.parametrize("text, line", [
    pytest.param("A=1\njust text\n", 2, id="no-equals"),
    pytest.param("\n# c\n1A=x\n", 3, id="key-starts-with-digit"),
    pytest.param("A=1\n\n MY KEY=x\n", 3, id="space-in-key"),
    pytest.param("=value\n", 1, id="empty-key"),
])
def test_parse_sops_bad_lines(text, line):
    with pytest.raises(DotenvError, match=rf"^line {line}: not KEY=VALUE$"):
        parse_sops(text)


@pytest.mark.parametrize("value, written", [
    pytest.param("plain", '"plain"', id="plain"),
    pytest.param("", '""', id="empty"),
    pytest.param("pa$$word${HOME}", r'"pa\$\$word\${HOME}"', id="dollar"),
    pytest.param("a #b", '"a #b"', id="hash"),
    pytest.param("it's \"quoted\"", r'"it' + "'" + r's \"quoted\""', id="quotes"),
    pytest.param("C:\\path\\n", r'"C:\\path\\n"', id="backslashes"),
    pytest.param('{"a": [1, "$x"]}', r'"{\"a\": [1, \"\$x\"]}"', id="json"),
    pytest.param(PEM, '"' + PEM.replace("\n", r"\n") + '"', id="pem-multi-line"),
    pytest.param(" padded ", '" padded "', id="spaces"),
])
def test_format_for_compose_round_trip(value, written):
    text = format_for_compose([("KEY", value)])
    assert text == f"KEY={written}\n"
    assert parse_written(text) == [("KEY", value)]


@pytest.mark.parametrize("value", [
    pytest.param("a\x0cb", id="form-feed"),
    pytest.param("a\x1cb", id="file-separator"),
    pytest.param("a\x85b", id="next-line"),
    pytest.param("a\u2028b", id="line-separator"),
])
def test_round_trip_other_line_boundaries(value):
    assert parse_written(format_for_compose([("KEY", value)])) == [("KEY", value)]


KEYS = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,12}\Z")
VALUES = st.text(st.characters(exclude_characters="\0\r",
                               exclude_categories=("Cs",)))


@given(st.lists(st.tuples(KEYS, VALUES), max_size=5))
def test_round_trip_property(pairs):
    assert parse_written(format_for_compose(pairs)) == pairs


@pytest.mark.parametrize("text, names", [
    pytest.param("A=ENC[x]\n# B=1\nsops_version=3.9\nsops_mac=ENC[y]\nC=\n", ["A", "C"],
                 id="sops-metadata-skipped"),
    pytest.param("not a line\n1X=2\n", [], id="no-keys"),
])
def test_key_names(text, names):
    assert key_names(text) == names
