"""git: make vigo's checkout exactly origin/<branch>. Never recurses into submodules."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from vigo.adapters.run import Runner

# Pinned for every call: no user or system config, no hooks, no submodules, no prompts.
GIT = ("git", "-c", "core.hooksPath=/dev/null", "-c", "submodule.recurse=false",
       "-c", "protocol.ext.allow=never", "-c", "credential.helper=")
GIT_ENV = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/true"}


class SourceError(Exception):
    """The repo could not be fetched or checked out; nothing on the host changed."""


def url_secrets(url: str) -> list[str]:
    """Credentials embedded in a remote URL, to be masked everywhere."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    return [s for s in (parts.password, parts.username if parts.password else None) if s]


def redact(url: str) -> str:
    return re.sub(r"(?<=://)[^/@]+@", "***@", url)


class Git:
    def __init__(self, runner: Runner, timeout: float = 120) -> None:
        self.runner = runner
        self.timeout = timeout

    def _git(self, checkout: Path, *args: str, timeout: float | None = None):
        return self.runner.run((*GIT, "-C", str(checkout), *args), env=GIT_ENV,
                               timeout=timeout or self.timeout)

    def sync(self, repo: str, branch: str, checkout: Path) -> str:
        """Fetch branch and reset the checkout to it exactly; return the commit id."""
        if not (checkout / ".git").is_dir():
            if checkout.exists() and any(checkout.iterdir()):
                raise SourceError(f"{checkout} exists and is not a git checkout: move it away "
                                  "or set `checkout` to an empty folder")
            checkout.mkdir(parents=True, exist_ok=True, mode=0o700)
            for args in (("init", "-q"), ("remote", "add", "origin", repo)):
                res = self._git(checkout, *args)
                if not res.ok:
                    shutil.rmtree(checkout / ".git", ignore_errors=True)
                    raise SourceError(f"cannot create the checkout in {checkout}: {res.error()}")
        res = self._git(checkout, "remote", "set-url", "origin", repo)
        if not res.ok:
            raise SourceError(f"{checkout}: {res.error()}")
        ref = f"refs/remotes/origin/{branch}"
        res = self._git(checkout, "fetch", "-q", "--no-tags", "--no-recurse-submodules",
                        "--prune", "origin", f"+refs/heads/{branch}:{ref}")
        if not res.ok:
            raise SourceError(f"fetch of branch {branch!r} from {redact(repo)} failed: "
                              f"{res.error(3)}")
        for args in (("reset", "-q", "--hard", ref), ("clean", "-ffdxq")):
            res = self._git(checkout, *args)
            if not res.ok:
                raise SourceError(f"cannot check out {branch!r} in {checkout}: {res.error(3)}")
        res = self._git(checkout, "rev-parse", "HEAD")
        if not res.ok:
            raise SourceError(f"{checkout}: {res.error()}")
        return res.stdout.strip()

    def init_and_commit(self, repo: Path, message: str) -> str:
        """`git init` a new repo on a workstation and commit everything in it. The user's own
        git config (identity, signing) applies here, unlike the host's pinned calls."""
        for args in (("init", "-q", "-b", "main"), ("add", "-A"), ("commit", "-q", "-m", message)):
            res = self.runner.run(("git", "-C", str(repo), *args), timeout=self.timeout)
            if not res.ok:
                hint = (" (set your identity: git config --global user.name / user.email)"
                        if "tell me who you are" in res.stderr.lower() else "")
                raise SourceError(f"git {args[0]} in {repo} failed: {res.error(2)}{hint}")
        return self.head(repo)

    def head(self, checkout: Path) -> str:
        res = self._git(checkout, "rev-parse", "HEAD")
        return res.stdout.strip() if res.ok else ""
