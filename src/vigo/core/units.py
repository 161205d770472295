"""vigo.service and vigo.timer as text (pure): a hardened oneshot and the timer that runs it.

Writing them, `systemctl` and `systemd-analyze verify` live in adapters/systemd.py.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from vigo import __version__
from vigo.core.records import record

SERVICE, TIMER = "vigo.service", "vigo.timer"
BOOT_DELAY, INTERVAL = "30s", "60s"
# The run's own ceiling (vigo, git, sops and the docker CLI it starts; containers live in the
# engine's cgroups, not here): a repo that makes a parser blow up ends in an OOM kill of this
# run, never of the host. 2 GiB: two `docker compose config` at their 1 GiB data limit
# (adapters/run.py) never fit, four parallel deploys (~100 MiB each) do. Tasks count threads:
# each Go binary runs ~10-20. A drop-in (systemctl edit vigo.service) may raise both.
MEMORY_MAX, TASKS_MAX = "2G", 512
INTERVAL_S = 60  # `vigo install --interval`: a systemd time span, whole seconds, at least 1 s
# A path under one of these handed to the engine (bind sources, resolved on the host) must not
# be hidden behind a private /tmp.
_TMP_DIRS = (Path("/tmp"), Path("/var/tmp"))


@record(frozen=True)
class UnitSpec:
    """What the two units say: everything comes from the settings and the install command."""

    exec_argv: tuple[str, ...]  # how to start vigo, e.g. ("/usr/local/bin/vigo",)
    config: Path  # the settings file ExecStart names
    read_write: tuple[Path, ...]  # must exist when the unit starts (vigo install makes them)
    read_write_optional: tuple[Path, ...]  # may be missing (a tmpfs after a boot): vigo makes it
    private_tmp: bool
    timeout_start: int  # seconds
    randomized_delay: int = 0  # seconds, 0: none
    interval: int = INTERVAL_S  # seconds from the end of one run to the start of the next


class Settings(Protocol):
    """What the units need of vigo's settings (config.Settings has it; core imports no
    config)."""

    @property
    def checkout(self) -> Path: ...
    @property
    def runtime(self) -> Path: ...
    @property
    def secrets(self) -> Path: ...
    @property
    def state(self) -> Path: ...
    @property
    def metrics_file(self) -> Path | None: ...
    @property
    def git_timeout(self) -> int: ...
    @property
    def compose_timeout(self) -> int: ...
    @property
    def run_timeout(self) -> int | None: ...


def spec(settings: Settings, exec_argv: Sequence[str], config: Path,
         randomized_delay: int = 0, interval: int = INTERVAL_S) -> UnitSpec:
    """The unit spec for these settings. The folders vigo writes become ReadWritePaths
    (under ProtectSystem=strict everything else is read-only, /run included)."""
    paths = [settings.checkout, settings.runtime, settings.state]
    if settings.metrics_file is not None:
        paths.append(settings.metrics_file.parent)
    paths = _dedup([*paths, Path("/run")])
    # The secrets live on a tmpfs that a boot empties: a missing ReadWritePaths entry would
    # stop the unit (status 226/NAMESPACE), so it is optional ("-"). /run and /dev/shm stay
    # writable, so vigo can make the folder there again.
    optional = [] if any(settings.secrets.is_relative_to(p) for p in paths) else [
        settings.secrets]
    private_tmp = not any(p.is_relative_to(t) for p in [*paths, *optional] for t in _TMP_DIRS)
    # A run: one fetch, the proxy, the stacks (several at a time) and the prunes, each bounded by
    # its own timeout; three compose timeouts cover a host whose stacks fit in one batch.
    timeout = settings.run_timeout or settings.git_timeout + 3 * settings.compose_timeout
    return UnitSpec(tuple(exec_argv), config, tuple(paths), tuple(optional), private_tmp,
                    timeout, randomized_delay, interval)


def _dedup(paths: Sequence[Path]) -> list[Path]:
    """Drop paths that sit inside another listed path."""
    return [p for p in dict.fromkeys(paths)
            if not any(p != q and p.is_relative_to(q) for q in paths)]


def _argv(argv: Sequence[str]) -> str:
    """A command line for ExecStart=: systemd's quoting is close enough to the shell's for
    plain paths; `%` would be a specifier and is escaped."""
    return " ".join(shlex.quote(str(a)) for a in argv).replace("%", "%%")


def _path(p: Path) -> str:
    text = str(p).replace("%", "%%")
    return f'"{text}"' if " " in text else text


def service(u: UnitSpec) -> str:
    rw = " ".join([_path(p) for p in u.read_write] + [f"-{_path(p)}" for p in
                                                      u.read_write_optional])
    lines = [
        f"# Written by `vigo install` (vigo {__version__}); run it again to update this file.",
        "# Local changes belong in a drop-in: systemctl edit vigo.service",
        "[Unit]",
        "Description=vigo: converge this host to its infra repo (one reconcile)",
        "Wants=network-online.target",
        "After=network-online.target docker.service",
        "",
        "[Service]",
        "Type=oneshot",
        f"ExecStart={_argv([*u.exec_argv, '--config', str(u.config), 'apply', '--timer'])}",
        # A oneshot has no start timeout by default: a hung run would stop the timer forever.
        f"TimeoutStartSec={u.timeout_start}",
        # Told to stop, vigo ends its waits at once and records the run as interrupted; what
        # still runs after 30 s is killed (the default would wait 90 s before the next run).
        "TimeoutStopSec=30",
        # 75: another run (a manual one) holds the lock; nothing was done, nothing is wrong.
        "SuccessExitStatus=75",
        "Environment=PYTHONUNBUFFERED=1",
        "SyslogIdentifier=vigo",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={rw}",
        *(["PrivateTmp=yes"] if u.private_tmp else [
            "# No PrivateTmp: a folder vigo hands to the engine lives in /tmp, and the engine",
            "# resolves bind sources on the host, outside this unit's namespace."]),
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RestrictRealtime=yes",
        "RestrictNamespaces=yes",
        "SystemCallArchitectures=native",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        # unix: docker.sock; inet: git and webhooks; netlink: glibc's getaddrinfo
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        f"MemoryMax={MEMORY_MAX}",
        f"TasksMax={TASKS_MAX}",
        "# Not set on purpose: PrivateNetwork (git fetches), DynamicUser (docker.sock).",
        "",
    ]
    return "\n".join(lines)


def timer(u: UnitSpec) -> str:
    lines = [
        f"# Written by `vigo install` (vigo {__version__}); run it again to update this file.",
        "[Unit]",
        f"Description=vigo: reconcile {BOOT_DELAY} after boot, then {u.interval}s after each "
        "run ends",
        "",
        "[Timer]",
        f"OnBootSec={BOOT_DELAY}",
        # Counted from the end of the last run: runs never pile up, whatever they take.
        f"OnUnitInactiveSec={u.interval}s",
        "AccuracySec=1s",
        *([f"RandomizedDelaySec={u.randomized_delay}"] if u.randomized_delay else []),
        f"Unit={SERVICE}",
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ]
    return "\n".join(lines)


# systemd.time(7): a time span is numbers with units, "2min 30s"; a bare number is seconds.
_SPAN_UNITS = {
    **dict.fromkeys(("us", "usec", "µs", "μs"), 1e-6), **dict.fromkeys(("ms", "msec"), 1e-3),
    **dict.fromkeys(("", "s", "sec", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
    **dict.fromkeys(("w", "week", "weeks"), 604800.0),
    **dict.fromkeys(("M", "month", "months"), 2629800.0),
    **dict.fromkeys(("y", "year", "years"), 31557600.0),
}
_SPAN_PART = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Zµμ]*)")


def timespan(text: str) -> float:
    """Seconds in a systemd time span ("15s", "1min 30s", "1.5h", "90"); ValueError says why."""
    pos, total, parts = 0, 0.0, 0
    while pos < len(text.rstrip()):
        m = _SPAN_PART.match(text, pos)
        if not m or m.group(2) not in _SPAN_UNITS:
            raise ValueError(f"{text!r} is not a systemd time span (for example 15s, 2min, "
                             "1h 30min)")
        total += float(m.group(1)) * _SPAN_UNITS[m.group(2)]
        pos, parts = m.end(), parts + 1
    if not parts:
        raise ValueError("an empty time span (for example 15s, 2min, 1h 30min)")
    return total


def interval_seconds(text: str) -> int:
    """`--interval`: a time span of whole seconds, at least 1 s (AccuracySec is 1 s)."""
    seconds = timespan(text)
    if seconds < 1 or seconds != int(seconds):
        raise ValueError(f"{text!r}: the interval must be whole seconds, at least 1s")
    return int(seconds)


def render(u: UnitSpec) -> dict[str, str]:
    return {SERVICE: service(u), TIMER: timer(u)}
