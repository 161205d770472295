"""The source step of a run on a real checkout, for the git adapter's tests."""

from __future__ import annotations

from pathlib import Path

from vigo.adapters.git import Git
from vigo.host import source


def sync(git: Git, repo: str, branch: str, checkout: Path) -> tuple[str, str]:
    """Fetch, then check out, as host/source.py does in a run: (the commit, the line that says
    a broken checkout was cloned afresh, or '')."""
    fetched, first = source.fetch_branch(git, repo, branch, checkout)
    rev, again = source.checkout_commit(git, repo, branch, checkout, fetched)
    return rev, again or first
