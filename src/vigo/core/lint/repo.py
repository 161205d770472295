"""Family repo: the checkout itself: hosts/ overlays' shape, no symbolic links."""

import os
from collections.abc import Iterator
from pathlib import Path

from vigo.core.lint.base import ERROR, Finding, describe, rel_path, repo_rule

IDS = describe({
    "overlay-shape": "hosts/<name>/ overlays hold only proxy/, stacks/ and env/",
    "symlink": "no symbolic links anywhere in the repo",
})


_OVERLAY_DIRS = frozenset({"proxy", "stacks", "env"})


@repo_rule
def _overlay_shape(repo: Path) -> Iterator[Finding]:
    hosts = repo / "hosts"
    if not hosts.is_dir() or hosts.is_symlink():
        return
    for host in sorted(hosts.iterdir()):
        if not host.is_dir() or host.is_symlink():
            continue  # hosts/README.md and the like
        for entry in sorted(host.iterdir()):
            if entry.is_symlink() or (entry.name in _OVERLAY_DIRS and entry.is_dir()):
                continue  # links are reported by `symlink`
            what = (
                f"host overlay '{host.name}': '{entry.name}' is not one of proxy/, stacks/, env/ "
                "and would be laid over the tree as is"
            )
            fix = "Move it under proxy/, stacks/ or env/ of the overlay, or remove it."
            yield Finding("overlay-shape", ERROR, rel_path(repo, entry), None, what, fix)


@repo_rule
def _symlinks(repo: Path) -> Iterator[Finding]:
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in [*dirnames, *sorted(filenames)]:
            path = Path(dirpath) / name
            if path.is_symlink():
                rel = rel_path(repo, path)
                what = f"{rel} is a symbolic link: it can point outside the repo, overlays copy it"
                fix = "Replace the link with a regular file or folder."
                yield Finding("symlink", ERROR, rel, None, what, fix)
