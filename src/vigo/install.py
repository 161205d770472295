"""`vigo install` (the systemd units) and `vigo bootstrap` (a new host, end to end).

Every step says in one line what it did, found, or what is missing and how to fix it.
Both are idempotent: run them again and they change only what differs.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from vigo import config, units
from vigo.adapters import fs
from vigo.adapters.systemd import Systemd
from vigo.adapters.tools import probe
from vigo.config import ConfigError, Settings
from vigo.journal import ERR, INFO, WARNING

Say = Callable[[int, str], None]
EXIT_MISSING = 1


def exec_argv() -> tuple[str, ...]:
    """How the unit starts this vigo: the console script next to this Python (a venv or
    /usr/local/bin), else the one on PATH, else `python -m vigo`."""
    script = Path(sys.executable).parent / "vigo"
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script),)
    found = shutil.which("vigo")
    if found:
        return (str(Path(found).absolute()),)
    return (sys.executable, "-m", "vigo")


def config_path(arg: Path | None, environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return (arg or Path(env.get("VIGO_CONFIG", config.DEFAULT_CONFIG))).absolute()


# -- install ------------------------------------------------------------------------------

def install(settings: Settings, config_file: Path, systemd: Systemd, say: Say, *,
            enable: bool = True, randomized_delay: int = 0,
            interval: int = units.INTERVAL_S) -> int:
    if systemd.live and not config_file.is_file():
        say(ERR, f"error: {config_file} does not exist: the unit runs `vigo --config "
                 f"{config_file} apply` and sees no environment variables; write the file "
                 "first (vigo bootstrap does)")
        return 2
    spec = units.spec(settings, exec_argv(), config_file, randomized_delay, interval)
    texts = units.render(spec)
    if systemd.has_analyze():
        problems = systemd.verify(texts)
        if problems:
            say(ERR, "error: systemd-analyze verify rejects the units (nothing written):")
            for line in problems.splitlines():
                say(ERR, f"  {line}")
            return 1
        say(INFO, "verify: systemd-analyze verify passes on vigo.service and vigo.timer")
    else:
        say(WARNING, "warning: systemd-analyze is not installed: the units are not verified")
    if systemd.live:
        made = _folders(settings, spec)
        say(INFO, "folders: " + (f"created {', '.join(map(str, made))}" if made else
                                 "checkout, runtime, state and secrets exist"))
    written = systemd.write(texts)
    for name, changed in written.items():
        say(INFO, f"{name}: {'written to' if changed else 'unchanged in'} "
                  f"{systemd.unit_dir / name}")
    if not enable:
        say(INFO, f"timer: not enabled (--no-enable); enable it with: systemctl enable --now "
                  f"{units.TIMER}")
        return 0
    if not systemd.live:
        why = systemd.enable(units.TIMER, now=False)
        if why:
            say(ERR, f"error: systemctl --root={systemd.root} enable {units.TIMER}: {why}")
            return 1
        say(INFO, f"timer: enabled under {systemd.root} (starts when that system boots)")
        return 0
    if not systemd.running():
        why = systemd.enable(units.TIMER, now=False)
        if why:
            say(ERR, f"error: systemctl enable {units.TIMER}: {why}")
            return 1
        say(WARNING, "warning: systemd is not running here (not PID 1): the timer is enabled "
                     "and starts at the next boot")
        return 0
    if any(written.values()):
        why = systemd.daemon_reload()
        if why:
            say(ERR, f"error: systemctl daemon-reload: {why}")
            return 1
    why = systemd.enable(units.TIMER, now=True)
    if why:
        say(ERR, f"error: systemctl enable --now {units.TIMER}: {why}")
        return 1
    say(INFO, f"timer: enabled and started: the first run comes {units.BOOT_DELAY} after "
              f"boot (at once on a host up for longer), then {interval}s after each run "
              "ends; journalctl -u vigo shows the runs")
    return 0


def _folders(settings: Settings, spec: units.UnitSpec) -> list[Path]:
    """ReadWritePaths must exist when the unit starts, or systemd refuses to start it; the
    unit cannot make them itself (the rest of the tree is read-only to it)."""
    public = {settings.runtime} | ({settings.metrics_file.parent} if settings.metrics_file
                                   else set())
    made = []
    for folder in (settings.checkout, settings.runtime, settings.state, settings.secrets,
                   *spec.read_write):
        if folder.exists():
            continue
        if folder in public:  # compose reads the runtime; node_exporter reads the metrics
            folder.mkdir(parents=True, mode=0o755)
        else:
            fs.private_dir(folder)
        made.append(folder)
    return made


# -- bootstrap ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BootstrapOptions:
    repo: str
    config: Path
    branch: str = ""
    host: str = ""
    age_key_file: Path | None = None
    enable: bool = True
    randomized_delay: int = 0
    interval: int = units.INTERVAL_S


def settings_text(values: Mapping[str, str]) -> str:
    """The settings file bootstrap writes: TOML, every value a string (config.load converts
    numbers and comma-separated lists)."""
    lines = ["# Written by `vigo bootstrap`; vigo never overwrites this file.",
             "# Every key: README.md (settings) and docs/operations.md."]
    lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _values(opts: BootstrapOptions, environ: Mapping[str, str]) -> dict[str, str]:
    """--repo and the other options, then every VIGO_<KEY> of the environment (so that
    `VIGO_STATE=/data/vigo vigo bootstrap ...` lands in the file the unit reads)."""
    values = {"repo": opts.repo}
    for f in fields(Settings):
        env = environ.get("VIGO_" + f.name.upper())
        if env is not None and f.name != "repo":
            values[f.name] = env
    for key, value in (("branch", opts.branch), ("host", opts.host),
                       ("age_key_file", str(opts.age_key_file or ""))):
        if value:
            values[key] = value
    return values


def check_key(path: Path) -> str:
    """'' when the age identity exists, is a file owned by root and readable by nobody else."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return (f"{path} does not exist; fix: put the host's age identity there (age-keygen -o "
                f"{path}, then add its public key to .sops.yaml and run sops updatekeys)")
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a file"
    if st.st_uid != 0:
        return f"{path} is owned by uid {st.st_uid}; fix: chown root:root {path}"
    if st.st_mode & 0o077:
        return (f"{path} has mode {stat.S_IMODE(st.st_mode):04o} (others can read it); "
                f"fix: chmod 600 {path}")
    return ""


