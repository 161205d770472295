"""Files and git repos for tests: one way to lay out a tree and one way to make a repo.

    write_tree(tmp_path, {"stacks/app/docker-compose.yml": "services: {}\\n",
                          "run.sh": File("#!/bin/sh\\n", 0o755),
                          "link.yml": Link("stacks/app/docker-compose.yml"),
                          "blob.bin": b"\\0\\1"})

    repo = GitRepo(tmp_path, {"stacks/a/docker-compose.yml": "services: {}\\n"})
    repo.commit("two", {"stacks/a/docker-compose.yml": "services: {a: {}}\\n"})
    repo.remote   # a bare remote the first commit was pushed to
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class Link(str):
    """A symbolic link to this target (written as it is, relative or absolute)."""


@dataclass(frozen=True)
class File:
    """A file with a mode (text or bytes)."""

    content: str | bytes
    mode: int


Entry = str | bytes | Link | File


def write_tree(root: Path, files: Mapping[str, Entry]) -> Path:
    """Write each `path -> content` under root (parents made as needed) and return root. A file
    or link already at a path is replaced: a table case can overwrite a base tree."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.is_file():
            path.unlink()
        if isinstance(content, Link):
            path.symlink_to(str(content))
            continue
        body, mode = (content.content, content.mode) if isinstance(content, File) else (
            content, None)
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body)
        if mode is not None:
            os.chmod(path, mode)
    return root


# Who commits in a test repo: no user config, no signing.
GIT_ID = ("-c", "user.name=vigo test", "-c", "user.email=test@vigo.invalid",
          "-c", "commit.gpgsign=false")


def git(*args: str, cwd: Path | None = None, input: str | None = None) -> str:
    """Run git (the tester's own, unpinned); its stdout, or AssertionError with its stderr."""
    res = subprocess.run(("git", *args), cwd=cwd, capture_output=True, text=True, check=False,
                         input=input)
    if res.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} exited {res.returncode}:\n"
                             f"{res.stdout}{res.stderr}")
    return res.stdout


class GitRepo:
    """A work tree at root/work on branch main and a bare remote at root/remote.git it pushes
    to. With `files`, they are written and committed (and pushed) at once."""

    def __init__(self, root: Path, files: Mapping[str, Entry] | None = None,
                 message: str = "one", remote: str = "remote.git") -> None:
        self.work = root / "work"
        self.remote = root / remote
        self.work.mkdir(parents=True)
        git("init", "-q", "-b", "main", str(self.work))
        git("init", "-q", "--bare", "-b", "main", str(self.remote))
        git("-C", str(self.work), "remote", "add", "origin", str(self.remote))
        if files is not None:
            self.commit(message, files)

    def write(self, rel: str, content: Entry) -> None:
        write_tree(self.work, {rel: content})

    def commit(self, message: str = "change", files: Mapping[str, Entry] | None = None,
               push: bool = True) -> str:
        """Write `files`, commit everything in the work tree, push; the new commit."""
        if files:
            write_tree(self.work, files)
        git("-C", str(self.work), "add", "-A")
        git(*GIT_ID, "-C", str(self.work), "commit", "-qm", message, "--allow-empty")
        if push:
            git("-C", str(self.work), "push", "-q", "origin", "main")
        return self.head()

    def head(self) -> str:
        return git("-C", str(self.work), "rev-parse", "HEAD").strip()
