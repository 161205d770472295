"""Command line: argument parsing, output and exit codes only."""

from __future__ import annotations

import argparse
import atexit
import io
import json
import os
import signal
import sys
import threading
from pathlib import Path

from vigo import __version__, config
from vigo.adapters.lock import Locked, LockError
from vigo.cli import ops as cli_ops
from vigo.core import journal, reasons

# The `exit codes:` epilog, written from the one table (reason -> exit code) in core/reasons.py.
EXIT_CODES = reasons.exit_codes_help()


def _common(parser: argparse.ArgumentParser, default: object) -> None:
    """The options every command takes, before or after the command name."""
    parser.add_argument("--config", type=Path, metavar="FILE", default=default,
                        help="settings file (default /etc/vigo/vigo.toml; VIGO_<KEY> "
                             "environment variables override its keys)")
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="show every command run (secrets masked)")
    parser.add_argument("--json", action="store_true", default=default,
                        help="print a machine-readable report")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="on an unexpected error, also print its traceback (stderr, "
                             "secrets masked)")


def _columns() -> int:
    """`shutil.get_terminal_size().columns`, without importing shutil (and with it zlib, bz2
    and lzma) on every run: argparse asks at each `add_argument`."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _Width:
    """argparse's formatters, told the width (argparse would import shutil to learn it)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,  # type: ignore[call-arg]
                         _columns() - 2 if width is None else width)


class _Plain(_Width, argparse.HelpFormatter):
    pass


class _Raw(_Width, argparse.RawDescriptionHelpFormatter):
    pass


class _Skipped:
    """What `add_parser` returns for a subcommand that is not the one being run: every call
    on it (add_argument, set_defaults, groups, nested subparsers) does nothing."""

    def __getattr__(self, _name: str):
        return lambda *args, **kwargs: self


class _Only:
    """The subparsers action, building only the parser of `command` (an idle `vigo apply`
    need not pay for the ~80 arguments of the others; argparse formats each as it is added)."""

    def __init__(self, sub, command: str) -> None:
        self.sub, self.command = sub, command

    def add_parser(self, name: str, **kwargs):
        if name != self.command:
            return _Skipped()
        given = kwargs.get("formatter_class", argparse.HelpFormatter)
        width = {argparse.HelpFormatter: _Plain, argparse.RawDescriptionHelpFormatter: _Raw}
        return self.sub.add_parser(name, **{**kwargs, "formatter_class": width.get(given, given)})


# Every subcommand's name: a run of one of them builds only its parser (_command).
COMMANDS = frozenset({"apply", "plan", "check", "retry", "init", "promote", "rollback",
                      "history", "host", "install", "bootstrap", "status", "suspend", "resume"})


