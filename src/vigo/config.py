"""Settings: /etc/vigo/vigo.toml (or --config FILE), VIGO_<KEY> environment overrides, defaults.

Validated in one place; every error names the key and the file.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from vigo.core.model import DEFAULT_CAPS, STACK_NAME, STACK_PATTERN, is_host_name
from vigo.core.records import fields, record

if TYPE_CHECKING:
    from vigo.core import policy

DEFAULT_CONFIG = Path("/etc/vigo/vigo.toml")


class ConfigError(Exception):
    pass


@record(frozen=True)
class Settings:
    repo: str
    branch: str = "main"
    checkout: Path = Path("/srv/vigo")
    runtime: Path = Path("/srv/runtime")
    secrets: Path = Path("/run/vigo")
    state: Path = Path("/var/lib/vigo")
    host: str = ""
    age_key_file: Path = Path("/root/.config/sops/age/keys.txt")
    # Prepended to every compose project name vigo creates; lets two vigo instances (or tests)
    # share one engine without seeing each other's stacks.
    project_prefix: str = ""
    # Timeouts in seconds for one git and one compose call.
    git_timeout: int = 120
    compose_timeout: int = 600
    # Seconds systemd lets one run take (TimeoutStartSec of vigo.service) before it ends it;
    # unset: git_timeout + 3 x compose_timeout.
    run_timeout: int | None = None
    # Seconds a stack's containers get to be running and healthy after an apply (a stack's
    # compose file may set its own: `x-vigo: {health_timeout: 300}`).
    health_timeout: int = 120
    keep_images: int = 3  # revisions per stack whose images are kept for a rollback
    # Decrypted env files live on tmpfs; a `secrets` folder on disk is refused unless this is
    # set (a host without a tmpfs, accepting that plaintext may reach the disk).
    secrets_on_disk: bool = False
    # Policy allowlists for the rules of `vigo check`, which apply runs stack by stack.
    allow_unpinned: tuple[str, ...] = ()  # stacks that may run latest / branch-* tags
    allow_caps: tuple[str, ...] = DEFAULT_CAPS
    allow_host_paths: tuple[str, ...] = ()  # absolute host path prefixes stacks may bind
    # "<stack>:<port>[/udp]": a port an app stack may publish on every interface
    allow_ports: tuple[str, ...] = ()
    # "<stack>:<rule>": what a rule of the policy (docs/security.md) refuses, one stack may do
    allow_privileges: tuple[str, ...] = ()
    # Operations (docs/operations.md): a Prometheus textfile, outbound notifications.
    metrics_file: Path | None = None  # written atomically after every apply
    notify_webhook: str = ""  # generic JSON POST on failure and on recovery
    notify_ntfy: str = ""  # ntfy topic URL, same events
    healthchecks_url: str = ""  # healthchecks.io style: /start, success, /fail on every run
    # Signed commits (docs/security.md): apply only commits signed by these keys, at most one.
    allowed_signers: Path | None = None  # SSH allowed-signers file
    gpg_keyring: Path | None = None  # GnuPG home folder holding the trusted public keys
    # A private infra repo (docs/host-setup.md): an SSH deploy key and the pinned known_hosts
    # file, or a token in a root-only file for HTTPS, and a private CA of the git server.
    ssh_key: Path | None = None
    ssh_known_hosts: Path | None = None
    git_token_file: Path | None = None
    git_ca_file: Path | None = None
    # The engine of the stacks that name none in `x-vigo.engine`: compose or swarm
    # (docs/swarm.md; on a swarm, vigo runs on every manager and only the leader applies).
    engine: str = "compose"

    def project(self, stack: str) -> str:
        return self.project_prefix + stack


_PATH_KEYS = {"checkout", "runtime", "secrets", "state", "age_key_file", "metrics_file",
              "allowed_signers", "gpg_keyring", "ssh_key", "ssh_known_hosts", "git_token_file",
              "git_ca_file"}
_URL_KEYS = {"notify_webhook", "notify_ntfy", "healthchecks_url"}
# Whole numbers and their sane range: a timeout of 10**20 s would overflow the unit's
# TimeoutStartSec and never end a hung command.
_INT_KEYS = {"git_timeout": (1, 3600), "compose_timeout": (1, 7200),
             "health_timeout": (1, 3600), "keep_images": (1, 100),
              "run_timeout": (10, 86400)}
_UNITS = {"keep_images": " (revisions)"}
# Folders vigo owns: each its own, none inside another (`git clean` in a checkout that holds
# the runtime would wipe acme.json; a runtime that holds the state would be synced away).
_OWN_DIRS = ("checkout", "runtime", "secrets", "state")
_LIST_KEYS = {"allow_unpinned", "allow_caps", "allow_host_paths", "allow_ports",
              "allow_privileges"}
_BOOL_KEYS = {"secrets_on_disk"}
_PORT = rf"{STACK_PATTERN}:[0-9]{{1,5}}(/(tcp|udp|sctp))?\Z"  # compiled at the first allow_ports
# The flat TOML that settings files hold, one line at a time: `key = value # comment`, where
# the key is bare and the value a one-line string without escapes, a decimal integer, a
# boolean or a one-line array of such strings. Comments and strings may hold any character
# TOML allows there (not the control characters). Anything else is tomllib's to read.
_CTL = r"\x00-\x08\x0a-\x1f\x7f"
_STR = rf"""(?:"[^"\\{_CTL}]*"|'[^'{_CTL}]*')"""
_FLAT_LINE = re.compile(
    rf"[ \t]*(?:(?P<key>[A-Za-z0-9_-]+)[ \t]*=[ \t]*(?:(?P<str>{_STR})"
    rf"|(?P<word>true|false|-?(?:0|[1-9][0-9]*))|\[(?P<items>[^\]{_CTL}]*)\])[ \t]*)?"
    rf"(?:#[^{_CTL}]*)?")
