"""config.parse_toml: what tomllib returns (or raises), read without tomllib for flat files."""

from __future__ import annotations

import sys
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigo import config
from vigo.config import parse_toml

# Read by the flat reader: tomllib is never asked.
FLAT = [
    "",
    "\n",
    "\n\n\n",
    " \t \n",
    "# only a comment",
    "# comment with \"quotes\", 'apostrophes', [brackets] = and # more",
    "   # indented comment\n",
    '#\t tab in a comment\n',
    'repo = "https://example.test/infra.git"\n',
    'repo="x"',
    'repo   =   "x"   ',
    '\trepo\t=\t"x"\t# trailing\n',
    'repo = "x"#no space',
    'repo = ""\n',
    "repo = ''\n",
    "repo = 'C:\\path\\with\\backslashes'\n",
    "repo = 'single \"double\" inside'\n",
    "repo = \"it's\"\n",
    'repo = "a # not a comment"\n',
    "repo = 'a # not a comment'\n",
    'repo = "caf\u00e9 \u2603 \U0001f600"\n',
    '# caf\u00e9\n',
    'repo = "x"\nbranch = "main"\nhost = "web-1"\n',
    "git_timeout = 120\n",
    "git_timeout = 0\n",
    "git_timeout = -0\n",
    "git_timeout = -5\n",
    "git_timeout = 123456789012345678901234567890\n",
    "secrets_on_disk = true\n",
    "secrets_on_disk = false # no\n",
    "allow_caps = []\n",
    "allow_caps = [ ]\n",
    'allow_caps = ["CHOWN"]\n',
    'allow_caps = ["CHOWN",]\n',
    'allow_caps = [ "CHOWN" , \'KILL\' , ]  # two\n',
    'allow_caps = ["a,b", \'e"f\', "g\'h", "#", "[", \'[\']\n',
    'allow_caps = [""]\n',
    'allow_caps = ["a", "#"] # c]\n',
    "true = 1\nfalse = 2\n1234 = 3\n-_- = 4\n",
    'A-b_C = "mixed-case key"\n',
    'repo = "x"\n\n# done\n\n',
]

# Outside the flat subset: tomllib reads them (or refuses them) and parse_toml says the same.
OTHER = [
    'repo = "esc\\"aped"\n',
    'repo = "tab\\tescape"\n',
    'repo = "\\u00e9"\n',
    'repo = """multi\nline"""\n',
    "repo = '''multi\nline'''\n",
    'repo = """one line"""\n',
    "repo = '''one line'''\n",
    'repo = """"""\n',
    "git_timeout = +5\n",
    "git_timeout = 1_000\n",
    "git_timeout = 0x10\n",
    "git_timeout = 0o17\n",
    "git_timeout = 0b11\n",
    "git_timeout = 1.5\n",
    "git_timeout = 1e3\n",
    "git_timeout = inf\n",
    "git_timeout = nan\n",
    "when = 1979-05-27\n",
    "when = 1979-05-27T07:32:00Z\n",
    "when = 07:32:00\n",
    "t = { a = 1 }\n",
    'allow_caps = [\n  "CHOWN",\n  "KILL",\n]\n',
    'allow_caps = ["c]d"]\n',  # the first `]` ends the array for the flat reader
    "allow_caps = ['c]d', 'e']\n",
    "allow_caps = [1, 2]\n",
    "allow_caps = [true]\n",
    'allow_caps = [["nested"]]\n',
    'allow_caps = ["a" "b"]\n',
    "allow_caps = [,]\n",
    'allow_caps = ["a",,]\n',
    '[table]\nkey = "v"\n',
    'repo = "x"\n[table]\n',
    '[[array]]\nkey = "v"\n',
    'a.b = "dotted"\n',
    '"quoted" = "key"\n',
    "'quoted' = \"key\"\n",
    'repo = "x"\r\n',
    'repo = "x"\r\nhost = "y"\r\n',
    'repo = "x"\r',
    'repo = "x"\nrepo = "y"\n',
    "a = 1\na = 1\n",
    "repo = \n",
    "repo\n",
    '= "x"\n',
    'repo = "x" "y"\n',
    'repo = "x" junk\n',
    "repo = 'unterminated\n",
    'repo = "unterminated\n',
    'repo = "ctl\x01"\n',
    'repo = "del\x7f"\n',
    "# comment with a control \x01 character\n",
    "# comment with del \x7f\n",
    'repo = "x"\x0c\n',
    '\ufeffrepo = "bom"\n',
    'repo = "x"\nbranch = "main"\n[extra]\nk = 1\n',
    "secrets_on_disk = True\n",
    "secrets_on_disk = yes\n",
    "git_timeout = 007\n",
    "git_timeout = --5\n",
    "git_timeout = 5-\n",
    'k\u00e9y = "non-ascii key"\n',
    "a = b\n",
    'repo = "x" # ok\nhost = \n',
]


