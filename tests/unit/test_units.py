"""vigo.service and vigo.timer: rendered from settings, checked by the real
`systemd-analyze verify` (Debian's systemd package; it works without systemd as PID 1)."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from vigo.adapters.run import Runner
from vigo.adapters.systemd import Systemd
from vigo.config import Settings
from vigo.core import units
from vigo.host.install import exec_argv, install

VIGO = (str(Path(sys.executable).parent / "vigo"),)


def parse(text: str) -> dict[str, dict[str, str]]:
    """A unit file as sections of keys (the last value wins, as for systemd's scalars)."""
    cp = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(text)
    return {s: dict(cp[s]) for s in cp.sections()}


def render(settings: Settings, delay: int = 0) -> dict[str, str]:
    return units.render(units.spec(settings, VIGO, Path("/etc/vigo/vigo.toml"), delay))


def test_service_is_a_hardened_oneshot_running_apply_from_the_timer() -> None:
    svc = parse(render(Settings(repo="x"))[units.SERVICE])["Service"]
    assert svc["Type"] == "oneshot"
    assert svc["ExecStart"] == f"{VIGO[0]} --config /etc/vigo/vigo.toml apply --timer"
    assert int(svc["TimeoutStartSec"]) == 120 + 3 * 600
    expected = {"UMask": "0077", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
                "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
                "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "PrivateTmp": "yes",
                "MemoryMax": "2G", "TasksMax": "512", "RestrictNamespaces": "yes",
                "SystemCallArchitectures": "native", "ProtectClock": "yes",
                "ProtectHostname": "yes",
                "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK"}
    assert {k: svc.get(k) for k in expected} == expected
    assert svc["ReadWritePaths"].split() == ["/srv/vigo", "/srv/runtime", "/var/lib/vigo",
                                             "/run"]
    for forbidden in ("PrivateNetwork", "DynamicUser", "User"):
        assert forbidden not in svc


@pytest.mark.parametrize("settings, rw, private_tmp", [
    pytest.param(Settings(repo="x", secrets=Path("/srv/secrets"),
                          metrics_file=Path("/var/lib/node_exporter/vigo.prom")),
                 ["/srv/vigo", "/srv/runtime", "/var/lib/vigo", "/var/lib/node_exporter", "/run",
                  "-/srv/secrets"], True, id="secrets-off-run-and-metrics"),
    pytest.param(Settings(repo="x", secrets=Path("/dev/shm/vigo")),
                 ["/srv/vigo", "/srv/runtime", "/var/lib/vigo", "/run", "-/dev/shm/vigo"], True,
                 id="secrets-on-dev-shm-may-be-missing-after-a-boot"),
    pytest.param(Settings(repo="x", checkout=Path("/srv/vigo/checkout"),
                          runtime=Path("/srv/vigo/runtime"), state=Path("/srv/vigo/state"),
                          metrics_file=Path("/srv/vigo/state/vigo.prom")),
                 ["/srv/vigo/checkout", "/srv/vigo/runtime", "/srv/vigo/state", "/run"], True,
                 id="metrics-inside-state"),
    pytest.param(Settings(repo="x", runtime=Path("/tmp/vigo/runtime")),
                 ["/srv/vigo", "/tmp/vigo/runtime", "/var/lib/vigo", "/run"], False,
                 id="tmp-path-means-no-private-tmp"),
])
def test_read_write_paths_and_private_tmp(settings: Settings, rw: list[str],
                                          private_tmp: bool) -> None:
    svc = parse(render(settings)[units.SERVICE])["Service"]
    assert svc["ReadWritePaths"].split() == rw
    assert ("PrivateTmp" in svc) is private_tmp


def test_timer_runs_after_boot_then_after_each_run_ends() -> None:
    timer = parse(render(Settings(repo="x"))[units.TIMER])
    assert timer["Timer"] == {"OnBootSec": "30s", "OnUnitInactiveSec": "60s",
                              "AccuracySec": "1s", "Unit": "vigo.service"}
    assert timer["Install"] == {"WantedBy": "timers.target"}
    delayed = parse(render(Settings(repo="x"), delay=45)[units.TIMER])
    assert delayed["Timer"]["RandomizedDelaySec"] == "45"


@pytest.mark.parametrize("settings", [
    Settings(repo="x"),
    Settings(repo="x", runtime=Path("/tmp/a b/runtime"), metrics_file=Path("/opt/m/v.prom"),
             git_timeout=5, compose_timeout=7),
])
def test_systemd_analyze_verify_passes(settings: Settings) -> None:
    texts = units.render(units.spec(settings, exec_argv(), Path("/etc/vigo/vigo.toml"), 30))
    assert Systemd(Runner()).verify(texts) == ""


def test_systemd_analyze_verify_catches_a_broken_unit() -> None:
    texts = render(Settings(repo="x"))
    texts[units.SERVICE] = texts[units.SERVICE].replace("UMask=0077", "Umask=0077")
    assert "Unknown key 'Umask'" in Systemd(Runner()).verify(texts)
    texts = units.render(units.spec(Settings(repo="x"), ("/nonexistent/vigo",),
                                    Path("/etc/vigo/vigo.toml")))
    assert "/nonexistent/vigo" in Systemd(Runner()).verify(texts)


def test_install_under_a_root_writes_verifies_and_enables_offline(tmp_path: Path) -> None:
    root = tmp_path / "root"
    lines: list[tuple[int, str]] = []
    settings = Settings(repo="x")
    rc = install(settings, Path("/etc/vigo/vigo.toml"), Systemd(Runner(), root),
                 lambda level, text: lines.append((level, text)), randomized_delay=10)
    assert rc == 0, lines
    unit_dir = root / "etc/systemd/system"
    assert (unit_dir / "vigo.service").stat().st_mode & 0o777 == 0o644
    assert (unit_dir / "timers.target.wants/vigo.timer").is_symlink()
    assert [t for _, t in lines] == [
        "verify: systemd-analyze verify passes on vigo.service and vigo.timer",
        f"vigo.service: written to {unit_dir}/vigo.service",
        f"vigo.timer: written to {unit_dir}/vigo.timer",
        f"timer: enabled under {root} (starts when that system boots)"]
    lines.clear()
    assert install(settings, Path("/etc/vigo/vigo.toml"), Systemd(Runner(), root),
                   lambda level, text: lines.append((level, text)), enable=False,
                   randomized_delay=10) == 0
    assert lines[1][1] == f"vigo.service: unchanged in {unit_dir}/vigo.service"
    assert lines[-1][1].startswith("timer: not enabled (--no-enable)")


def test_cli_install_help_and_root(tmp_path: Path) -> None:
    config = tmp_path / "vigo.toml"
    config.write_text(f'repo = "/x"\nstate = "{tmp_path}/state"\n')
    res = subprocess.run([sys.executable, "-m", "vigo", "--config", str(config), "install",
                          "--root", str(tmp_path / "r"), "--randomized-delay", "5"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    service = (tmp_path / "r/etc/systemd/system/vigo.service").read_text()
    assert f"--config {config} apply --timer" in service
    assert f"{tmp_path}/state" in parse(service)["Service"]["ReadWritePaths"]


def test_systemd_analyze_verify_reads_the_resource_limits() -> None:
    texts = render(Settings(repo="x"))
    texts[units.SERVICE] = texts[units.SERVICE].replace("MemoryMax=2G", "MemoryMax=2Q")
    assert "Invalid memory limit '2Q'" in Systemd(Runner()).verify(texts)


@pytest.mark.parametrize(("text", "seconds"), [
    ("15s", 15), ("15", 15), ("1min", 60), ("2m 30s", 150), ("2min30s", 150), ("1h", 3600),
    ("1.5h", 5400), ("90 sec", 90), ("1d", 86400), ("1w", 604800), ("1000ms", 1.0),
    ("500ms", 0.5), ("2 minutes 1 second", 121), ("  10s ", 10),
])
def test_timespan(text: str, seconds: float) -> None:
    assert units.timespan(text) == seconds


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty"), ("fast", "not a systemd time span"), ("15x", "not a systemd time span"),
    ("-5s", "not a systemd time span"), ("15s;rm", "not a systemd time span"),
    ("5s\nOnCalendar=*", "not a systemd time span"),  # no unit file injection
    ("0", "at least 1s"), ("500ms", "at least 1s"), ("1500ms", "whole seconds"),
])
def test_interval_refuses(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        units.interval_seconds(text)


def test_interval_reaches_the_timer_and_verifies() -> None:
    spec = units.spec(Settings(repo="x"), exec_argv(), Path("/etc/vigo/vigo.toml"), 5,
                      interval=units.interval_seconds("15s"))
    texts = units.render(spec)
    timer = parse(texts[units.TIMER])["Timer"]
    assert (timer["OnUnitInactiveSec"], timer["RandomizedDelaySec"]) == ("15s", "5")
    assert "then 15s after each run ends" in texts[units.TIMER]
    assert Systemd(Runner()).verify(texts) == ""


def test_cli_install_interval(tmp_path: Path) -> None:
    config = tmp_path / "vigo.toml"
    config.write_text(f'repo = "/x"\nstate = "{tmp_path}/state"\n')
    base = [sys.executable, "-m", "vigo", "--config", str(config), "install", "--root",
            str(tmp_path / "r")]
    res = subprocess.run([*base, "--interval", "15s", "--randomized-delay", "1min"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    timer = parse((tmp_path / "r/etc/systemd/system/vigo.timer").read_text())["Timer"]
    assert (timer["OnUnitInactiveSec"], timer["RandomizedDelaySec"]) == ("15s", "60")
    for bad, why in (("15x", "is not a systemd time span"), ("0", "at least 1s")):
        res = subprocess.run([*base, "--interval", bad], capture_output=True, text=True,
                             check=False)
        assert res.returncode == 2 and why in res.stderr and "Traceback" not in res.stderr