# An array's items up to the first `]` (compiled at the first array: most files have none).
_ITEMS = rf"[ \t]*(?:{_STR}[ \t]*,[ \t]*)*(?:{_STR}[ \t]*)?"


def waivable() -> frozenset[str]:
    """Rules a stack may be let off: not the Docker socket (root, always), not unresolved
    values. (A function: policy.py is imported only by settings that waive a rule.)"""
    from vigo.core import policy

    return frozenset(policy.ALL_RULES) - {"docker-sock", policy.UNRESOLVED, "cap-add",
                                          "host-path", "port-exposed"}


def parse_toml(text: str) -> dict[str, object]:
    """What `tomllib.loads(text)` returns: read here when every line is flat TOML (the form
    real settings files have, and the only one an idle run then pays for); any other line,
    and a key given twice, hand the whole text to tomllib (its import alone costs ~10 ms)."""
    out: dict[str, object] = {}
    for line in text.split("\n"):
        m = _FLAT_LINE.fullmatch(line)
        if m is None or m["key"] in out:
            break
        if m["key"] is None:
            continue
        if m["str"] is not None:
            out[m["key"]] = m["str"][1:-1]
        elif m["word"] is not None:
            word = m["word"]
            out[m["key"]] = word == "true" if word in ("true", "false") else int(word)
        elif re.fullmatch(_ITEMS, m["items"]):  # not: a `]` in a string, `[1]`, `[,]`
            out[m["key"]] = [item[1:-1] for item in re.findall(_STR, m["items"])]
        else:
            break
    else:
        return out
    import tomllib

    return tomllib.loads(text)