def bootstrap(opts: BootstrapOptions, say: Say, systemd: Systemd,
              apply: Callable[[Settings], int], runner,
              environ: Mapping[str, str] | None = None) -> int:
    """Checks, settings file, first apply, units. `apply` runs one reconcile and returns its
    exit code (the cli passes the real one)."""
    env = dict(os.environ if environ is None else environ)
    write_settings = not opts.config.exists()
    try:
        if write_settings:
            text = settings_text(_values(opts, env))
            settings = _load_text(text, env)
        else:
            text = ""
            settings = config.load(opts.config, env)
    except ConfigError as exc:
        say(ERR, f"settings: {exc}")
        return 2
    if not write_settings and settings.repo != opts.repo:
        say(ERR, f"settings: missing: {opts.config} exists with repo {settings.repo!r}, not "
                 f"{opts.repo!r}; fix: edit or remove that file (vigo never overwrites it)")
        return EXIT_MISSING

    missing = 0
    for tool in probe(runner):
        if tool.version:
            say(INFO, f"{tool.name}: {tool.version}")
        else:
            say(ERR, f"{tool.name}: missing ({tool.problem}); fix: {tool.fix}")
            missing += 1
    why = check_key(settings.age_key_file)
    if why:
        say(ERR, f"age key: missing: {why}")
        missing += 1
    else:
        say(INFO, f"age key: {settings.age_key_file} (root, readable by root only)")
    if missing:
        say(ERR, f"bootstrap: {missing} thing(s) missing, nothing written; fix them and run "
                 "vigo bootstrap again")
        return EXIT_MISSING

    if write_settings:
        fs.atomic_write(opts.config, text.encode(), mode=0o600)
        say(INFO, f"settings: wrote {opts.config} (repo {settings.repo}, branch "
                  f"{settings.branch}, host {settings.host})")
    else:
        say(INFO, f"settings: {opts.config} exists, not overwritten")

    say(INFO, f"apply: first reconcile of {settings.host} (clones {settings.repo} into "
              f"{settings.checkout})")
    code = apply(settings)
    if code in (2, 3):
        say(ERR, f"apply: exit {code}: the repo could not be fetched or rendered (see above); "
                 "fix it and run vigo bootstrap again (units not installed yet)")
        return code
    if code == 75:
        say(WARNING, "warning: apply: another vigo run holds the lock (is the timer already "
                     "running?); the timer applies the repo")
    elif code:
        say(WARNING, f"warning: apply: exit {code}: some stacks failed (see above); the timer "
                     f"retries {opts.interval}s after each run")
    else:
        say(INFO, "apply: converged")
    rc = install(settings, opts.config, systemd, say, enable=opts.enable,
                 randomized_delay=opts.randomized_delay, interval=opts.interval)
    if rc:
        return rc
    say(INFO, "bootstrap: done; vigo status shows what runs")
    return 1 if code not in (0, 75) else 0


def _load_text(text: str, environ: Mapping[str, str]) -> Settings:
    """Validate settings text the way `config.load` reads the file, before it exists."""
    with tempfile.TemporaryDirectory(prefix="vigo-settings-") as tmp:
        path = Path(tmp) / "vigo.toml"
        path.write_text(text)
        return config.load(path, dict(environ))
