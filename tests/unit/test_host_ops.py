"""Suspension file, the age key check, the settings file bootstrap writes, the new settings."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from vigo import config
from vigo.config import ConfigError
from vigo.host import install, suspend
from vigo.host.install import BootstrapOptions, check_key, settings_text


def test_suspend_records_who_when_why_and_resume_removes_it(tmp_path: Path) -> None:
    assert suspend.read(tmp_path) is None
    new, before = suspend.suspend(tmp_path, " db migration ", {"SUDO_USER": "alice",
                                                              "USER": "root"})
    assert before is None
    assert (new.by, new.reason) == ("alice", "db migration")
    assert (tmp_path / "suspended.json").stat().st_mode & 0o777 == 0o600
    assert suspend.read(tmp_path) == new
    again, before = suspend.suspend(tmp_path, "", {"USER": "bob"})
    assert before == new and again.by == "bob"
    assert again.line().endswith("(no reason given)")
    assert suspend.resume(tmp_path) == again
    assert suspend.resume(tmp_path) is None
    assert suspend.who({}) == f"uid {os.getuid()}"


def test_an_unreadable_suspension_file_still_suspends(tmp_path: Path) -> None:
    (tmp_path / "suspended.json").write_text("{not json")
    held = suspend.read(tmp_path)
    assert held is not None and "unreadable" in held.reason


def test_check_key(tmp_path: Path) -> None:
    key = tmp_path / "keys.txt"
    assert "does not exist" in check_key(key)
    key.write_text("AGE-SECRET-KEY-1...\n")
    key.chmod(0o644)
    fix = f"fix: chown root:root {key} && chmod 600 {key}"
    assert check_key(key) == (f"the age key {key} has mode 0644: group or others can read or "
                              f"change it; {fix}")
    key.chmod(0o400)
    assert check_key(key) == ""
    key.chmod(0o600)
    assert check_key(key) == ""
    os.chown(key, 1234, -1)
    assert check_key(key) == (f"the age key {key} is owned by uid 1234, not root: that user "
                              f"can read every secret; {fix}")  # the rule of every run
    assert "is not a file" in check_key(tmp_path)
    dangling = tmp_path / "link.txt"
    dangling.symlink_to(tmp_path / "gone")
    assert "does not exist; fix: put the host's age identity there" in check_key(dangling)


def test_settings_text_round_trips_through_config_load(tmp_path: Path) -> None:
    opts = BootstrapOptions(repo='https://git.example.org/infra "x".git',
                            config=tmp_path / "vigo.toml", branch="prod", host="web-1")
    values = install._values(opts, {"VIGO_STATE": "/data/vigo", "VIGO_GIT_TIMEOUT": "30",
                                    "VIGO_ALLOW_CAPS": "CHOWN,KILL", "VIGO_NOPE": "1",
                                    "VIGO_REPO": "ignored: --repo wins"})
    path = tmp_path / "vigo.toml"
    path.write_text(settings_text(values))
    s = config.load(path, {})
    assert s.repo == opts.repo and s.branch == "prod" and s.host == "web-1"
    assert s.state == Path("/data/vigo") and s.git_timeout == 30
    assert s.allow_caps == ("CHOWN", "KILL")


@pytest.mark.parametrize("given, environ, written", [
    ("web-1", {}, "web-1"),
    ("", {"VIGO_HOST": "web-9"}, "web-9"),
    ("", {}, socket.gethostname()),
])
def test_bootstrap_always_writes_the_host(tmp_path: Path, given: str, environ: dict,
                                          written: str) -> None:
    opts = BootstrapOptions(repo="https://git.example.org/infra.git",
                            config=tmp_path / "vigo.toml", host=given)
    text, settings = install.settings_to_write(opts, environ)
    assert f'host = "{written}"' in text.splitlines() and settings.host == written
    path = tmp_path / "vigo.toml"
    path.write_text(text)
    assert config.load(path, {}).host == written  # the file alone pins it


@pytest.mark.parametrize("key, value, ok", [
    ("notify_webhook", "https://hooks.example.org/T0/B1", True),
    ("notify_ntfy", "http://ntfy.sh/vigo-alerts", True),
    ("healthchecks_url", "https://hc-ping.com/0f8e", True),
    ("notify_webhook", "", True),
    ("notify_ntfy", "ntfy.sh/vigo", False),
    ("healthchecks_url", "file:///etc/passwd", False),
    ("notify_webhook", "http://[::1", False),
    ("metrics_file", "/var/lib/node_exporter/vigo.prom", True),
    ("metrics_file", "vigo.prom", False),
])
def test_operations_settings(tmp_path: Path, key: str, value: str, ok: bool) -> None:
    path = tmp_path / "vigo.toml"
    path.write_text(f'repo = "x"\n{key} = "{value}"\n')
    if ok:
        got = getattr(config.load(path, {}), key)
        assert str(got) == value or (got is None and not value)
    else:
        with pytest.raises(ConfigError, match=key):
            config.load(path, {})
