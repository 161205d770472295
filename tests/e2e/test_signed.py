"""Signed commits end to end: real SSH keys (ssh-keygen), commits signed by git itself, a real
host (engine, bare remote, sops, age). A refused commit changes nothing: not the checkout, not a
container; the run exits 4 and `vigo status` shows why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import TAG_A, TAG_B, Host
from tests.support.infra import app_compose, sh

pytestmark = pytest.mark.e2e

ID = ["-c", "user.name=vigo test", "-c", "user.email=test@vigo.invalid"]


def ssh_key(path: Path) -> Path:
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path))
    return path


def signing_options(key: Path | None) -> list[str]:
    return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "-c", "commit.gpgsign=true",
            *ID] if key else ["-c", "commit.gpgsign=false", *ID]


def commit(host: Host, message: str, key: Path | None, push: bool = True) -> str:
    """Commit everything (signed by `key`, or unsigned) and push; the new commit."""
    work = str(host.repo.work)
    sh("git", "-C", work, "add", "-A")
    sh("git", *signing_options(key), "-C", work, "commit", "-qm", message, "--allow-empty")
    if push:
        sh("git", "-C", work, "push", "-qf", "origin", "main")
    return host.repo.head()


def force_push(host: Host, rev: str) -> None:
    sh("git", "-C", str(host.repo.work), "reset", "-q", "--hard", rev)
    sh("git", "-C", str(host.repo.work), "push", "-qf", "origin", "main")


def set_tag(host: Host, tag: str) -> None:
    host.repo.write("stacks/whoami/docker-compose.yml", app_compose(host.prefix, "whoami", tag))


def images(host: Host) -> set[str]:
    return {str(c["Config"]["Image"]).rsplit(":", 1)[1] for c in host.containers("whoami")}


def checkout_head(host: Host) -> str:
    res = sh("git", "-C", str(host.checkout), "rev-parse", "HEAD", check=False)
    return res.stdout.strip() if res.returncode == 0 else ""


def pinned(host: Host) -> str:
    return sh("git", "-C", str(host.checkout), "rev-parse", "refs/vigo/applied").stdout.strip()


def refused(host: Host, *args: str) -> str:
    """`vigo apply` exits 4; its one line; `vigo status --json` shows the refusal."""
    out = host.apply(*args, expect=4).stdout
    lines = [line for line in out.splitlines() if line.startswith("source: refused")]
    assert len(lines) == 1, out
    last = json.loads(host.vigo("status", "--json").stdout)["last_run"]
    assert last["exit_code"] == 4 and last["error"] in lines[0], last
    return lines[0]


@pytest.fixture
def signing(host: Host, tmp_path: Path) -> tuple[Path, Path]:
    """The trusted key (in allowed_signers, principal ops) and another one (not)."""
    trusted, other = ssh_key(tmp_path / "trusted"), ssh_key(tmp_path / "other")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'ops@example.org namespaces="git" {(tmp_path / "trusted.pub").read_text()}')
    host.config.write_text(host.config.read_text() + f'allowed_signers = "{allowed}"\n')
    return trusted, other


def test_only_commits_signed_by_a_trusted_key_are_applied(host: Host, signing) -> None:
    trusted, other = signing
    host.seed({"whoami": TAG_A})  # unsigned, like a repo's history before signing
    line = refused(host)
    assert line == (f"source: refused {host.repo.head()[:12]}: unsigned (no SSH signature)"
                    "; nothing changed")
    assert host.containers() == [] and checkout_head(host) == ""

    # First run ever: only the fetched commit is verified, and the run says so.
    good = commit(host, "signed", trusted)
    out = host.apply().stdout
    assert (f"signatures: no applied commit known yet (first run): verified the fetched "
            f"commit {good[:12]} only") in out
    assert images(host) == {TAG_A} and checkout_head(host) == good == pinned(host)

    # Idle: the signature check asks git nothing (the fetched commit is the accepted one).
    idle = host.apply("-v")
    git_calls = [c for c in idle.stderr.splitlines() if c.startswith("$ git ")]
    assert not [c for c in git_calls if " merge-base " in c or " log " in c], git_calls

    def refused_without_change(expected: str) -> None:
        assert refused(host) == f"source: {expected}; nothing changed"
        assert checkout_head(host) == good == pinned(host)
        assert images(host) == {TAG_A}

    set_tag(host, TAG_B)
    unsigned = commit(host, "unsigned promote", None)
    refused_without_change(f"refused {unsigned[:12]}: unsigned (no SSH signature)")
    assert host.vigo("plan").returncode == 4  # plan checks too: it resets the checkout
    assert checkout_head(host) == good

    force_push(host, good)
    wrong_key = commit(host, "promote, wrong key", other)
    refused_without_change(f"refused {wrong_key[:12]}: signed by an unknown key "
                           "(not in allowed_signers)")

    # A signed merge vouches only for itself: the unsigned commit it brings is refused.
    force_push(host, good)
    work = str(host.repo.work)
    sh("git", "-C", work, "checkout", "-qb", "feature")
    set_tag(host, TAG_B)
    sneaked = commit(host, "unsigned on a branch", None, push=False)
    sh("git", "-C", work, "checkout", "-q", "main")
    sh("git", *signing_options(trusted), "-C", work, "merge", "-q", "--no-ff", "-m",
       "signed merge", "feature")
    sh("git", "-C", work, "push", "-qf", "origin", "main")
    merge = host.repo.head()
    assert "gpgsig" in sh("git", "-C", work, "cat-file", "commit", merge).stdout
    refused_without_change(f"refused {sneaked[:12]}: unsigned (no SSH signature); the fetched "
                           f"{merge[:12]} brings 2 new commits, 1 not signed by a trusted key")

    # A signed history from the accepted commit applies.
    force_push(host, good)
    set_tag(host, TAG_B)
    promoted = commit(host, "promote", trusted)
    out = host.apply().stdout
    assert f"signatures: 1 new commit up to {promoted[:12]} signed" in out
    assert images(host) == {TAG_B} and pinned(host) == promoted


def test_a_rewind_or_rewritten_history_needs_allow_rewind(host: Host, signing) -> None:
    trusted, _ = signing
    host.seed({"whoami": TAG_A})
    old = commit(host, "signed A", trusted)
    host.apply()
    set_tag(host, TAG_B)
    new = commit(host, "signed B", trusted)
    host.apply()
    assert images(host) == {TAG_B}

    force_push(host, old)  # an older signed commit: a rewind
    line = refused(host)
    assert line.startswith(f"source: refused {old[:12]}: not a descendant of the applied "
                           f"commit {new[:12]} (an older commit: a rewind)")
    assert "--allow-rewind" in line
    assert checkout_head(host) == new and images(host) == {TAG_B}

    host.repo.write("stacks/whoami/extra.txt", "diverged\n")
    forked = commit(host, "signed, diverged from B", trusted)  # a force-pushed history
    assert refused(host).startswith(f"source: refused {forked[:12]}: not a descendant of "
                                    f"the applied commit {new[:12]}: history rewritten")
    assert host.vigo("apply", "--allow-rewind", "--timer").returncode == 2  # by hand only

    force_push(host, old)
    out = host.apply("--allow-rewind").stdout
    assert (f"signatures: --allow-rewind: going back from {new[:12]} to the older {old[:12]}, "
            "signed") in out
    assert images(host) == {TAG_A} and checkout_head(host) == old == pinned(host)
    host.apply()  # the older commit is now the accepted one: no flag needed any more