def _command(argv: list[str]) -> str | None:
    """The subcommand named in argv, or None (none, --help or --version first, a name vigo
    does not know): then the whole tree is built, for the full help or argparse's error."""
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help", "--version") or arg == "--":
            return None
        if len(arg) >= 3 and "--config".startswith(arg):  # argparse takes --conf FILE too
            next(args, None)
        elif not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """vigo's parser; with `command`, only that subcommand's parser is built."""
    common = argparse.ArgumentParser(add_help=False, formatter_class=_Plain)
    _common(common, argparse.SUPPRESS)
    p = argparse.ArgumentParser(
        prog="vigo", description="Pull-based GitOps for Docker Compose hosts.",
        epilog=EXIT_CODES, formatter_class=_Raw)
    p.set_defaults(config=None, verbose=False, json=False, debug=False)
    _common(p, argparse.SUPPRESS)
    p.add_argument("--version", action="version", version=f"vigo {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command is not None:
        sub = _Only(sub, command)
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
    apply.add_argument("--allow-rewind", action="store_true",
                       help="with signed commits: accept an older commit or a rewritten "
                            "(force-pushed) history; signatures are still required")
    plan = sub.add_parser(
        "plan", parents=[common], epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="show what apply would do, changing nothing",
        description="Fetch and render like apply, in a private temp dir, and print per stack "
                    "create / update / remove / unchanged and why. Starts no container.")
    plan.add_argument("--no-fetch", action="store_true",
                      help="plan the checkout as it is, without fetching")
    plan.add_argument("--allow-empty", action="store_true", help=argparse.SUPPRESS)
    fleet_plan = plan.add_mutually_exclusive_group()  # offline, from a clone (docs/fleet.md)
    fleet_plan.add_argument("--host", default=None, metavar="NAME",
                            help="offline, from the clone --repo: what host NAME would run "
                                 "(no Docker, no age key; env files by key names only)")
    fleet_plan.add_argument("--all-hosts", action="store_true",
                            help="offline: a summary for the base tree and every hosts/<name>/; "
                                 "exit 1 if any host has an error")
    plan.add_argument("--repo", type=Path, default=None, metavar="DIR",
                      help="with --host / --all-hosts: the clone (default: the current folder)")
    plan.add_argument("--diff-base", default=None, metavar="REV",
                      help="with --host / --all-hosts: also say which stacks change since REV")
    plan.set_defaults(func=cmd_plan)
    apply.set_defaults(func=cmd_apply)
    apply.add_argument("--timer", action="store_true",
                       help="run by vigo.timer: while suspended, say so and exit 0")
    apply.add_argument("--ignore-suspend", action="store_true",
                       help="apply once even though vigo is suspended (vigo suspend)")
    check = sub.add_parser(
        "check", parents=[common],
        help="validate an infra repo offline (for its CI and pre-commit)",
        description="Render the repo as the base tree and as every hosts/<name>/ overlay and "
                    "check it: valid Compose, pinned images, encrypted env files covered by "
                    ".sops.yaml, the policy on each stack's resolved model (`docker compose "
                    "config` with placeholders for encrypted values; docs/security.md): no "
                    "docker.sock / privileged / host namespaces / devices / extra "
                    "capabilities / host paths / open ports unless the settings allow them, "
                    "paths inside the repo, no name: or container_name, "
                    "unique Traefik routers, services and hosts, routed services on the proxy "
                    "network, label variables defined, overlays holding only proxy/, stacks/, "
                    "env/, no symlinks; for stacks on Swarm (x-vigo.engine), the Compose "
                    "keys Swarm ignores (warnings, docs/swarm.md). Exit 1 on any error, 0 "
                    "with warnings only.")
    check.add_argument("dir", nargs="?", type=Path, default=Path("."), metavar="DIR",
                       help="the infra repo (default: the current folder)")
    check.add_argument("--no-cache", action="store_true",
                       help="neither read nor write the cache of earlier checks (by default "
                            "work whose inputs did not change is skipped: .git/vigo-check-cache "
                            "or $XDG_CACHE_HOME/vigo; docs/performance.md)")
    check.add_argument("--jobs", type=_jobs, default=0, metavar="N",
                       help="docker compose processes at once (default: one per CPU)")
    check.set_defaults(func=cmd_check)
    retry = sub.add_parser(
        "retry", parents=[common], help="try a failed, rolled-back revision of a stack again",
        description="A revision that failed its deploy (compose up or the health gate) is "
                    "rolled back and not tried again every minute. This lets the next "
                    "`vigo apply` try it once more.")
    retry.add_argument("stack")
    retry.set_defaults(func=cmd_retry)
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
    _promote_parsers(sub, common)
    host = sub.add_parser("host", parents=[common], help="the hosts of a fleet (workstation)",
                          description="Manage the hosts of one infra repo (docs/fleet.md).")
    host_sub = host.add_subparsers(dest="action", required=True, metavar="ACTION")
    host_add = host_sub.add_parser(
        "add", parents=[common], help="give a host its own age key and overlay",
        description="Create hosts/NAME/env/, add a .sops.yaml rule encrypting "
                    "hosts/NAME/env/*.env to NAME's key and the operators' keys (before the "
                    "base rule: sops uses the first match), add NAME's key to the base rule "
                    "(env/*.env is shared by every host), and re-encrypt the env files of both "
                    "rules with `sops updatekeys`. Again with a new KEY: rotate NAME's key.")
    host_add.add_argument("name", metavar="NAME", help="the host's `host` setting")
    host_add.add_argument("--age-recipient", required=True, metavar="KEY",
                          help="the host's age public key (age1...)")
    host_add.add_argument("--repo", type=Path, default=Path("."), metavar="DIR",
                          help="the clone of the infra repo (default: the current folder)")
    host_add.add_argument("--age-key-file", type=Path, default=None, metavar="FILE",
                          help="an identity that can decrypt the env files today (default: "
                               "$SOPS_AGE_KEY_FILE, else ~/.config/sops/age/keys.txt)")
    host_add.set_defaults(func=cmd_host_add)
    cli_ops.add_parsers(sub, common)  # install, bootstrap, status, suspend, resume
    return p


def _jobs(text: str) -> int:
    """--jobs: a whole number from 1 to 64."""
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 64")
    return int(text)


def _reconciler(args: argparse.Namespace, settings: config.Settings):
    from vigo.host.reconcile import Reconciler

    return Reconciler(
        settings, verbose=args.verbose,
        emit=(lambda line: None) if args.json else journal.printer(),
        debug=journal.printer("stderr"),
        trace=_trace(args))


def _trace(args: argparse.Namespace):
    """--debug: where the traceback of a crash goes (stderr); None: one line only."""
    return (lambda text: print(text, end="", file=sys.stderr, flush=True)) if args.debug \
        else None


def _finish(args: argparse.Namespace, reconciler, report) -> None:
    if args.json:
        print(reconciler.masker(json.dumps(report.to_json(), indent=2)))


def cmd_apply(args: argparse.Namespace, settings: config.Settings) -> int:
    from vigo.core.model import Options

    if args.allow_rewind and args.timer:
        print("vigo: --allow-rewind is for a run by hand, never with --timer", file=sys.stderr)
        return 2
    # the lifecycle's begin (suspended? healthchecks start ping), before the reconcile is
    # even imported; its end runs inside Reconciler.apply
    stop = cli_ops.lifecycle(args, settings, timer=args.timer,
                             ignore_suspend=args.ignore_suspend).begin()
    if stop is not None:
        return stop
    reconciler = _reconciler(args, settings)
    report = reconciler.apply(Options(allow_empty=args.allow_empty, force=args.force,
                                      allow_rewind=args.allow_rewind))
    _finish(args, reconciler, report)
    return report.exit_code


def _offline_plan(args: argparse.Namespace) -> bool:
    return args.command == "plan" and bool(args.host or args.all_hosts or args.repo)


def cmd_plan(args: argparse.Namespace, settings: config.Settings) -> int:
    from vigo.core.model import Options

    if _offline_plan(args):
        return cmd_plan_fleet(args, settings)
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


def cmd_plan_fleet(args: argparse.Namespace, settings: config.Settings | None) -> int:
    from vigo.adapters.compose import Compose
    from vigo.adapters.git import Clone, CloneError
    from vigo.adapters.run import Runner
    from vigo.workstation import fleet

    repo = (args.repo or Path(".")).resolve()
    if not (args.host or args.all_hosts) or args.no_fetch:
        print("vigo plan: --repo plans a clone offline: give --host NAME or --all-hosts "
              "(and no --no-fetch)", file=sys.stderr)
        return 2
    if not repo.is_dir() or (args.host and not fleet.HOST_NAME.match(args.host)):
        print(f"vigo plan: {args.repo or '.'} is not a folder, or {args.host!r} not a host "
              "name", file=sys.stderr)
        return 2
    runner = Runner(log=journal.printer("stderr"),
                    verbose=args.verbose)
    compose, policy = Compose(runner), config.policy_of(settings)
    validate, resolve = compose.validate, compose.resolve_offline
    with fleet.diff_base(Clone(runner, repo), args.diff_base) as before:
        if isinstance(before, CloneError):
            print(f"vigo plan: --diff-base {args.diff_base}: {before}", file=sys.stderr)
            return 2
        plans = (fleet.plan_fleet(repo, policy, validate, before, args.diff_base or "",
                                  resolve)
                 if args.all_hosts else
                 [fleet.plan_host(repo, args.host, policy, validate, before,
                                  args.diff_base or "", resolve)])
    if args.json:
        print(json.dumps([p.to_json() for p in plans], indent=2))
    else:
        lines = fleet.format_summary(plans) if args.all_hosts else fleet.format_host(plans[0])
        print("\n".join(lines))
    return 1 if any(p.errors for p in plans) else 0


def cmd_host_add(args: argparse.Namespace, settings: config.Settings | None) -> int:
    from vigo.adapters.run import Runner
    from vigo.adapters.sops import Sops
    from vigo.workstation import fleet

    runner = Runner(log=journal.printer("stderr"),
                    verbose=args.verbose, interactive=sys.stdin.isatty())
    identity = args.age_key_file.resolve() if args.age_key_file else fleet.default_identity()
    try:
        return fleet.add_host(args.repo.resolve(), args.name, args.age_recipient, Sops(runner),
                              identity, print)
    except fleet.FleetError as exc:
        print(f"vigo host add: {exc}", file=sys.stderr)
        return exc.code


def cmd_retry(args: argparse.Namespace, settings: config.Settings) -> int:
    print(_reconciler(args, settings).retry(args.stack))
    return 0


def cmd_check(args: argparse.Namespace, settings: config.Settings | None) -> int:
    from vigo.adapters.compose import Compose
    from vigo.adapters.run import Runner
    from vigo.workstation import check

    repo = args.dir.resolve()
    if not repo.is_dir():
        print(f"vigo: {args.dir} is not a folder", file=sys.stderr)
        return 2
    from vigo.workstation.cache import Cache, default_path

    compose = Compose(Runner())
    # Keys hold compose's version: without docker compose there is nothing worth caching.
    version = "" if args.no_cache else compose.version()
    cache = Cache(default_path(repo), salt=f"compose {version}") if version else None
    if cache is not None and cache.note and args.verbose:
        print(f"vigo check: {cache.note}", file=sys.stderr)
    findings = check.check(repo, config.policy_of(settings), compose.validate,
                           resolve=compose.resolve_offline, cache=cache,
                           jobs=args.jobs or check.default_jobs())
    if cache is not None:
        problem = cache.save()
        if args.verbose:
            print(f"vigo check: cache {cache.hits} hit(s), {cache.misses} miss(es)"
                  + (f"; {problem}" if problem else ""), file=sys.stderr)
    if args.json:
        print(json.dumps(check.to_json(findings), indent=2))
    else:
        print("\n".join(check.format_text(findings, args.dir)))
    return 1 if any(f.severity == "error" for f in findings) else 0


def cmd_init(args: argparse.Namespace, settings: config.Settings | None) -> int:
    from vigo.adapters.run import Runner
    from vigo.workstation import scaffold

    runner = Runner(interactive=sys.stdin.isatty())
    target = args.dir.resolve()
    try:
        if args.age_keygen:
            recipient, line = scaffold.ensure_key(args.age_keygen, target, runner)
            print(line)
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


PROMOTE_EXIT_CODES = """exit codes:
  0   done, or nothing to change
  1   the checks found an error in the file (restored), nothing to roll back to, or git
      refused the commit or push
  2   bad arguments, unknown stack or service, not a git repo
"""


def _promote_parsers(sub, common: argparse.ArgumentParser) -> None:
    """promote, history, rollback: workstation commands, in a clone of the infra repo."""
    def parser(name: str, help: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=description,
                           epilog=PROMOTE_EXIT_CODES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--repo", type=Path, default=Path("."), metavar="DIR",
                       help="the clone of the infra repo (default: the current folder)")
        p.add_argument("--host", default="", metavar="NAME",
                       help="the file of hosts/NAME/ (its overlay), not the base one")
        return p

    def commit_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--commit", action="store_true",
                       help="git add and commit the file (as you: your git identity, signing)")
        p.add_argument("--push", action="store_true",
                       help="commit, then push the branch to its upstream")

    promote = parser(
        "promote", "set a service's image tag in the infra repo",
        "Set the image tag of STACK's service in its compose file, changing nothing else in "
        "the file; run the checks of `vigo check` and restore the file if they find an error "
        "in it; optionally commit ('promote STACK/SERVICE: OLD -> NEW') and push.")
    promote.add_argument("target", metavar="STACK[/SERVICE]",
                         help="SERVICE may be left out when one service has an image")
    promote.add_argument("tag", metavar="TAG", help="sha-<7 to 40 hex> or sha256:<64 hex>")
    commit_options(promote)
    promote.add_argument("--allow-unpinned", action="store_true",
                         help="accept any tag (hosts still refuse it unless allowed)")
    promote.set_defaults(func=cmd_promote)
    history = parser(
        "history", "the tags a stack ran, newest first",
        "One row per change of a service's image in the git history of the stack's compose "
        "file: tag, commit, date, author, subject.")
    history.add_argument("stack", metavar="STACK[/SERVICE]")
    history.add_argument("--service", default=None, metavar="S", help="only this service")
    history.set_defaults(func=cmd_history)
    rollback = parser(
        "rollback", "promote back to the previous (or a named) tag",
        "Set the image of STACK's service back to the one before the current one in the "
        "history (or to --to TAG), with the same checks, commit and push as promote.")
    rollback.add_argument("target", metavar="STACK[/SERVICE]")
    rollback.add_argument("--to", default=None, metavar="TAG",
                          help="this pinned tag instead of the previous one")
    commit_options(rollback)
    rollback.set_defaults(func=cmd_rollback)