def load(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read the settings file (if it exists, or if it was named), apply VIGO_* overrides."""
    environ = dict(os.environ if environ is None else environ)
    named = path is not None
    path = path or Path(environ.get("VIGO_CONFIG", DEFAULT_CONFIG))
    raw: dict[str, object] = {}
    if path.exists():
        try:
            raw = parse_toml(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: cannot read settings: not UTF-8 text (byte "
                              f"0x{exc.object[exc.start]:02x} at offset {exc.start}); save "
                              "the file as UTF-8") from exc
        except (OSError, ValueError, RecursionError) as exc:  # tomllib's error: a ValueError
            raise ConfigError(f"{path}: cannot read settings: {exc}") from exc
    elif named:
        raise ConfigError(f"{path}: settings file not found; fix: restore it (the unit reads "
                          "only this file), or write it again with `vigo bootstrap --repo URL`")
    known = {f.name for f in fields(Settings)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(known))})")
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for key, value in raw.items():
        values[key], sources[key] = value, str(path)
    for key in known:
        env_key = "VIGO_" + key.upper()
        if env_key in environ:
            values[key], sources[key] = environ[env_key], env_key
    return _validate(values, sources, str(path))


def _validate(values: dict[str, object], sources: dict[str, str], path: str) -> Settings:
    out: dict[str, object] = {}
    for key, value in values.items():
        where = sources[key]
        if key in _INT_KEYS:
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            low, high = _INT_KEYS[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                shown = f", got {value!r:.40}" if isinstance(value, int) else ""
                least = "" if low == 1 else f" from {low}"
                raise ConfigError(f"{where}: {key} must be a positive whole number{least} up to "
                                  f"{high}{_UNITS.get(key, ' (seconds)')}{shown}")
            out[key] = value
            continue
        if key in _BOOL_KEYS:
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0",
                                                             "no"):
                value = value.lower() in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: {key} must be true or false")
            out[key] = value
            continue
        if key in _LIST_KEYS:
            if isinstance(value, str):  # from the environment: comma-separated
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {key} must be a list of strings")
            out[key] = tuple(value)
            _check_entries(key, out[key], where)
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string, not {type(value).__name__}")
        if key in _PATH_KEYS:
            if not value or not os.path.isabs(value):
                raise ConfigError(f"{where}: {key} must be an absolute path, got {value!r}")
            out[key] = Path(value)
        else:
            out[key] = value
    if not out.get("repo"):
        raise ConfigError(f"{path}: repo is required (the URL or path of the infra repo); "
                          "set it in the settings file or VIGO_REPO")
    for key in sorted(_URL_KEYS & out.keys()):
        try:
            url = urlsplit(str(out[key]))
            bad = url.scheme not in ("http", "https") or not url.hostname
        except ValueError:
            bad = True
        if out[key] and bad:
            raise ConfigError(f"{sources[key]}: {key} must be an http:// or https:// URL")
    if out.get("allowed_signers") and out.get("gpg_keyring"):
        raise ConfigError(f"{sources['gpg_keyring']}: allowed_signers and gpg_keyring are both "
                          "set: set at most one (SSH or GPG signed commits)")
    _check_own_dirs(out, sources, path)
    prefix = str(out.get("project_prefix", ""))
    if prefix and not STACK_NAME.match(prefix):
        raise ConfigError("project_prefix must be lowercase letters, digits, '-' or '_'")
    host = str(out.get("host") or socket.gethostname())
    if not is_host_name(host):
        raise ConfigError(f"host {host!r} is not a valid host name")
    out["host"] = host
    if out.get("engine", "compose") not in ("compose", "swarm"):
        raise ConfigError(f"{sources['engine']}: engine must be compose or swarm, got "
                          f"{out['engine']!r:.40} (docs/swarm.md)")
    if not str(out.get("branch", "main")) or str(out.get("branch", "main")).startswith("-"):
        raise ConfigError("branch must be a branch name")
    return Settings(**out)  # type: ignore[arg-type]


def _check_own_dirs(out: dict[str, object], sources: dict[str, str], path: str) -> None:
    """checkout, runtime, secrets and state: never the same folder, never one inside another
    (compared as written and with symlinks resolved). The age key is outside the checkout and
    the runtime: what the repo holds lands there."""
    defaults = {f.name: f.default for f in fields(Settings)}

    def forms(key: str) -> tuple[Path, Path]:
        value = Path(str(out.get(key, defaults[key])))
        return Path(os.path.normpath(value)), Path(os.path.realpath(value))

    def where(*keys: str) -> str:
        named = [sources[k] for k in keys if k in sources]
        return named[0] if named else path

    pairs = [(a, b) for i, a in enumerate(_OWN_DIRS) for b in _OWN_DIRS[i + 1:]]
    pairs += [("age_key_file", d) for d in ("checkout", "runtime")]
    for a, b in pairs:
        for pa, pb in zip(forms(a), forms(b), strict=True):
            if pa == pb:
                raise ConfigError(f"{where(a, b)}: {a} and {b} are the same folder ({pa}): "
                                  "each needs its own")
            inner = (a, pa, b, pb) if pa.is_relative_to(pb) else (
                (b, pb, a, pa) if pb.is_relative_to(pa) else None)
            if inner:
                raise ConfigError(f"{where(a, b)}: {inner[0]} ({inner[1]}) is inside {inner[2]} "
                                  f"({inner[3]}): give each its own folder, none inside another")


def _check_entries(key: str, entries: tuple[str, ...], where: str) -> None:
    for entry in entries:
        if key == "allow_ports" and not re.match(_PORT, entry):
            raise ConfigError(f"{where}: allow_ports entry {entry!r} is not <stack>:<port> or "
                              "<stack>:<port>/udp (e.g. 'gitea:2222')")
        if key == "allow_privileges":
            stack, _, rule = entry.partition(":")
            if not STACK_NAME.match(stack) or rule not in waivable():
                raise ConfigError(f"{where}: allow_privileges entry {entry!r} is not "
                                  f"<stack>:<rule> with a rule of "
                                  f"{', '.join(sorted(waivable()))}")


def policy_of(settings: Settings | None) -> policy.Policy:
    """The policy's allowlists from the settings (strict defaults without settings)."""
    from vigo.core import policy

    if settings is None:
        return policy.Policy()
    return policy.Policy(allow_unpinned=frozenset(settings.allow_unpinned),
                         allow_caps=frozenset(settings.allow_caps),
                         allow_host_paths=frozenset(settings.allow_host_paths),
                         allow_ports=frozenset(settings.allow_ports),
                         allow_privileges=frozenset(settings.allow_privileges))


def load_optional(path: Path | None) -> Settings | None:
    """Settings for commands that also work without them (check on a workstation)."""
    if path is None and not Path(os.environ.get("VIGO_CONFIG", DEFAULT_CONFIG)).exists():
        return None
    return load(path)
