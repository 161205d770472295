"""Idle runs skip the git calls that cannot change anything; any touch of the checkout is seen.

Real git, real files: each case checks out, lets the checkout settle (RACY_NS is 0 here and
the test waits a few clock ticks instead of 2 s), touches the checkout the way a person, a
tool or a crash could, and then asserts that `reset --hard` and `clean` run again and that
the tree is exactly the commit afterwards.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.gitsync import sync
from tests.support.tree import File, GitRepo, Link
from vigo.adapters import git as gitmod
from vigo.adapters.git import Git
from vigo.adapters.run import Runner

ID = ["-c", "user.name=t", "-c", "user.email=t@t.invalid", "-c", "commit.gpgsign=false"]


def sh(*argv: str, cwd: Path | None = None) -> str:
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One remote for the module (the test that pushes to it copies it first)."""
    return GitRepo(tmp_path_factory.mktemp("remote"), {
        "stacks/a/docker-compose.yml": "services: {}\n", ".gitignore": "*.log\n",
        "run.sh": File("#!/bin/sh\n", 0o755), "link.yml": Link("stacks/a/docker-compose.yml"),
    }).remote


class Host:
    def __init__(self, remote: Path, checkout: Path) -> None:
        self.remote, self.checkout = str(remote), checkout
        self.lines: list[str] = []
        self.git = Git(Runner(log=self.lines.append, verbose=True))

    def sync(self) -> list[str]:
        """One source step of a run: the git subcommands it started."""
        self.lines.clear()
        rev, _ = sync(self.git, self.remote, "main", self.checkout)
        assert rev == sh("git", "-C", self.checkout, "rev-parse", "HEAD").strip()
        return [line.split(" -C ", 1)[1].split()[1] for line in self.lines if " -C " in line]

    def settled(self) -> list[str]:
        self.sync()  # the first run after a checkout does it in full (racy timestamps)
        time.sleep(0.05)  # a few clock ticks: the next change gets another ctime
        return self.sync()


@pytest.fixture
def host(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    monkeypatch.setattr(gitmod, "RACY_NS", 0)
    h = Host(repo, tmp_path / "checkout")
    assert h.sync() == ["init", "fetch", "rev-parse", "reset", "clean", "maintenance"]
    return h


def test_idle_run_is_one_fetch(host: Host) -> None:
    assert host.settled() == ["fetch"]
    assert host.sync() == ["fetch"]


def test_entries_near_the_recording_are_not_trusted(repo: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Files changed within RACY_NS of the recording (here: a day, so timing cannot matter) are
    not trusted: the run checks out in full and records again."""
    monkeypatch.setattr(gitmod, "RACY_NS", 86400 * 10**9)
    h = Host(repo, tmp_path / "c")
    h.sync()
    assert h.sync() == ["fetch", "reset", "clean", "maintenance"]
    assert h.sync() == ["fetch", "reset", "clean", "maintenance"]
    monkeypatch.setattr(gitmod, "RACY_NS", 0)
    assert h.sync() == ["fetch"]


def test_a_new_commit_is_checked_out(host: Host, repo: Path, tmp_path: Path) -> None:
    host.settled()
    own = tmp_path / "own.git"
    sh("git", "clone", "-q", "--bare", str(repo), str(own))
    host.remote = str(own)
    assert host.sync() == ["fetch"]  # a new URL (vigo rewrote .git/config), same commit
    work = repo.parent / "work"
    (work / "stacks" / "a" / "docker-compose.yml").write_text("services: {b: {}}\n")
    sh("git", *ID, "-C", str(work), "commit", "-qam", "two")
    sh("git", "-C", str(work), "push", "-q", str(own), "main")
    sh("git", "-C", str(work), "reset", "-q", "--hard", "HEAD~1")
    assert host.sync() == ["fetch", "rev-parse", "reset", "clean", "maintenance"]
    assert (host.checkout / "stacks/a/docker-compose.yml").read_text() == "services: {b: {}}\n"


def same_size_edit(c: Path) -> None:
    f = c / "stacks/a/docker-compose.yml"
    st = f.stat()
    f.write_text("services: []\n")  # same size, mtime put back: only ctime tells
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


def restored(folder: Path, change: Callable[[], object]) -> None:
    """`change`, then the folder's mtime put back: only its ctime tells a name came or went."""
    st = folder.stat()
    change()
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))


def replace_by_rename(c: Path) -> None:
    (c / "tmp").write_text("services: {}\n")
    os.replace(c / "tmp", c / "stacks/a/docker-compose.yml")


TOUCHES: dict[str, Callable[[Path], None]] = {
    "same-size edit, mtime restored": same_size_edit,
    "replaced by rename": replace_by_rename,
    "untracked file": lambda c: (c / "stacks/a/extra.yml").write_text("x"),
    "ignored file": lambda c: (c / "debug.log").write_text("x"),
    "untracked folder": lambda c: (c / "stacks/b").mkdir(),
    "untracked file, folder's mtime put back": lambda c: restored(c / "stacks/a", lambda: (
        c / "stacks/a/extra.yml").write_text("x")),
    "untracked file at the top, its mtime put back": lambda c: restored(c, lambda: (
        c / "extra.yml").write_text("x")),
    "file renamed within its folder": lambda c: restored(c / "stacks/a", lambda: os.rename(
        c / "stacks/a/docker-compose.yml", c / "stacks/a/compose.yml")),
    "removed file": lambda c: (c / "run.sh").unlink(),
    "chmod": lambda c: os.chmod(c / "run.sh", 0o644),
    "symlink retargeted": lambda c: (os.unlink(c / "link.yml"),
                                     os.symlink("run.sh", c / "link.yml")),
    "git add of a change": lambda c: ((c / "run.sh").write_text("#!/bin/sh\nexit 1\n"),
                                      sh("git", "-C", str(c), "add", "run.sh")),
    "HEAD moved (reset --soft)": lambda c: sh("git", *ID, "-C", str(c), "commit", "-q",
                                              "--allow-empty", "-m", "local"),
    "detached HEAD": lambda c: sh("git", "-C", str(c), "checkout", "-q", "--detach"),
    "crash mid-checkout (manifest gone)": lambda c: (c / ".git" / gitmod.TREE_MANIFEST).unlink(),
    "corrupt manifest": lambda c: (c / ".git" / gitmod.TREE_MANIFEST).write_text("{"),
}


@pytest.mark.parametrize("touch", TOUCHES.values(), ids=TOUCHES.keys())
def test_a_touched_checkout_is_checked_out_again(host: Host, touch: Callable[[Path], None]
                                                 ) -> None:
    assert host.settled() == ["fetch"]
    touch(host.checkout)
    ran = host.sync()
    assert ran[-3:] == ["reset", "clean", "maintenance"]
    assert sh("git", "-C", str(host.checkout), "status", "--porcelain", "--ignored") == ""
    assert sorted(p.name for p in (host.checkout / "stacks").iterdir()) == ["a"]
    assert (host.checkout / "stacks/a/docker-compose.yml").read_text() == "services: {}\n"


def test_changed_url_is_set_again(host: Host, tmp_path: Path) -> None:
    host.settled()
    other = tmp_path / "mirror.git"
    sh("git", "clone", "-q", "--bare", host.remote, str(other))
    host.remote = str(other)
    ran = host.sync()  # vigo writes .git/config itself: no `remote set-url` process
    assert ran[0] == "fetch" and "remote" not in ran
    assert f'url = "{other}"' in (host.checkout / ".git/config").read_text()
    assert host.sync()[0] == "fetch"
