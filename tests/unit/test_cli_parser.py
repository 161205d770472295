"""The parser of one subcommand (what a run builds) parses, helps and refuses exactly as the
whole tree does (what `vigo --help` and an unknown name build)."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from vigo.cli import commands as cli


def _choices(parser: argparse.ArgumentParser) -> set[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_commands_is_every_subcommand():
    assert _choices(cli._parser()) == cli.COMMANDS


@pytest.mark.parametrize("argv, command", [
    (["apply"], "apply"),
    (["apply", "--timer"], "apply"),
    (["--config", "/etc/vigo/vigo.toml", "apply"], "apply"),
    (["--config", "apply", "status"], "status"),  # a settings file named like a command
    (["--conf", "apply", "status"], "status"),  # argparse's abbreviation takes a value too
    (["--c", "plan", "check"], "check"),
    (["--config=apply", "plan"], "plan"),
    (["-v", "--json", "--debug", "check", "."], "check"),
    (["host", "add", "web"], "host"),
    ([], None),
    (["--help"], None),
    (["-h", "apply"], None),
    (["--version"], None),
    (["--config", "x"], None),
    (["aply"], None),  # argparse's "invalid choice" lists every command
    (["--", "apply"], None),
])
def test_command(argv, command):
    assert cli._command(argv) == command


def _outcome(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[object, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result: object = vars(parser.parse_args(argv))
        except SystemExit as exc:
            result = ("exit", exc.code)
    return result, out.getvalue(), err.getvalue()


SAMPLES = [
    ["apply"], ["apply", "--timer", "--force", "-v"], ["--json", "apply", "--allow-empty"],
    ["plan", "--no-fetch"], ["plan", "--host", "web", "--repo", "r"],
    ["check", "infra", "--json"], ["retry", "app"],
    ["init", "d", "--age-recipient", "age1x"], ["host", "add", "web", "--age-recipient", "k"],
    ["status", "--json"], ["resume"], ["history"], ["install"],
]


@pytest.mark.parametrize("argv", SAMPLES + [[c, "--help"] for c in sorted(cli.COMMANDS)]
                         + [[c, "--no-such-option"] for c in sorted(cli.COMMANDS)]
                         + [[c] for c in sorted(cli.COMMANDS)])
def test_one_parser_is_the_whole_tree(argv):
    command = cli._command(argv)
    assert command is not None
    assert _outcome(cli._parser(command), argv) == _outcome(cli._parser(), argv)
