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
    plan.set_defaults(func=cmd_plan)
    apply.set_defaults(func=cmd_apply)
    check = sub.add_parser(
        "check", parents=[common],
        help="validate an infra repo offline (for its CI and pre-commit)",
        description="Render the repo as the base tree and as every hosts/<name>/ overlay and "
                    "check it: valid Compose, pinned images, encrypted env files covered by "
                    ".sops.yaml, no docker.sock / privileged / host namespaces / devices / "
                    "extra capabilities, paths inside the repo, no name: or container_name, "
                    "unique Traefik routers, services and hosts, routed services on the proxy "
                    "network, label variables defined, overlays holding only proxy/, stacks/, "
                    "env/, no symlinks. Exit 1 on any error, 0 with warnings only.")
    check.add_argument("dir", nargs="?", type=Path, default=Path("."), metavar="DIR",
                       help="the infra repo (default: the current folder)")
    check.set_defaults(func=cmd_check)
    init = sub.add_parser(
        "init", parents=[common], help="scaffold a new infra repo that works as it is",
        description="Write the design's layout into DIR: a Traefik proxy (HTTPS with an ACME "
                    "resolver, HTTP redirected), a whoami stack pinned to a sha- tag and routed "
                    "by Host(`${WHOAMI_HOST}`), env files encrypted with sops before anything "
                    "is committed, .sops.yaml, hosts/README.md, a runbook README, the app-repo "
                    "CI workflow (ci/app-image.yml), a pre-commit hook; then git init and a "
                    "first commit.")
    init.add_argument("dir", type=Path, metavar="DIR")
    key = init.add_mutually_exclusive_group(required=True)
    key.add_argument("--age-recipient", metavar="KEY", help="age public key (age1...) to "
                     "encrypt the env files to")
    key.add_argument("--age-keygen", type=Path, metavar="FILE",
                     help="create an age identity in FILE (never overwritten; must be outside "
                          "DIR) and encrypt to it")
    init.add_argument("--domain", default="example.com", help="whoami is served at whoami.DOMAIN")
    init.add_argument("--email", default="ops@example.com", help="ACME account e-mail")
    init.add_argument("--image", default=None, help="whoami's image, pinned (default: the "
                      "demo image built by scripts/build-images)")
    init.add_argument("--force", action="store_true", help="write into a non-empty DIR")
    init.set_defaults(func=cmd_init)
    return p


def _reconciler(args: argparse.Namespace, settings: config.Settings):
    from vigo.reconcile import Reconciler

    return Reconciler(
        settings, verbose=args.verbose,
        emit=(lambda line: None) if args.json else (lambda line: print(line, flush=True)),
        debug=lambda line: print(line, file=sys.stderr, flush=True))


def _finish(args: argparse.Namespace, reconciler, report) -> None:
    if args.json:
        print(reconciler.masker(json.dumps(report.to_json(), indent=2)))


def cmd_apply(args: argparse.Namespace, settings: config.Settings) -> int:
    from vigo.model import Options

    reconciler = _reconciler(args, settings)
    report = reconciler.apply(Options(allow_empty=args.allow_empty, force=args.force))
    _finish(args, reconciler, report)
    return report.exit_code


def cmd_plan(args: argparse.Namespace, settings: config.Settings) -> int:
    from vigo.model import Options

    reconciler = _reconciler(args, settings)
    report = reconciler.plan(Options(allow_empty=args.allow_empty), fetch=not args.no_fetch)
    if not args.json and report.plan is not None:
        print(f"plan for host {settings.host} at {report.revision[:12]}:")
        for action in report.plan.actions:
            print("  " + reconciler.masker(action.line()))
        if report.plan.refusal:
            print(f"  prune refused: {report.plan.refusal}")
    _finish(args, reconciler, report)
    if report.plan is not None:
        return 0  # failed stacks are part of the plan, not a failure to plan
    return report.exit_code


def cmd_check(args: argparse.Namespace, settings: config.Settings | None) -> int:
    from vigo import check
    from vigo.adapters.compose import Compose
    from vigo.adapters.run import Runner

    repo = args.dir.resolve()
    if not repo.is_dir():
        print(f"vigo: {args.dir} is not a folder", file=sys.stderr)
        return 2
    compose = Compose(Runner())
    findings = check.check(repo, check.policy_of(settings), compose.validate)
    if args.json:
        print(json.dumps(check.to_json(findings), indent=2))
    else:
        print("\n".join(check.format_text(findings, args.dir)))
    return 1 if any(f.severity == "error" for f in findings) else 0


def cmd_init(args: argparse.Namespace, settings: config.Settings | None) -> int:
    from vigo import scaffold
    from vigo.adapters.run import Runner

    runner = Runner()
    target = args.dir.resolve()
    try:
        if args.age_keygen:
            key_file = args.age_keygen.resolve()
            if key_file.is_relative_to(target):
                raise scaffold.InitError(f"{args.age_keygen} is inside {args.dir}: keep the "
                                         "private key out of the repo")
            if key_file.exists():
                print(f"{args.age_keygen}: exists, not overwritten; using its public key")
            else:
                key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                res = runner.run(("age-keygen", "-o", str(key_file)), timeout=30)
                if not res.ok:
                    raise scaffold.InitError(f"age-keygen failed: {res.error(2)}")
                key_file.chmod(0o600)
                print(f"{args.age_keygen}: new age identity (mode 0600): put it on each host "
                      "at /root/.config/sops/age/keys.txt")
            recipient = scaffold.recipient_of(key_file)
        else:
            recipient = args.age_recipient
        answers = scaffold.Answers(recipient=recipient, domain=args.domain, email=args.email,
                                   image=args.image or scaffold.DEFAULT_IMAGE)
        for line in scaffold.init(target, answers, runner, force=args.force):
            print(line)
    except scaffold.InitError as exc:
        print(f"vigo init: {exc}", file=sys.stderr)
        return 2
    return 0


# Commands that work without a settings file (on a workstation, in the infra repo's CI).
SETTINGS_OPTIONAL = {"check", "init"}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command in SETTINGS_OPTIONAL:
            settings = config.load_optional(args.config)
        else:
            settings = config.load(args.config)
    except config.ConfigError as exc:
        print(f"vigo: {exc}", file=sys.stderr)
        return 2
    try:
        return args.func(args, settings)
    except Locked as exc:
        print(f"vigo: {exc}; nothing done", file=sys.stderr)
        return 75


if __name__ == "__main__":
    sys.exit(main())
