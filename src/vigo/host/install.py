"""`vigo install` (the systemd units) and `vigo bootstrap` (a new host, end to end).

Every step says in one line what it did, found, or what is missing and how to fix it.
Both are idempotent: run them again and they change only what differs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from vigo import config
from vigo.adapters import fs
from vigo.adapters.git import Git, known_hosts_problem, split_credentials, ssh_target
from vigo.adapters.sops import key_problem, private_file_problem
from vigo.adapters.systemd import Systemd
from vigo.adapters.tools import probe
from vigo.config import ConfigError, Settings
from vigo.core import units
from vigo.core.journal import ERR, INFO, WARNING
from vigo.core.records import fields, record
from vigo.host import suspend

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
            folder.chmod(0o755)  # whatever the umask
        else:
            fs.private_dir(folder)
        made.append(folder)
    return made


# -- bootstrap ----------------------------------------------------------------------------

@record(frozen=True)
class BootstrapOptions:
    repo: str
    config: Path
    branch: str = ""
    host: str = ""
    age_key_file: Path | None = None
    enable: bool = True
    randomized_delay: int = 0
    interval: int = units.INTERVAL_S
    # a private infra repo (docs/host-setup.md)
    ssh_key: Path | None = None  # an existing deploy key
    ssh_keygen: Path | None = None  # create this deploy key (ed25519, 0600) if it is missing
    known_hosts: Path | None = None  # an existing pinned known_hosts file
    host_key_fingerprint: str = ""  # SHA256:...: keyscan, keep the matching key, write the file
    git_token_file: Path | None = None

    def credential_values(self) -> dict[str, str]:
        """The settings these options stand for."""
        known = self.known_hosts or (self.config.parent / "known_hosts"
                                     if self.host_key_fingerprint else None)
        values = {"ssh_key": self.ssh_key or self.ssh_keygen, "ssh_known_hosts": known,
                  "git_token_file": self.git_token_file}
        return {k: str(v) for k, v in values.items() if v}


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
    values.update(opts.credential_values())
    return values


def check_key(path: Path) -> str:
    """'' when the age identity exists and passes the ownership rule every run applies
    (adapters/sops.key_problem: owned by root or the user vigo runs as, readable by nobody
    else); bootstrap also needs it to exist."""
    missing = (f"the age key {path} does not exist; fix: put the host's age identity there "
               f"(age-keygen -o {path}, then add its public key to .sops.yaml and run sops "
               "updatekeys)")
    return key_problem(path, missing)


def bootstrap(opts: BootstrapOptions, say: Say, systemd: Systemd,
              apply: Callable[[Settings], int], runner,
              environ: Mapping[str, str] | None = None) -> int:
    """Checks, settings file, first apply, units. `apply` runs one reconcile and returns its
    exit code (the cli passes the real one)."""
    env = dict(os.environ if environ is None else environ)
    write_settings = not opts.config.exists()
    try:
        if write_settings:
            text, settings = settings_to_write(opts, env)
        else:
            text = ""
            settings = config.load(opts.config, env)
    except ConfigError as exc:
        say(ERR, f"settings: {exc}")
        return 2
    if not write_settings and settings.repo != opts.repo:
        say(ERR, f"settings: missing: {opts.config} exists with repo "
                 f"{_shown(settings.repo)!r}, not {_shown(opts.repo)!r}; fix: edit or remove "
                 "that file (vigo never overwrites it)")
        return EXIT_MISSING

    step = _Steps(say)
    step("checks: tools, the age key, the repo's credentials")
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
    if not write_settings:
        for key, value in opts.credential_values().items():
            if str(getattr(settings, key) or "") != value:
                say(ERR, f"settings: missing: {opts.config} exists without {key} = "
                         f"{json.dumps(value)}; fix: add that line (vigo never overwrites it)")
                missing += 1
    known_hosts = _host_key_step(opts, settings, say, runner)
    if known_hosts is None:
        missing += 1
    token = settings.git_token_file
    why = private_file_problem(token, "git_token_file") if token else ""
    if why:
        say(ERR, f"git token: missing: {why}")
        missing += 1
    elif token:
        say(INFO, f"git token: {token} (root, readable by root only)")
    if missing:
        say(ERR, f"bootstrap: {missing} thing(s) missing, nothing written; fix them and run "
                 "vigo bootstrap again")
        return EXIT_MISSING

    step("keys and settings")
    new_key = _deploy_key_step(opts, settings, say, runner)
    if new_key is None:
        return EXIT_MISSING
    if known_hosts and settings.ssh_known_hosts:
        path = settings.ssh_known_hosts
        same = path.is_file() and path.read_text() == known_hosts
        if not same:
            fs.atomic_write(path, known_hosts.encode(), mode=0o644)
        say(INFO, f"host key: {'unchanged in' if same else 'wrote'} {path}")

    if write_settings:
        fs.atomic_write(opts.config, text.encode(), mode=0o600)
        say(INFO, f"settings: wrote {opts.config} (repo {_shown(settings.repo)}, branch "
                  f"{settings.branch}, host {settings.host})")
    else:
        say(INFO, f"settings: {opts.config} exists, not overwritten")
    summary = [f"settings  {opts.config} ({'written' if write_settings else 'kept'})",
               f"repo      {_shown(settings.repo)}, branch {settings.branch}, host "
               f"{settings.host}"]
    if settings.ssh_key:
        summary.append(f"ssh       key {settings.ssh_key}, host keys "
                       f"{settings.ssh_known_hosts or '~/.ssh/known_hosts'}")

    if new_key:
        say(WARNING, f"deploy key: {settings.ssh_key} is new: add the public half above to "
                     "the infra repo as a read-only deploy key, then run the same vigo "
                     "bootstrap command again")
        _summary(say, *summary, "next      add the deploy key, run vigo bootstrap again")
        return EXIT_MISSING

    step("first apply: clone, decrypt, pull, start, health checks (may take minutes)")
    if not (settings.checkout / ".git").is_dir() or not Git(runner).read_ref(
            settings.checkout, f"refs/remotes/origin/{settings.branch}"):
        code = _first_clone(settings, say, runner)
        if code:
            _summary(say, *summary, f"clone     exit {code}: fix what it says, run vigo "
                                    "bootstrap again", "units     not installed yet")
            return code
    held = suspend.read(settings.state)
    if held:  # apply would refuse; say why instead of "some stacks failed"
        say(WARNING, f"warning: apply: skipped, vigo is {held.line()}; `vigo resume` lets "
                     "the timer apply")
        code = 0  # bootstrap did its part; the timer runs exit 0 while suspended too
    else:
        say(INFO, f"apply: first reconcile of {settings.host} ({_shown(settings.repo)} in "
                  f"{settings.checkout})")
        code = apply(settings)
    if code in (2, 3):
        hint = (f" (is the public half of {settings.ssh_key} added to the repo as a deploy "
                "key?)" if settings.ssh_key and code == 3 else "")
        say(ERR, f"apply: exit {code}: the repo could not be fetched or rendered (see above)"
                 f"{hint}; fix it and run vigo bootstrap again (units not installed yet)")
        _summary(say, *summary, f"apply     exit {code}: fix what it says, run vigo "
                                 "bootstrap again", "units     not installed yet")
        return code
    if code == 75:
        say(WARNING, "warning: apply: another vigo run holds the lock (is the timer already "
                     "running?); the timer applies the repo")
    elif held:
        pass
    elif code:
        say(WARNING, f"warning: apply: exit {code}: some stacks failed (see above); the timer "
                     f"retries {opts.interval}s after each run")
    else:
        say(INFO, "apply: converged")
    summary.append("apply     " + (f"skipped: {held.line()}; vigo resume" if held else {
        0: "converged", 75: "another run holds the lock"}.get(
        code, f"exit {code}: some stacks failed (see above)")))
    step("systemd units")
    rc = install(settings, opts.config, systemd, say, enable=opts.enable,
                 randomized_delay=opts.randomized_delay, interval=opts.interval)
    summary.append(f"units     {'installed' if not rc else f'failed (exit {rc}, see above)'}"
                   + ("" if rc else ", timer enabled" if opts.enable else
                      ", timer not enabled (--no-enable)"))
    _summary(say, *summary, "next      vigo status; journalctl -u vigo; docs/host-setup.md")
    if rc:
        return rc
    say(INFO, "bootstrap: done; vigo status shows what runs")
    return 1 if code not in (0, 75) else 0


def _first_clone(settings: Settings, say: Say, runner) -> int:
    """The first fetch on its own line, timed: the longest quiet step of a bootstrap, and the
    one that meets the deploy key and host key first. The working tree is not touched (the
    apply checks out, after its signature checks)."""
    from vigo.adapters.git import SourceError, git_auth
    from vigo.adapters.run import CommandTimeout
    from vigo.host.source import fetch_branch

    say(INFO, f"clone: fetching {_shown(settings.repo)} branch {settings.branch} into "
              f"{settings.checkout} (the first clone can take a while)")
    t0 = time.monotonic()
    try:
        rev, _ = fetch_branch(Git(runner, settings.git_timeout, git_auth(settings)),
                              settings.repo, settings.branch, settings.checkout)
    except (SourceError, CommandTimeout) as exc:
        say(ERR, f"clone: {runner.masker(str(exc))}; nothing changed")
        return 3
    say(INFO, f"clone: fetched {rev[:12]} in {time.monotonic() - t0:.1f} s")
    return 0


def _shown(url: str) -> str:
    """A repo URL as bootstrap prints it: without user and password (https), or a password."""
    return split_credentials(url)[0]


class _Steps:
    """`bootstrap: step N: what` before each step, so a person can follow it."""

    def __init__(self, say: Say) -> None:
        self.say, self.n = say, 0

    def __call__(self, what: str) -> None:
        self.n += 1
        self.say(INFO, f"bootstrap: step {self.n}/4: {what}")


def _summary(say: Say, *lines: str) -> None:
    say(INFO, "bootstrap: summary")
    for line in lines:
        say(INFO, f"  {line}")


FINGERPRINT_RE = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}=?$")


def _host_key_step(opts: BootstrapOptions, settings: Settings, say: Say, runner
                   ) -> str | None:
    """The pinned host key: '' when there is nothing to write, the known_hosts text to write
    (--host-key-fingerprint: only the offered keys with that fingerprint), None on an error."""
    fp = opts.host_key_fingerprint
    if opts.known_hosts:
        why = known_hosts_problem(opts.known_hosts)
        if why:
            say(ERR, f"host key: missing: {why}")
            return None
        say(INFO, f"host key: pinned by {opts.known_hosts}")
        return ""
    if not fp:
        if ssh_target(settings.repo) and not settings.ssh_known_hosts:
            say(WARNING, "warning: host key: no ssh_known_hosts: ssh checks the server's key "
                         "against root's ~/.ssh/known_hosts; pin it with "
                         "--host-key-fingerprint SHA256:... (docs/host-setup.md)")
        return ""
    target = ssh_target(settings.repo)
    if not FINGERPRINT_RE.match(fp) or target is None:
        say(ERR, f"host key: missing: {fp!r} is not a SHA256:... fingerprint, or "
                 f"{_shown(settings.repo)} is not an ssh:// or user@host:path repo")
        return None
    host, port = target
    say(INFO, f"host key: asking {host} port {port} for its keys (ssh-keyscan)")
    offered = Git(runner, settings.git_timeout).host_keys(host, port)
    lines = [line for line, found in offered if found == fp.rstrip("=")]
    if not lines:
        shown = ", ".join(f"{line.split()[1].removeprefix('ssh-').upper()} {found}"
                          for line, found in offered) or "no key (is the server up?)"
        say(ERR, f"host key: missing: {host} port {port} offers {shown}, not {fp}: nothing "
                 "pinned; fix: check the fingerprint with the git server's admin")
        return None
    say(INFO, f"host key: {host} port {port} offers {fp}: pinned")
    return "".join(line + "\n" for line in lines)


def _deploy_key_step(opts: BootstrapOptions, settings: Settings, say: Say, runner
                     ) -> bool | None:
    """The SSH deploy key: True when it was created now, False when it exists, None when it
    cannot be used. Its public half is printed either way (add it as a read-only deploy key)."""
    key = settings.ssh_key
    if key is None:
        return False
    created = False
    if opts.ssh_keygen and not key.exists():
        if not key.parent.exists():
            fs.private_dir(key.parent)
        res = runner.run(("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                          f"vigo@{settings.host}", "-f", str(key)), timeout=60)
        if not res.ok:
            say(ERR, f"deploy key: cannot create {key}: {res.error(2)}")
            return None
        os.chmod(key, 0o600)
        created = True
    why = private_file_problem(key, "ssh_key")
    if why:
        say(ERR, f"deploy key: missing: {why}")
        return None
    public = key.with_name(key.name + ".pub")
    res = runner.run(("ssh-keygen", "-y", "-f", str(key)), timeout=60) if not \
        public.is_file() else None
    text = public.read_text().strip() if res is None else res.stdout.strip()
    say(INFO, f"deploy key: {'created' if created else 'using'} {key} (root, 0600); add its "
              "public half to the infra repo as a read-only deploy key:")
    say(INFO, f"  {text}")
    return created


def settings_to_write(opts: BootstrapOptions, environ: Mapping[str, str]
                      ) -> tuple[str, Settings]:
    """The settings file bootstrap writes, and what it loads as. `host` is always written (the
    machine's name when --host is not given): a later rename of the machine must not switch the
    hosts/<host>/ overlay, and prune its stacks, on its own."""
    values = _values(opts, environ)
    settings = _load_text(settings_text(values), environ)
    values.setdefault("host", settings.host)
    return settings_text(values), settings


def _load_text(text: str, environ: Mapping[str, str]) -> Settings:
    """Validate settings text the way `config.load` reads the file, before it exists."""
    with tempfile.TemporaryDirectory(prefix="vigo-settings-") as tmp:
        path = Path(tmp) / "vigo.toml"
        path.write_text(text)
        return config.load(path, dict(environ))