def _promoter(args: argparse.Namespace, settings: config.Settings | None):
    from vigo.adapters.compose import Compose
    from vigo.adapters.git import Clone
    from vigo.adapters.run import Runner
    from vigo.workstation import check, promote

    repo = args.repo.resolve()
    if not repo.is_dir():
        raise promote.PromoteError(f"{args.repo} is not a folder")
    runner = Runner(log=journal.printer("stderr"),
                    verbose=args.verbose, interactive=sys.stdin.isatty())
    compose = Compose(runner)
    return promote.Promoter(
        repo, Clone(runner, repo),
        lambda root, policy, hosts: check.check(root, policy, compose.validate, hosts,
                                                resolve=compose.resolve_offline,
                                                jobs=check.default_jobs()),
        config.policy_of(settings), args.host)


def _promotion(args: argparse.Namespace, settings: config.Settings | None, verb: str) -> int:
    from vigo.workstation import check, promote

    try:
        promoter = _promoter(args, settings)
        if verb == "promote":
            outcome = promoter.promote(args.target, args.tag, allow_unpinned=args.allow_unpinned,
                                       commit=args.commit, push=args.push)
        else:
            outcome = promoter.rollback(args.target, args.to, commit=args.commit, push=args.push)
    except promote.ChecksFailed as exc:
        if args.json:
            print(json.dumps({"error": str(exc), "findings": check.to_json(exc.findings)},
                             indent=2))
        else:
            print("\n".join(check.format_text(exc.findings, args.repo)))
        print(f"vigo {verb}: {exc}", file=sys.stderr)
        return exc.code
    except promote.PromoteError as exc:
        print(f"vigo {verb}: {exc}", file=sys.stderr)
        return exc.code
    if args.json:
        print(json.dumps(outcome.to_json(), indent=2))
    else:
        print(outcome.line())
    for f in outcome.findings:
        print(f"warning: {f.where} [{f.rule}] {f.message}", file=sys.stderr)
    for line in outcome.warnings:
        print(f"warning: {line}", file=sys.stderr)
    return 0


