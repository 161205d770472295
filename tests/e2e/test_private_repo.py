"""A private infra repo, against real servers started here: OpenSSH's sshd with a deploy key
limited by git-shell and a pinned host key, and `git http-backend` behind lighttpd with TLS
from a local CA and basic auth with a token (tests/support/gitservers.py)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.e2e.conftest import Host
from tests.support.gitservers import HttpsGitServer, SshGitServer, keygen
from tests.support.infra import sh
from tests.support.poll import wait_for


def _settings(host: Host, **values: object) -> None:
    """Replace the repo line and append settings (paths as TOML strings)."""
    text = re.sub(r'^repo = .*$', "", host.config.read_text(), flags=re.M)
    text += "".join(f"{k} = {json.dumps(str(v))}\n" for k, v in values.items())
    host.config.write_text(text)


def _head(host: Host) -> str:
    return sh("git", "-C", str(host.checkout), "rev-parse", "HEAD").stdout.strip()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """vigo runs with this HOME: nothing may appear under HOME/.ssh."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("GIT_SSH_COMMAND", "false")  # a caller's ssh command is not used
    return folder


@pytest.fixture
def sshd(tmp_path: Path):
    server = SshGitServer(tmp_path / "sshd")
    yield server
    server.stop()


def test_ssh_deploy_key_pinned_host_key_unknown_and_changed_keys_refused(
        host: Host, sshd: SshGitServer, home: Path) -> None:
    first = host.seed({})
    key = host.root / "deploy_key"
    sshd.allow(keygen(key))
    known = sshd.known_hosts(host.root / "known_hosts")
    _settings(host, repo=sshd.url(host.repo.remote), ssh_key=key, ssh_known_hosts=known)

    host.apply()
    assert _head(host) == first
    assert len(host.containers()) == 1  # the proxy

    # An unknown host key: refused with the offered fingerprint and the fix; nothing moves.
    host.repo.write("README.md", "second\n")
    host.repo.commit("second")
    known.write_text("")
    res = host.apply(expect=3)
    line = next(x for x in res.stdout.splitlines() if "host key" in x)
    assert f"the SSH host key of [127.0.0.1]:{sshd.port} is not in {known}" in line
    assert f"the server offers ED25519 key {sshd.fingerprint()}" in line
    assert f"--host-key-fingerprint {sshd.fingerprint()}" in line
    assert "nothing changed" in line
    assert _head(host) == first

    # A changed host key (the server was re-keyed): refused, the new fingerprint shown.
    sshd.known_hosts(known)
    old = sshd.fingerprint()
    sshd.rekey()
    assert sshd.fingerprint() != old
    res = host.apply(expect=3)
    line = next(x for x in res.stdout.splitlines() if "host key" in x)
    assert f"the SSH host key of [127.0.0.1]:{sshd.port} CHANGED" in line
    assert f"the server offers ED25519 key {sshd.fingerprint()}" in line
    assert _head(host) == first
    assert known.read_text().count("\n") == 1  # never rewritten by ssh

    # Pinned again: the push is applied, with HOME read-only as under the unit's
    # ProtectSystem=strict / ProtectHome=read-only (a private mount namespace).
    sshd.known_hosts(known)
    res = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$HOME" "$HOME" && exec "$@"', "sh",
         sys.executable, "-m", "vigo", "--config", str(host.config), "apply"],
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert _head(host) != first
    assert not (home / ".ssh").exists()
    assert (host.checkout / ".git/config").stat().st_mode & 0o777 == 0o600


def test_bootstrap_ssh_keygen_and_host_key_fingerprint(host: Host, sshd: SshGitServer,
                                                       home: Path) -> None:
    host.seed({})
    config = host.root / "etc/vigo.toml"
    key = host.root / "etc/deploy_key"
    known = host.root / "etc/known_hosts"
    env = {**os.environ, **{f"VIGO_{k.upper()}": str(v) for k, v in (
        ("checkout", host.checkout), ("runtime", host.runtime), ("secrets", host.secrets),
        ("state", host.state), ("project_prefix", host.prefix))}}

    def bootstrap(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vigo", "--config", str(config), "bootstrap", "--repo",
             sshd.url(host.repo.remote), "--host", "testhost", "--age-key-file",
             str(host.key.path), "--root", str(host.root / "sysroot"), "--ssh-keygen",
             str(key), *extra], env=env, capture_output=True, text=True, check=False,
            stdin=subprocess.DEVNULL)

    wrong = "SHA256:" + "A" * 43
    res = bootstrap("--host-key-fingerprint", wrong)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"offers ED25519 {sshd.fingerprint()}" in res.stdout, res.stdout
    assert not known.exists() and not config.exists()

    res = bootstrap("--host-key-fingerprint", sshd.fingerprint())
    assert res.returncode == 1, res.stdout + res.stderr
    public = key.with_name(key.name + ".pub").read_text().strip()
    assert public in res.stdout and "read-only deploy key" in res.stdout
    assert key.stat().st_mode & 0o777 == 0o600
    assert known.read_text().split()[0] == f"[127.0.0.1]:{sshd.port}"
    written = config.read_text()
    assert f'ssh_key = "{key}"' in written and f'ssh_known_hosts = "{known}"' in written
    assert host.containers() == []

    res = bootstrap("--host-key-fingerprint", sshd.fingerprint())  # the key is not added yet
    assert res.returncode == 3, res.stdout + res.stderr
    line = next(x for x in res.stdout.splitlines() if x.startswith("clone: "
                                                                   ) and "nothing" in x)
    assert "Permission denied (publickey)" in line and f"public half of {key}" in line
    assert host.containers() == []

    sshd.allow(public)
    res = bootstrap("--host-key-fingerprint", sshd.fingerprint())
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert any(x.startswith("clone: fetched ") for x in lines), res.stdout
    assert "  proxy: created (new stack)" in lines
    steps = [x for x in lines if x.startswith("bootstrap: step ")]
    assert [x.split(":")[1] for x in steps] == [" step 1/4", " step 2/4", " step 3/4",
                                                 " step 4/4"], res.stdout
    summary = lines[lines.index("bootstrap: summary"):]
    assert "  apply     converged" in summary and "  units     installed, timer enabled" in summary
    assert f"  ssh       key {key}, host keys {known}" in summary
    assert f"  repo      {sshd.url(host.repo.remote)}, branch main, host testhost" in summary
    assert "bootstrap: done" in res.stdout
    assert not (home / ".ssh").exists()


