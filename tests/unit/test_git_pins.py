"""A `.git/config`, `.git/info/attributes` or hook someone else wrote into vigo's checkout never
makes vigo's git run a program (adapters/git.py pins and `_pin_config`). Real git, local repos."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.gitsync import sync
from tests.support.tree import GitRepo
from vigo.adapters.git import GIT, Git, SourceError, config_text
from vigo.adapters.run import Runner

ID = ["-c", "user.name=t", "-c", "user.email=t@example.org"]


def sh(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout


def origin(tmp_path: Path) -> tuple[Path, Path]:
    repo = GitRepo(tmp_path, {".gitattributes": "* filter=evil diff=evil\n", "a.txt": "one\n"},
                   remote="origin.git")
    return repo.work, repo.remote


def push(work: Path, bare: Path, text: str) -> None:
    (work / "a.txt").write_text(text)
    sh("git", *ID, "commit", "-qam", text, cwd=work)
    sh("git", "push", "-q", str(bare), "main", cwd=work)


def attacks(marks: Path, evil: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """Each way a `.git` an attacker can write might make git run a program: config text
    appended to .git/config, and files written under .git."""
    def run(tag: str) -> str:
        return f"touch {marks}/{tag}"

    hooks = marks / "hooks"
    return {
        "fsmonitor": (f'[core]\n\tfsmonitor = "{run("fsmonitor")}"\n', {}),
        "pager": (f'[core]\n\tpager = "{run("pager")}"\n[pager]\n\tlog = true\n', {}),
        "editor": (f'[core]\n\teditor = "{run("editor")}"\n', {}),
        "hooks-path": (f"[core]\n\thooksPath = {hooks}\n", {}),
        "hooks": ("", {f"hooks/{h}": f"#!/bin/sh\n{run(h)}\n" for h in (
            "post-checkout", "reference-transaction", "pre-auto-gc", "post-merge")}),
        "include": (f"[include]\n\tpath = {marks}/inc.config\n", {}),
        "include-if": (f'[includeIf "gitdir:/"]\n\tpath = {marks}/inc.config\n', {}),
        "filter": (f'[filter "evil"]\n\tsmudge = "{run("smudge")}; cat"\n'
                   f'\tprocess = "{run("process")}"\n', {}),
        "info-attributes": (f'[filter "evil2"]\n\tsmudge = "{run("smudge2")}; cat"\n',
                            {"info/attributes": "* filter=evil2\n"}),
        "diff": (f'[diff]\n\texternal = "{run("diff")}"\n'
                 f'[diff "evil"]\n\ttextconv = "{run("textconv")}; cat"\n', {}),
        "upload-pack": (f'[remote "origin"]\n\tuploadpack = "{run("uploadpack")}; '
                        'git-upload-pack"\n', {}),
        "insteadof": (f'[url "{evil}"]\n\tinsteadOf = {marks.parent}/origin.git\n', {}),
        "gpg": (f'[gpg]\n\tprogram = "{run("gpg")}"\n[log]\n\tshowSignature = true\n', {}),
        "worktree-config": ("[core]\n\trepositoryformatversion = 1\n"
                            "[extensions]\n\tworktreeConfig = true\n",
                            {"config.worktree": f'[core]\n\tfsmonitor = "{run("wt")}"\n'}),
        "worktree": (f"[core]\n\tworktree = {marks}/elsewhere\n", {}),
    }


@pytest.mark.parametrize("attack", list(attacks(Path("/m"), Path("/e"))))
def test_planted_git_config_never_runs(tmp_path: Path, attack: str) -> None:
    work, bare = origin(tmp_path)
    checkout, marks, evil = tmp_path / "checkout", tmp_path / "marks", tmp_path / "evil.git"
    marks.mkdir()
    sh("git", "clone", "-q", "--bare", str(bare), str(evil))
    git = Git(Runner())
    sync(git, str(bare), "main", checkout)
    (marks / "inc.config").write_text(f'[core]\n\tfsmonitor = "touch {marks}/include"\n')
    text, files = attacks(marks, evil)[attack]
    with open(checkout / ".git" / "config", "a") as f:
        f.write(text)
    for rel, content in files.items():
        (checkout / ".git" / rel).parent.mkdir(parents=True, exist_ok=True)
        (checkout / ".git" / rel).write_text(content)
        os.chmod(checkout / ".git" / rel, 0o755)
    (marks / "hooks").mkdir()
    for h in ("post-checkout", "reference-transaction"):
        (marks / "hooks" / h).write_text(f"#!/bin/sh\ntouch {marks}/hooks-path\n")
        os.chmod(marks / "hooks" / h, 0o755)
    push(work, bare, "two\n")
    rev, recovered = sync(git, str(bare), "main", checkout)
    assert not recovered  # the rewrite, not a fresh clone, disarmed it
    assert (checkout / "a.txt").read_text() == "two\n"
    git.head(checkout)
    git.is_ancestor(checkout, rev, rev)
    git.update_ref(checkout, "refs/vigo/applied", rev)
    git.signatures(checkout, (rev,), ((), {}))
    assert sorted(p.name for p in marks.iterdir()) == ["hooks", "inc.config"]
    assert (checkout / ".git" / "config").read_text() == config_text(str(bare), "main")
    assert not (checkout / ".git" / "info" / "attributes").exists()


def test_config_and_checkout_modes_after_clone_and_reclone(tmp_path: Path) -> None:
    _, bare = origin(tmp_path)
    checkout = tmp_path / "checkout"
    git = Git(Runner())
    old = os.umask(0o022)
    try:
        sync(git, str(bare), "main", checkout)
        assert stat.S_IMODE(checkout.stat().st_mode) == 0o700
        assert stat.S_IMODE((checkout / ".git/config").stat().st_mode) == 0o600
        (checkout / ".git" / "index.lock").write_text("")  # a crash: the checkout is recloned
        _, recovered = sync(git, str(bare), "main", checkout)
    finally:
        os.umask(old)
    assert recovered.startswith(f"{checkout} was broken (")
    assert stat.S_IMODE(checkout.stat().st_mode) == 0o700
    assert stat.S_IMODE((checkout / ".git/config").stat().st_mode) == 0o600


@pytest.mark.parametrize("kind", ["dotgit-link", "config-link", "info-link"])
def test_links_in_the_checkout_are_never_followed(tmp_path: Path, kind: str) -> None:
    work, bare = origin(tmp_path)
    checkout, victim = tmp_path / "checkout", tmp_path / "victim"
    git = Git(Runner())
    sync(git, str(bare), "main", checkout)
    sh("git", "init", "-q", str(victim))
    (victim / "config").write_text("not git's\n")
    (victim / "attributes").write_text("keep me\n")
    before = {p.name: p.read_bytes() for p in victim.iterdir() if p.is_file()}
    dotgit = checkout / ".git"
    if kind == "dotgit-link":
        os.rename(dotgit, tmp_path / "moved")
        dotgit.symlink_to(victim / ".git")
    elif kind == "config-link":
        (dotgit / "config").unlink()
        (dotgit / "config").symlink_to(victim / "config")
    else:
        import shutil
        shutil.rmtree(dotgit / "info")
        (dotgit / "info").symlink_to(victim)
    push(work, bare, "two\n")
    sync(git, str(bare), "main", checkout)
    assert (checkout / "a.txt").read_text() == "two\n"
    assert {p.name: p.read_bytes() for p in victim.iterdir() if p.is_file()} == before
    assert not (checkout / ".git").is_symlink()
    assert not (checkout / ".git" / "config").is_symlink()


def test_ssh_command_pin_loses_to_the_environment(tmp_path: Path) -> None:
    """core.sshCommand is pinned to plain ssh, and an environment GIT_SSH_COMMAND (the SSH key
    setting's) still wins over it."""
    assert "core.sshCommand=ssh" in GIT and "core.fsmonitor=false" in GIT
    mark = tmp_path / "ran"
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_SSH_COMMAND": f"touch {mark}; false"}
    subprocess.run([*GIT, "ls-remote", "ssh://git@example.invalid/repo.git"], env=env,
                   capture_output=True, check=False, cwd=tmp_path, timeout=30)
    assert mark.exists()


@pytest.mark.parametrize("repo, branch", [("/r\n[core]", "main"), ("/r", "ma\nin"),
                                          ("/r", "a b"), ("/r", '-x"')])
def test_config_text_refuses_injection(repo: str, branch: str) -> None:
    with pytest.raises(SourceError):
        config_text(repo, branch)


def test_config_text_quotes_the_url() -> None:
    text = config_text('/srv/a "b"\\c', "main")
    assert 'url = "/srv/a \\"b\\"\\\\c"' in text
    assert "fetch = +refs/heads/main:refs/remotes/origin/main" in text
