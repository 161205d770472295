"""The shared test helpers do what their docstrings say: a helper that lies makes every test
that uses it lie."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.support.poll import wait_for
from tests.support.recording import Call, RecordingRunner
from tests.support.tree import File, GitRepo, Link, git, write_tree


def test_write_tree_writes_text_bytes_modes_and_links(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "r", {
        "stacks/app/docker-compose.yml": "services: {}\n",
        "blob.bin": b"\0\xff",
        "run.sh": File("#!/bin/sh\n", 0o755),
        "key": File(b"k", 0o600),
        "link.yml": Link("stacks/app/docker-compose.yml"),
        "out": Link("/etc/hostname"),
    })
    assert root == tmp_path / "r"
    assert (root / "stacks/app/docker-compose.yml").read_text() == "services: {}\n"
    assert (root / "blob.bin").read_bytes() == b"\0\xff"
    assert stat.S_IMODE((root / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "key").stat().st_mode) == 0o600
    assert (root / "link.yml").readlink() == Path("stacks/app/docker-compose.yml")
    assert (root / "out").readlink() == Path("/etc/hostname")


def test_write_tree_replaces_a_file_or_link_never_writes_through_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched\n")
    root = write_tree(tmp_path / "r", {"a": Link(str(outside)), "b": "file\n"})
    write_tree(root, {"a": "now a file\n", "b": Link("a")})
    assert outside.read_text() == "untouched\n"
    assert not (root / "a").is_symlink() and (root / "a").read_text() == "now a file\n"
    assert (root / "b").is_symlink() and (root / "b").read_text() == "now a file\n"


def test_git_repo_commits_and_pushes(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path, {"stacks/a/docker-compose.yml": "services: {}\n"})
    first = repo.head()
    assert git("--git-dir", str(repo.remote), "rev-parse", "main").strip() == first
    second = repo.commit("two", {"stacks/a/docker-compose.yml": "services: {a: {}}\n"})
    assert second != first
    assert git("--git-dir", str(repo.remote), "rev-parse", "main").strip() == second
    assert git("--git-dir", str(repo.remote), "show", "main:stacks/a/docker-compose.yml"
               ) == "services: {a: {}}\n"
    assert git("--git-dir", str(repo.remote), "log", "-1", "--format=%an <%ae>", "main"
               ).strip() == "vigo test <test@vigo.invalid>"


def test_wait_for_returns_the_first_good_value() -> None:
    answers = iter([None, 0, "", "up"])
    assert wait_for(lambda: next(answers), 10, 0, "the service") == "up"
    counts = iter(range(10))
    assert wait_for(lambda: next(counts), 10, 0, "three", ok=lambda n: n >= 3) == 3


def test_wait_for_fails_naming_what_and_the_last_value() -> None:
    with pytest.raises(AssertionError) as err:
        wait_for(lambda: ("web", "restarting"), 0, 0, "web running", ok=lambda c: c[1] == "running",
                 detail=lambda: "tail of the log")
    assert str(err.value) == ("timed out after 0 s waiting for web running; last value: "
                              "('web', 'restarting')\ntail of the log")


def test_wait_for_stops_at_once_when_told_to_abort() -> None:
    calls = []
    with pytest.raises(AssertionError, match=r"^stopped waiting for git-daemon \('exit 1'\); "
                                             r"last value: False$"):
        wait_for(lambda: calls.append(1) or False, 3600, 0, "git-daemon",
                 abort=lambda: "exit 1")
    assert calls == [1]


def test_recording_runner_records_and_answers_from_its_table() -> None:
    runner = (RecordingRunner().on("fetch", returncode=128, stderr="fatal: x", times=1)
              .on("git", "rev-parse", stdout="abc\n"))
    first = runner.run(("git", "-C", "/c", "fetch", "origin"), env={"A": "1"}, input="in",
                       cwd="/c", timeout=7, mask_output=False, limit_data=9)
    again = runner.run(("git", "fetch"))
    head = runner.run(("git", "-C", "/c", "rev-parse", "HEAD"))
    other = runner.run(("rev-parse", "git"))  # the words in another order: no match
    assert (first.returncode, first.stderr, again.returncode) == (128, "fatal: x", 0)
    assert (head.stdout, other.stdout) == ("abc\n", "")
    assert runner.calls[0] == Call(("git", "-C", "/c", "fetch", "origin"), {"A": "1"}, "in",
                                   "/c", 7, False, 9)
    assert runner.argvs[1:] == [("git", "fetch"), ("git", "-C", "/c", "rev-parse", "HEAD"),
                                ("rev-parse", "git")]


def test_recording_runner_masks_like_the_real_one_and_finds_secrets_in_argv() -> None:
    runner = RecordingRunner().on("cat", stdout="token=hunter2-secret\n")
    runner.masker.add(["hunter2-secret"])
    assert runner.run(("cat", "x")).stdout == "token=***\n"
    assert runner.run(("cat", "x"), mask_output=False).stdout == "token=hunter2-secret\n"
    runner.assert_not_in_argv("hunter2-secret")
    runner.run(("curl", "-u", "me:hunter2-secret"))
    with pytest.raises(AssertionError, match="is in the argv"):
        runner.assert_not_in_argv("hunter2-secret")


def test_recording_runner_can_answer_by_stdin() -> None:
    runner = (RecordingRunner().on("ssh-keygen", stdin_has="ssh-ed25519", stdout="ED\n")
              .on("ssh-keygen", stdout="OTHER\n"))
    assert runner.run(("ssh-keygen", "-f", "-"), input="h ssh-ed25519 AAAA\n").stdout == "ED\n"
    assert runner.run(("ssh-keygen", "-f", "-"), input="h ssh-rsa AAAA\n").stdout == "OTHER\n"
    assert runner.run(("ssh-keygen", "-f", "-")).stdout == "OTHER\n"
