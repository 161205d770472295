"""Command line: argument parsing, output and exit codes only."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vigo import __version__, config
from vigo.adapters.lock import Locked

EXIT_CODES = """exit codes:
  0   converged (plan: printed)
  1   one or more stacks failed, or a prune was refused (the others were applied)
  2   invalid settings or repo: nothing applied
  3   the repo could not be fetched: nothing changed
  75  another vigo run holds the lock: nothing done
"""


def _common(parser: argparse.ArgumentParser, default: object) -> None:
    """The options every command takes, before or after the command name."""
    parser.add_argument("--config", type=Path, metavar="FILE", default=default,
                        help="settings file (default /etc/vigo/vigo.toml; VIGO_<KEY> "
                             "environment variables override its keys)")
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="show every command run (secrets masked)")
    parser.add_argument("--json", action="store_true", default=default,
                        help="print a machine-readable report")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _common(common, argparse.SUPPRESS)
    p = argparse.ArgumentParser(
        prog="vigo", description="Pull-based GitOps for Docker Compose hosts.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(config=None, verbose=False, json=False)
    _common(p, argparse.SUPPRESS)
    p.add_argument("--version", action="version", version=f"vigo {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    apply = sub.add_parser(
        "apply", parents=[common], epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="fetch the infra repo and converge this host to it (one reconcile)",
        description="Lock, fetch, render the host's tree, decrypt env files, bring the proxy "
                    "and every stack up as its own compose project, prune stacks vigo deployed "
                    "that left the repo, record the outcome.")
    apply.add_argument("--allow-empty", action="store_true",
                       help="prune even when the rendered tree has no stacks at all")
    apply.add_argument("--force", action="store_true",
                       help="re-apply every stack (decrypt, compose up), changed or not")
    plan = sub.add_parser(
        "plan", parents=[common], epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="show what apply would do, changing nothing",
        description="Fetch and render like apply, in a private temp dir, and print per stack "
                    "create / update / remove / unchanged and why. Starts no container.")
    plan.add_argument("--no-fetch", action="store_true",
                      help="plan the checkout as it is, without fetching")
    plan.add_argument("--allow-empty", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = config.load(args.config)
    except config.ConfigError as exc:
        print(f"vigo: {exc}", file=sys.stderr)
        return 2
    from vigo.model import Options
    from vigo.reconcile import EXIT_LOCKED, Reconciler

    quiet = args.json
    reconciler = Reconciler(
        settings, verbose=args.verbose,
        emit=(lambda line: None) if quiet else (lambda line: print(line, flush=True)),
        debug=lambda line: print(line, file=sys.stderr, flush=True))
    try:
        if args.command == "apply":
            report = reconciler.apply(Options(allow_empty=args.allow_empty, force=args.force))
        else:
            report = reconciler.plan(Options(allow_empty=args.allow_empty), fetch=not args.no_fetch)
            if not quiet and report.plan is not None:
                print(f"plan for host {settings.host} at {report.revision[:12]}:")
                for action in report.plan.actions:
                    print("  " + reconciler.masker(action.line()))
                if report.plan.refusal:
                    print(f"  prune refused: {report.plan.refusal}")
    except Locked as exc:
        print(f"vigo: {exc}; nothing done", file=sys.stderr)
        return EXIT_LOCKED
    if quiet:
        print(reconciler.masker(json.dumps(report.to_json(), indent=2)))
    if args.command == "plan" and report.exit_code == 1 and report.plan is not None:
        return 0
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
