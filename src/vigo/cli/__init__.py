"""Argument parsing, dispatch and exit codes."""

from vigo.cli.commands import main

__all__ = ["main"]