def outcome(fn, text):
    """What fn made of text, as a repr: nan equals nan, True is not 1."""
    try:
        return repr(("ok", fn(text)))
    except tomllib.TOMLDecodeError as exc:
        return repr(("error", str(exc)))


@pytest.mark.parametrize("text", FLAT + OTHER)
def test_the_same_as_tomllib(text):
    assert outcome(parse_toml, text) == outcome(tomllib.loads, text)


@pytest.mark.parametrize("text", FLAT)
def test_flat_files_are_read_without_tomllib(text, monkeypatch):
    monkeypatch.setitem(sys.modules, "tomllib", None)  # an import of it would raise
    assert parse_toml(text) == tomllib.loads(text)


@pytest.mark.parametrize("text", OTHER)
def test_every_other_file_goes_to_tomllib(text, monkeypatch):
    monkeypatch.setitem(sys.modules, "tomllib", None)
    with pytest.raises(ImportError):
        parse_toml(text)


def test_an_idle_settings_file_does_not_import_tomllib(tmp_path):
    import subprocess

    path = tmp_path / "vigo.toml"
    path.write_text('repo = "https://example.test/infra.git"\nhost = "web-1"\n'
                    'git_timeout = 60\nsecrets_on_disk = false\nallow_caps = ["CHOWN"]\n')
    code = ("import sys\nfrom pathlib import Path\nfrom vigo import config\n"
            f"config.load(Path({str(path)!r}), {{}})\nprint('tomllib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_a_settings_file_outside_the_subset_still_loads(tmp_path):
    path = tmp_path / "vigo.toml"
    path.write_text('repo = "https://example.test/infra.git"\nhost = "w\\u0065b"\n'
                    "git_timeout = 1_0\n")
    s = config.load(path, {})
    assert (s.host, s.git_timeout) == ("web", 10)


# Lines built from TOML's pieces, valid or not: whatever tomllib makes of the text, so does
# parse_toml.
PIECES = st.sampled_from([
    "repo", "a", "-", "_", "1", "true", "a.b", '"q"', "'q'", " ", "\t", "=", " = ", '"', "'",
    '"x"', "'x'", '""', "''", '"""', "'''", "\\", '"\\n"', "#", "# c", "[", "]", "[]", ",",
    "[ ", " ]", "0", "-0", "+1", "12", "007", "1_0", "1.5", "1e2", "true", "false", "inf",
    "1979-05-27", "{", "}", "\u00e9", "\x01", "\x7f", "\r", "\x0c", "[t]", "[[t]]",
])
LINES = st.lists(st.lists(PIECES, max_size=8).map("".join), max_size=6).map("\n".join)
KEY_LINES = st.lists(
    st.tuples(st.sampled_from(["repo", "host", "a", "a", "-k_1"]),
              st.sampled_from([" = ", "=", "\t=\t"]),
              st.lists(PIECES, min_size=1, max_size=5).map("".join)).map("".join),
    max_size=5).map("\n".join)


@settings(max_examples=600, deadline=None)
@given(st.one_of(LINES, KEY_LINES))
def test_fuzzed_the_same_as_tomllib(text):
    assert outcome(parse_toml, text) == outcome(tomllib.loads, text)