def cmd_promote(args: argparse.Namespace, settings: config.Settings | None) -> int:
    return _promotion(args, settings, "promote")


def cmd_rollback(args: argparse.Namespace, settings: config.Settings | None) -> int:
    return _promotion(args, settings, "rollback")


def cmd_history(args: argparse.Namespace, settings: config.Settings | None) -> int:
    from vigo.workstation import promote

    try:
        stack, service = promote.parse_target(args.stack)
        rows = _promoter(args, settings).history(stack, args.service or service)
    except promote.PromoteError as exc:
        print(f"vigo history: {exc}", file=sys.stderr)
        return exc.code
    if args.json:
        print(json.dumps([promote.row_json(r) for r in rows], indent=2))
    elif not rows:
        print(f"{stack}: no committed version of its compose file names an image")
    else:
        many = len({r.service for r in rows}) > 1
        print("\n".join(promote.format_history(rows, services=many)))
    return 0


# Commands that work without a settings file (on a workstation, in the infra repo's CI).
SETTINGS_OPTIONAL = {"check", "init", "promote", "history", "rollback", "host"}


def _terminated(signum: int, _frame: object) -> None:
    """SIGTERM (systemd's stop, TimeoutStartSec) ends vigo like Ctrl-C: the running command's
    process group is ended and the run is recorded as failed (interrupted), not left as the
    last run's outcome. STOP ends the waits of the deploy threads too."""
    from vigo.adapters.run import STOP

    STOP.set()
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 never crashes print
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    journal.attach()  # <N> priority prefixes when stdout/stderr is the journal
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(_command(argv)).parse_args(argv)
    try:
        try:
            if args.command in cli_ops.SETTINGS_SELF:
                settings = None
            elif args.command in SETTINGS_OPTIONAL or _offline_plan(args):
                settings = config.load_optional(args.config)
            else:
                settings = config.load(args.config)
        except config.ConfigError as exc:
            print(f"vigo: {exc}", file=sys.stderr)
            return 2
        uses_state = args.command not in SETTINGS_OPTIONAL and not _offline_plan(args)
        if uses_state and settings is not None and settings.state.exists() \
                and not settings.state.is_dir():
            print(f"vigo: the state folder {settings.state} is not a folder: remove it or fix "
                  "the `state` setting; nothing done", file=sys.stderr)
            return 2
        return args.func(args, settings)
    except Locked as exc:
        print(f"vigo: {exc}; nothing done", file=sys.stderr)
        return reasons.exit_code(reasons.LOCKED)
    except LockError as exc:
        print(f"vigo: {exc}; nothing done", file=sys.stderr)
        return reasons.exit_code(reasons.SETTINGS_INVALID)
    except KeyboardInterrupt:
        print("vigo: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the safety net: one line, never a traceback (--debug shows it)
        from vigo.host.crash import crash_line

        print(f"vigo {args.command}: {crash_line(exc)}; this is a bug or an input vigo cannot "
              "handle" + ("" if args.debug else " (--debug shows the traceback)"),
              file=sys.stderr)
        if args.debug:
            import traceback

            traceback.print_exc()
        return reasons.exit_code(reasons.CRASHED)


def entry() -> None:
    """The `vigo` command (and `python -m vigo`): main(), then an exit that does not take the
    interpreter apart object by object (10-15 ms of an idle run's ~100 ms here, more with more
    stacks). Only when nothing else is running: no thread besides this one. The exit functions
    (the journal's last partial line, logging's) run first and both streams are flushed; a
    stream that cannot be flushed (a closed pipe) takes the ordinary exit, which reports it.
    Every file vigo writes is written and closed by then (fs.atomic_write, `with` blocks)."""
    code = main()
    if isinstance(code, int) and threading.active_count() == 1 and hasattr(
            atexit, "_run_exitfuncs"):
        atexit._run_exitfuncs()
        try:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:
                    stream.flush()
        except Exception:  # a closed pipe, a closed stream: the ordinary exit reports it
            sys.exit(code)
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
