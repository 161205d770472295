"""Command line of the host operations: install, bootstrap, status, suspend, resume, and the
lifecycle of apply (hooks.Lifecycle). Argument parsing, output and exit codes only."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vigo import config
from vigo.core import journal, reasons

# Commands that read (or write) the settings file themselves: main() loads nothing for them.
SETTINGS_SELF = {"bootstrap"}


def _say(level: int, text: str) -> None:
    print(journal.tagged(level, text), flush=True)


def _interval(text: str) -> int:
    from vigo.core.units import interval_seconds  # not imported by the other commands

    try:
        return interval_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _delay(text: str) -> int:
    from vigo.core.units import timespan

    try:
        seconds = timespan(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds != int(seconds):
        raise argparse.ArgumentTypeError(f"{text!r}: the delay must be whole seconds")
    return int(seconds)


def _unit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                   help="write the units under DIR/etc/systemd/system and enable them there "
                        "offline (packaging, tests); default /")
    p.add_argument("--no-enable", action="store_true",
                   help="write the units, do not enable or start the timer")
    p.add_argument("--interval", type=_interval, default=60, metavar="SPAN",
                   help="time from the end of one run to the start of the next, a systemd "
                        "time span: 15s, 2min, 1h (default 60s)")
    p.add_argument("--randomized-delay", type=_delay, default=0, metavar="SPAN",
                   help="RandomizedDelaySec of the timer, a time span (seconds, or 30s, 2min): "
                        "spreads a fleet's fetches (default 0)")


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    install = sub.add_parser(
        "install", parents=[common], help="write and enable vigo.service and vigo.timer",
        description="Write vigo.service (a hardened oneshot running `vigo apply --timer` with "
                    "this settings file) and vigo.timer (30 s after boot, then --interval after "
                    "each run ends), check them with systemd-analyze verify, create the folders "
                    "they may write, daemon-reload, enable --now the timer. Idempotent.")
    _unit_options(install)
    install.set_defaults(func=cmd_install)
    boot = sub.add_parser(
        "bootstrap", parents=[common], help="set up a new host: checks, settings, first apply, "
                                            "units",
        description="Check docker, compose v2, sops, git and the age key (owned by root, "
                    "readable by nobody else); for a private repo, the SSH deploy key (or "
                    "create one) and the server's pinned host key, or the token file "
                    "(docs/host-setup.md); write the settings file if it does not exist "
                    "(from these options and any VIGO_<KEY> variables; never overwritten); "
                    "run a first apply (which clones the repo); install the units. "
                    "Idempotent: run it again after fixing what it reports missing.")
    boot.add_argument("--repo", required=True, metavar="URL", help="the infra repo")
    boot.add_argument("--branch", default="", help="branch to follow (default main)")
    boot.add_argument("--host", default="", help="host name (default: the machine's)")
    boot.add_argument("--age-key-file", type=Path, default=None, metavar="FILE",
                      help="the host's age identity (default /root/.config/sops/age/keys.txt)")
    key = boot.add_mutually_exclusive_group()
    key.add_argument("--ssh-key", type=Path, default=None, metavar="FILE",
                     help="an SSH deploy key of the repo (root's, mode 0600): setting ssh_key")
    key.add_argument("--ssh-keygen", type=Path, default=None, metavar="FILE",
                     help="create an ed25519 deploy key there if it is missing and print its "
                          "public half, to add to the repo as a read-only deploy key")
    pin = boot.add_mutually_exclusive_group()
    pin.add_argument("--known-hosts", type=Path, default=None, metavar="FILE",
                     help="the pinned known_hosts file of the git server: ssh_known_hosts")
    pin.add_argument("--host-key-fingerprint", default="", metavar="SHA256:...",
                     help="ask the server for its host keys (ssh-keyscan), keep the one with "
                          "this fingerprint and write it to known_hosts beside the settings")
    boot.add_argument("--git-token-file", type=Path, default=None, metavar="FILE",
                      help="a root-only file holding the HTTPS token of the repo: "
                           "git_token_file")
    _unit_options(boot)
    boot.set_defaults(func=cmd_bootstrap)
    status = sub.add_parser(
        "status", parents=[common], help="the last run, revisions, and every stack as Docker "
                                         "runs it now",
        description="Last run (when, result, duration), the revision applied vs the newest "
                    "fetched vs the last attempted, suspension, and every stack's containers "
                    "as Docker sees them now, with each stack's last failure and its named "
                    "reason. Reads only: works while a run is in progress.")
    status.set_defaults(func=cmd_status)
    sus = sub.add_parser(
        "suspend", parents=[common], help="stop timer runs from changing anything",
        description="Record who suspends vigo, when and why in <state>/suspended.json. Timer "
                    "runs then print one line and exit 0; manual `vigo apply` refuses unless "
                    "--ignore-suspend. A run in progress finishes.")
    sus.add_argument("--reason", default="", metavar="TEXT", help="why (shown by vigo status)")
    sus.set_defaults(func=cmd_suspend)
    res = sub.add_parser("resume", parents=[common], help="end a suspension",
                         description="Remove the suspension: the next timer run applies.")
    res.set_defaults(func=cmd_resume)


def lifecycle(args: argparse.Namespace, settings: config.Settings, *, timer: bool = False,
              ignore_suspend: bool = False):
    """The lifecycle of one apply (hooks.Lifecycle): the suspension gate and the healthchecks
    start ping before it; its end (metrics, notifications, end ping) runs in the reconcile."""
    from vigo.host import hooks

    return hooks.Lifecycle(settings, out=journal.printer(),
                           err=journal.printer("stderr"),
                           timer=timer, ignore_suspend=ignore_suspend)


def _systemd(root: Path):
    from vigo.adapters.run import Runner
    from vigo.adapters.systemd import Systemd

    return Systemd(Runner(), root)


def cmd_install(args: argparse.Namespace, settings: config.Settings) -> int:
    from vigo.host import install

    return install.install(settings, install.config_path(args.config), _systemd(args.root),
                           _say, enable=not args.no_enable,
                           randomized_delay=args.randomized_delay, interval=args.interval)


def cmd_bootstrap(args: argparse.Namespace, settings: None) -> int:
    from vigo.adapters.run import Runner
    from vigo.host import install

    def apply(s: config.Settings) -> int:
        return bootstrap_apply(args, s)

    opts = install.BootstrapOptions(
        repo=args.repo, config=install.config_path(args.config), branch=args.branch,
        host=args.host, age_key_file=args.age_key_file.absolute() if args.age_key_file else None,
        enable=not args.no_enable, randomized_delay=args.randomized_delay,
        ssh_key=_abs(args.ssh_key), ssh_keygen=_abs(args.ssh_keygen),
        known_hosts=_abs(args.known_hosts), host_key_fingerprint=args.host_key_fingerprint,
        git_token_file=_abs(args.git_token_file), interval=args.interval)
    return install.bootstrap(opts, _say, _systemd(args.root), apply, Runner())


def bootstrap_apply(args: argparse.Namespace, s: config.Settings) -> int:
    """Bootstrap's first apply: the same lifecycle as `vigo apply` by hand (a suspended host
    refuses, the healthchecks start ping goes before the run and its end ping after)."""
    from vigo.adapters.lock import Locked
    from vigo.core.model import Options
    from vigo.host.reconcile import Reconciler

    reconciler = Reconciler(s, verbose=args.verbose,
                            emit=journal.printer(indent="  "),
                            debug=journal.printer("stderr", "  "),
                            trace=(lambda text: print(text, end="", file=sys.stderr))
                            if args.debug else None)
    try:
        return lifecycle(args, s).run(lambda: reconciler.apply(Options()))[0]
    except Locked:
        return reasons.exit_code(reasons.LOCKED)


def _abs(path: Path | None) -> Path | None:
    return path.absolute() if path else None


def cmd_status(args: argparse.Namespace, settings: config.Settings) -> int:
    from vigo.adapters.compose import Compose
    from vigo.adapters.git import Git
    from vigo.adapters.run import Runner
    from vigo.host import install, status

    runner = Runner()
    try:
        data = status.gather(settings, install.config_path(args.config), Compose(runner),
                             Git(runner, settings.git_timeout))
    except PermissionError as exc:
        print(f"vigo: cannot read {exc.filename}: run vigo status as root", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print("\n".join(status.to_text(data)))
    return 0


def cmd_suspend(args: argparse.Namespace, settings: config.Settings) -> int:
    from vigo.host import suspend

    new, before = suspend.suspend(settings.state, args.reason)
    if before is not None:
        print(f"was already {before.line()}; replaced")
    print(f"{new.line()}: timer runs do nothing until vigo resume")
    return 0


def cmd_resume(args: argparse.Namespace, settings: config.Settings) -> int:
    from vigo.host import suspend

    before = suspend.resume(settings.state)
    if before is None:
        print("not suspended: nothing to resume")
    else:
        print(f"resumed (was {before.line()}): the next timer run applies")
    return 0