TOKEN = "tok-" + "9f8e7d6c5b4a" * 3


@pytest.fixture
def https_git(tmp_path: Path):
    projects = tmp_path / "projects"
    projects.mkdir()
    server = HttpsGitServer(tmp_path / "https", projects, "deploy", TOKEN)
    server.projects = projects  # type: ignore[attr-defined]
    yield server
    server.stop()


def _sample_cmdlines(stop: threading.Event, seen: list[str]) -> None:
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                with contextlib.suppress(OSError):
                    seen.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(
                        errors="replace"))


def test_https_token_file_never_in_argv_or_config(host: Host, https_git: HttpsGitServer
                                                  ) -> None:
    first = host.seed({})
    bare = https_git.projects / "infra.git"  # type: ignore[attr-defined]
    sh("git", "clone", "-q", "--bare", str(host.repo.remote), str(bare))
    token = host.root / "git-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    # the token's user name is in the URL (not a secret); the token only in the file
    _settings(host, repo=https_git.url("infra.git").replace("https://", "https://deploy@"),
              git_token_file=token, git_ca_file=https_git.ca)

    stop, seen = threading.Event(), []
    sampler = threading.Thread(target=_sample_cmdlines, args=(stop, seen))
    sampler.start()
    try:
        res = host.apply()
    finally:
        stop.set()
        sampler.join()
    assert _head(host) == first
    assert any("git" in c and "fetch" in c for c in seen), "the sampler saw no git fetch"
    assert not [c for c in seen if TOKEN in c]
    git_config = host.checkout / ".git/config"
    assert TOKEN not in git_config.read_text()
    assert git_config.stat().st_mode & 0o777 == 0o600
    assert TOKEN not in res.stdout + res.stderr
    # basic auth as the token's user: lighttpd writes its access log a moment after it answers
    wait_for(https_git.access.read_text, 10, 0.1, "lighttpd's access log line of user deploy",
             ok=lambda log: "deploy" in log)

    token.write_text("wrong-token-123456\n")
    res = host.vigo("-v", "apply")
    assert res.returncode == 3, res.stdout + res.stderr
    assert "wrong-token-123456" not in res.stdout + res.stderr
    assert "source: fetch of branch 'main'" in res.stdout
    token.chmod(0o644)
    res = host.apply(expect=2)
    assert f"git_token_file {token} has mode 0644" in res.stdout


def test_https_url_with_embedded_token_is_stripped(host: Host, https_git: HttpsGitServer
                                                   ) -> None:
    first = host.seed({})
    bare = https_git.projects / "infra.git"  # type: ignore[attr-defined]
    sh("git", "clone", "-q", "--bare", str(host.repo.remote), str(bare))
    url = https_git.url("infra.git").replace("https://", f"https://deploy:{TOKEN}@")
    _settings(host, repo=url, git_ca_file=https_git.ca)
    res = host.vigo("-v", "apply")
    assert res.returncode == 0, res.stdout + res.stderr
    assert _head(host) == first
    assert TOKEN not in res.stdout + res.stderr
    assert "https://127.0.0.1" in res.stdout + res.stderr  # -v shows the git argv, stripped
    assert TOKEN not in (host.checkout / ".git/config").read_text()
    assert (host.checkout / ".git/config").stat().st_mode & 0o777 == 0o600

    # A broken checkout is cloned afresh over the same credentials: still 0600, no token.
    host.repo.write("README.md", "second\n")
    second = host.repo.commit("second")
    sh("git", "-C", str(bare), "fetch", "-q", str(host.repo.remote), "main:main")
    (host.checkout / ".git/index.lock").write_text("")
    res = host.vigo("apply")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "replaced it with a fresh clone" in res.stdout
    assert _head(host) == second
    git_config = host.checkout / ".git/config"
    assert TOKEN not in git_config.read_text() and "deploy" not in git_config.read_text()
    assert git_config.stat().st_mode & 0o777 == 0o600
    assert host.checkout.stat().st_mode & 0o777 == 0o700
    assert TOKEN not in res.stdout + res.stderr
