"""git: make vigo's checkout exactly origin/<branch>. Never recurses into submodules."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from vigo.adapters.run import Runner

# Pinned for every call: no user or system config, no hooks, no submodules, no prompts.
GIT = ("git", "-c", "core.hooksPath=/dev/null", "-c", "submodule.recurse=false",
       "-c", "protocol.ext.allow=never", "-c", "credential.helper=")
GIT_ENV = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/true"}

# A person's own clone on a workstation (promote, rollback). Reading it (log, cat-file, status)
# uses GIT and GIT_ENV like a host. But `add`, `commit` and `push` act for the person at the
# keyboard, as if they typed them: their global and system config must apply (user.name and
# user.email, commit.gpgsign and the signing key, credential helpers, core.autocrlf), and so do
# their hooks. So neither GIT_CONFIG_GLOBAL=/dev/null nor core.hooksPath nor credential.helper is
# pinned here; only what no person's commit needs stays off (submodule recursion, the ext::
# transport), and no terminal prompt (vigo captures git's output, so a prompt would hang
# unseen). The variables git and gpg read to find that config and the agents are passed on.
GIT_WORKSTATION = ("git", "-c", "submodule.recurse=false", "-c", "protocol.ext.allow=never")
WORKSTATION_PASS_ENV = ("XDG_CONFIG_HOME", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM",
                        "GIT_CONFIG_NOSYSTEM", "GPG_TTY", "GPG_AGENT_INFO", "GIT_SSH",
                        "GIT_ASKPASS", "SSH_ASKPASS", "DISPLAY", "WAYLAND_DISPLAY",
                        "DBUS_SESSION_BUS_ADDRESS")


def workstation_env() -> dict[str, str]:
    env = {k: v for k in WORKSTATION_PASS_ENV if (v := os.environ.get(k)) is not None}
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


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


class SignatureSetupError(Exception):
    """The trusted keys or the program that checks them is missing (docs/security.md)."""


def signature_pins(allowed_signers: Path | None, gpg_keyring: Path | None
                   ) -> tuple[tuple[str, ...], dict[str, str]]:
    """`-c` options and environment under which `%G?` says G only for the trusted keys. git
    picks the verifier from the signature in the commit, not from gpg.format: the one that
    checks the trusted keys is pinned to its absolute path, the others to /bin/false."""
    off = "/bin/false"
    if allowed_signers is not None:
        tool, package = "ssh-keygen", "openssh-client"
        if not allowed_signers.is_file():  # git says N (unsigned) for every commit without it
            raise SignatureSetupError(f"allowed_signers {allowed_signers}: no such file")
        program = shutil.which(tool) or ""
        pins = {"gpg.ssh.allowedSignersFile": str(allowed_signers), "gpg.ssh.program": program,
                "gpg.openpgp.program": off, "gpg.x509.program": off}
        env = {"GNUPGHOME": "/dev/null"}
    else:
        assert gpg_keyring is not None
        tool, package = "gpg", "gnupg"
        if not gpg_keyring.is_dir():
            raise SignatureSetupError(f"gpg_keyring {gpg_keyring}: no such folder")
        program = shutil.which(tool) or ""
        pins = {"gpg.openpgp.program": program, "gpg.ssh.program": off,
                "gpg.x509.program": off}
        env = {"GNUPGHOME": str(gpg_keyring)}
    if not program:  # without it every signature says B (bad), not "cannot check"
        raise SignatureSetupError(f"{tool} not found: install {package}")
    pins["gpg.program"] = pins["gpg.openpgp.program"]
    return tuple(a for k, v in pins.items() for a in ("-c", f"{k}={os.path.abspath(v)}")), env


class Git:
    def __init__(self, runner: Runner, timeout: float = 120) -> None:
        self.runner = runner
        self.timeout = timeout
        self.recovered = ""  # set when a broken checkout was replaced by a fresh clone

    def _git(self, checkout: Path, *args: str, timeout: float | None = None):
        return self.runner.run((*GIT, "-C", str(checkout), *args), env=GIT_ENV,
                               timeout=timeout or self.timeout)

    def fetch(self, repo: str, branch: str, checkout: Path) -> str:
        """Fetch the branch into refs/remotes/origin/<branch>; return the fetched commit.
        The working tree is not touched: a commit can be verified before it is checked out.
        A broken checkout (stale index.lock, corrupt objects) is replaced by a fresh clone
        when the remote answers."""
        try:
            self._ensure_repo(repo, checkout)
            return self._fetch(repo, branch, checkout)
        except SourceError as first:
            if not self._remote_answers(repo, branch, checkout.parent):
                raise
            self._reclone(repo, branch, checkout, why=str(first))
            return self._fetch(repo, branch, checkout)

    def checkout(self, repo: str, branch: str, checkout: Path, commit: str) -> str:
        """Make the working tree exactly `commit` (untracked files removed); a checkout that
        cannot (a stale index.lock after a crash, a broken object) is cloned afresh."""
        if tree_intact(checkout, commit):  # idle: reset and clean would change nothing
            return commit
        try:
            return self._checkout(checkout, commit)
        except SourceError as exc:
            self._reclone(repo, branch, checkout, why=str(exc))
            self._fetch(repo, branch, checkout)
            return self._checkout(checkout, commit)

    def _checkout(self, checkout: Path, commit: str) -> str:
        forget_tree(checkout)  # a crash in between leaves no manifest that could match
        for args in (("reset", "-q", "--hard", commit), ("clean", "-ffdxq")):
            res = self._git(checkout, *args)
            if not res.ok:
                raise SourceError(f"cannot check out {commit[:12]} in {checkout}: "
                                  f"{res.error(3)}")
        record_tree(checkout, commit)
        return commit

    def sync(self, repo: str, branch: str, checkout: Path) -> str:
        """Fetch and check out the branch; return the commit id."""
        return self.checkout(repo, branch, checkout, self.fetch(repo, branch, checkout))

    def _ensure_repo(self, repo: str, checkout: Path) -> None:
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
        if url_is_set(checkout, repo):  # idle: set-url would write the same URL
            return
        res = self._git(checkout, "remote", "set-url", "origin", repo)
        if not res.ok:
            raise SourceError(f"{checkout}: {res.error()}")

    def _fetch(self, repo: str, branch: str, checkout: Path) -> str:
        ref = f"refs/remotes/origin/{branch}"
        res = self._git(checkout, "fetch", "-q", "--no-tags", "--no-recurse-submodules",
                        "--prune", "origin", f"+refs/heads/{branch}:{ref}")
        if not res.ok:
            raise SourceError(f"fetch of branch {branch!r} from {redact(repo)} failed: "
                              f"{res.error(3)}")
        if known := checked_out_ref(checkout, ref):  # idle: the commit already checked out
            return known
        res = self._git(checkout, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
        if not res.ok:
            raise SourceError(f"{checkout}: the fetched branch {branch!r} has no commit: "
                              f"{res.error()}")
        return res.stdout.strip()

    def _remote_answers(self, repo: str, branch: str, cwd: Path) -> bool:
        cwd.mkdir(parents=True, exist_ok=True)
        res = self.runner.run((*GIT, "ls-remote", "--heads", repo, branch), env=GIT_ENV,
                              timeout=self.timeout, cwd=cwd)
        return res.ok and bool(res.stdout.strip())

    def _reclone(self, repo: str, branch: str, checkout: Path, why: str) -> None:
        """Replace a broken checkout with a fresh clone, swapped in by renames."""
        fresh = checkout.with_name(f".{checkout.name}.fresh")
        shutil.rmtree(fresh, ignore_errors=True)
        res = self.runner.run((*GIT, "clone", "-q", "--no-checkout", "--no-recurse-submodules",
                               "--single-branch", "--branch", branch, "--origin", "origin", repo,
                               str(fresh)), env=GIT_ENV, timeout=self.timeout)
        if not res.ok:
            shutil.rmtree(fresh, ignore_errors=True)
            raise SourceError(f"{checkout} is broken ({why}) and a fresh clone failed: "
                              f"{res.error(3)}")
        broken = checkout.with_name(f".{checkout.name}.broken")
        shutil.rmtree(broken, ignore_errors=True)
        if checkout.exists():
            checkout.rename(broken)
        fresh.rename(checkout)
        shutil.rmtree(broken, ignore_errors=True)
        self.recovered = f"{checkout} was broken ({why}); replaced it with a fresh clone"

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

    # -- signed commits (vigo/trust.py decides; these only ask git) ---------------------------

    def is_ancestor(self, checkout: Path, old: str, new: str) -> int:
        """Exit code of `git merge-base --is-ancestor OLD NEW`: 0 yes, 1 no, 128 OLD unknown."""
        return self._git(checkout, "merge-base", "--is-ancestor", old, new).returncode

    def signatures(self, checkout: Path, revisions: tuple[str, ...],
                   pins: tuple[tuple[str, ...], dict[str, str]]) -> str:
        """`git log --format='%H %G?' REVISIONS` under `signature_pins`: one line per commit."""
        args, env = pins
        res = self.runner.run((*GIT, *args, "-C", str(checkout), "log", "--format=%H %G?",
                               *revisions, "--"), env={**GIT_ENV, **env}, timeout=self.timeout)
        if not res.ok:
            raise SourceError(f"git log of {' '.join(revisions)} failed: {res.error(3)}")
        return res.stdout

    def read_ref(self, checkout: Path, ref: str) -> str:
        res = self._git(checkout, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
        return res.stdout.strip() if res.ok else ""

    def update_ref(self, checkout: Path, ref: str, commit: str) -> str:
        """Point `ref` at `commit`; '' or the error."""
        res = self._git(checkout, "update-ref", ref, commit)
        return "" if res.ok else res.error(2)


class CloneError(Exception):
    """A git call in a workstation clone failed; the message says which and why."""


@dataclass(frozen=True)
class Revision:
    """One commit that touched a file, and the file's path (from the top) in that commit."""

    commit: str
    short: str
    author: str
    date: str  # ISO date of the author date, YYYY-MM-DD
    subject: str
    path: str


class Clone:
    """git in a person's clone of the infra repo, for promote, history and rollback. `repo` may
    be a folder inside the work tree; paths given to the methods are relative to it."""

    def __init__(self, runner: Runner, repo: Path, timeout: float = 120) -> None:
        self.runner = runner
        self.repo = repo
        self.timeout = timeout

    def _read(self, *args: str, input: str | None = None):
        return self.runner.run((*GIT, "-C", str(self.repo), *args), env=GIT_ENV,
                               timeout=self.timeout, input=input)

    def _act(self, *args: str):
        return self.runner.run((*GIT_WORKSTATION, "-C", str(self.repo), *args),
                               env=workstation_env(), timeout=self.timeout)

    def prefix(self) -> str:
        """The repo folder's path from the top of the work tree ('' or 'a/b/')."""
        res = self._read("rev-parse", "--show-prefix")
        if not res.ok:
            raise CloneError(f"{self.repo} is not in a git work tree: {res.error(1)}")
        return res.stdout.strip()

    def log(self, path: str) -> list[Revision]:
        """The commits that changed `path`, newest first, following renames."""
        res = self._read("-c", "core.quotePath=false", "log", "--follow", "--name-only",
                         "--format=%x1e%H%x1f%h%x1f%an%x1f%as%x1f%s", "--", path)
        if not res.ok:
            raise CloneError(f"git log of {path} failed: {res.error(2)}")
        out: list[Revision] = []
        known = self.prefix() + path
        for record in res.stdout.split("\x1e")[1:]:
            head, _, names = record.partition("\n")
            commit, short, author, date, subject = (head.split("\x1f") + [""] * 5)[:5]
            name = next((n for n in names.splitlines() if n.strip()), "")
            known = name or known  # a merge lists no file: the path of the newer commit
            out.append(Revision(commit, short, author, date, subject, known))
        return out

    def blobs(self, specs: list[str]) -> list[str | None]:
        """The text of each `REV:PATH` (None when missing), with one `git cat-file --batch`."""
        if not specs:
            return []
        res = self._read("cat-file", "--batch", input="".join(f"{s}\n" for s in specs))
        if not res.ok:
            raise CloneError(f"git cat-file failed: {res.error(2)}")
        data, pos, out = res.stdout.encode("utf-8"), 0, []
        for _ in specs:
            end = data.find(b"\n", pos)
            header = data[pos:end].split()
            if end < 0 or len(header) != 3 or header[1] != b"blob":
                out.append(None)
                pos = end + 1
                continue
            size = int(header[2])
            body, pos = data[end + 1:end + 1 + size], end + 2 + size
            if data[pos - 1:pos] != b"\n":  # not UTF-8: the decoded text lost the sizes
                return [self.show(s) for s in specs]
            out.append(body.decode("utf-8"))
        return out

    def show(self, spec: str) -> str | None:
        res = self._read("show", spec)
        return res.stdout if res.ok else None

    def dirty(self, path: str) -> bool:
        """Whether `path` differs from HEAD, in the work tree or the index."""
        res = self._read("status", "--porcelain", "--untracked-files=no", "--", path)
        if not res.ok:
            raise CloneError(f"git status failed: {res.error(2)}")
        return bool(res.stdout.strip())

    def upstream(self) -> tuple[str, str, str]:
        """(branch, remote, remote ref) of the checked-out branch's upstream."""
        res = self._read("symbolic-ref", "-q", "--short", "HEAD")
        branch = res.stdout.strip()
        if not res.ok or not branch:
            raise CloneError("HEAD is detached: check out a branch to push")
        res = self._read("for-each-ref", "--format=%(upstream:remotename)%00%(upstream:remoteref)",
                         f"refs/heads/{branch}")
        remote, _, ref = res.stdout.strip().partition("\0")
        if not res.ok or not remote or not ref:
            raise CloneError(f"branch {branch} has no upstream: set one with "
                             f"`git push -u <remote> {branch}`")
        return branch, remote, ref

    def commit(self, path: str, message: str) -> str:
        """Commit `path` alone (other staged changes stay staged) as the user; the new commit."""
        for args in (("add", "--", path), ("commit", "-q", "-m", message, "--only", "--", path)):
            res = self._act(*args)
            if not res.ok:
                self._read("reset", "-q", "--", path)
                hint = (" (set your identity: git config --global user.name / user.email)"
                        if "tell me who you are" in res.stderr.lower() else "")
                raise CloneError(f"git {args[0]} failed: {res.error(3)}{hint}")
        res = self._read("rev-parse", "HEAD")
        return res.stdout.strip()

    def push(self, remote: str, ref: str) -> None:
        res = self._act("push", "-q", remote, f"HEAD:{ref}")
        if not res.ok:
            raise CloneError(f"git push to {remote} failed: {res.error(3)}")

    def export(self, rev: str, dest: Path) -> None:
        """The repo folder's files at `rev`, written under dest (vigo plan --diff-base). The
        clone's index and work tree are untouched: git uses a temporary index beside dest."""
        if rev.startswith("-"):
            raise CloneError(f"{rev!r} is not a revision")
        index = dest.with_name(dest.name + ".index")
        env = {**GIT_ENV, "GIT_INDEX_FILE": str(index)}
        tree = f"{rev}:{self.prefix()}"
        for args in (("read-tree", tree), ("checkout-index", "--all", f"--prefix={dest}/")):
            res = self.runner.run((*GIT, "-C", str(self.repo), *args), env=env,
                                  timeout=self.timeout)
            if not res.ok:
                raise CloneError(f"git {args[0]} {rev} failed: {res.error(2)}")
        index.unlink(missing_ok=True)


# -- idle runs: the git calls that cannot change anything are skipped (docs/idle.md) ---------
#
# After each checkout vigo records in .git/vigo-tree.json the commit and the lstat data (type
# and mode, size, inode, mtime_ns, ctime_ns) of every entry of the work tree and of .git's
# HEAD, index, packed-refs and the ref HEAD names. When the fetched commit is that commit and
# an os.scandir walk finds exactly the same entries, `reset --hard` and `clean -ffdx` would
# change nothing and are skipped. Any write, chmod, rename, new or removed file changes ctime
# (which no tool can set back), so a person's edit or a crash mid-checkout is seen. Entries
# whose timestamps are within RACY_NS of the recording are not trusted (a write in the same
# clock tick could keep them): the next run then checks out in full and records again.

TREE_MANIFEST = "vigo-tree.json"
RACY_NS = 2_000_000_000  # coarse file timestamps (1-2 s on some file systems)
_GIT_META = ("HEAD", "index", "packed-refs")


def origin_url(config_text: str) -> str | None:
    """The one `url` of [remote "origin"] in a .git/config, None if not exactly one or if the
    file uses includes (git's own reading could differ)."""
    section, urls = "", []
    for line in config_text.splitlines():
        text = line.strip()
        if text.startswith("["):
            section = text
            if text.lower().startswith(("[include", "[includeif")):
                return None
            continue
        key, eq, value = text.partition("=")
        if section == '[remote "origin"]' and eq and key.strip().lower() == "url":
            urls.append(value.strip())
    return urls[0] if len(urls) == 1 else None


def url_is_set(checkout: Path, repo: str) -> bool:
    """Whether .git/config already names `repo` as origin (read as text: no git process). A URL
    that git would quote or escape is never taken as set: set-url then runs, as before."""
    if not repo or repo != repo.strip() or any(c in repo for c in '"\\;#\n'):
        return False
    try:
        return origin_url((checkout / ".git" / "config").read_text(errors="replace")) == repo
    except OSError:
        return False


def _stat(path: Path) -> list[int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return [st.st_mode, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def tree_entries(checkout: Path) -> dict[str, list[int] | None]:
    """lstat data of every entry under the work tree (not .git) and of .git's HEAD, index,
    packed-refs and the ref HEAD names ('.git/' keys)."""
    out: dict[str, list[int] | None] = {}
    git = checkout / ".git"
    for name in _GIT_META:
        out[f".git/{name}"] = _stat(git / name)
    try:
        head = (git / "HEAD").read_text(errors="replace").strip()
    except OSError:
        head = ""
    if head.startswith("ref: refs/") and ".." not in head:
        out[".git/" + head[5:]] = _stat(git / head[5:])
    stack = [("", str(checkout))]
    while stack:
        rel, folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if not rel and entry.name == ".git":
                    continue
                st = entry.stat(follow_symlinks=False)
                key = rel + entry.name
                out[key] = [st.st_mode, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]
                if entry.is_dir(follow_symlinks=False):
                    stack.append((key + "/", entry.path))
    return out


def record_tree(checkout: Path, commit: str) -> None:
    """Remember what `commit`'s checkout left (best effort: without it the next run checks out
    in full)."""
    path = checkout / ".git" / TREE_MANIFEST
    tmp = path.with_name(TREE_MANIFEST + ".tmp")
    try:
        data = {"commit": commit, "recorded_ns": time.time_ns(),
                "entries": tree_entries(checkout)}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        forget_tree(checkout)


def forget_tree(checkout: Path) -> None:
    for name in (TREE_MANIFEST, TREE_MANIFEST + ".tmp"):
        with contextlib.suppress(OSError):
            (checkout / ".git" / name).unlink()


def _manifest(checkout: Path, commit: str) -> dict | None:
    try:
        data = json.loads((checkout / ".git" / TREE_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("commit") != commit or not commit:
        return None
    return data


def tree_intact(checkout: Path, commit: str) -> bool:
    """Whether the work tree is exactly what the checkout of `commit` left (see above)."""
    data = _manifest(checkout, commit)
    if data is None or not isinstance(data.get("recorded_ns"), int):
        return False
    recorded = data.get("entries")
    if not isinstance(recorded, dict):
        return False
    limit = data["recorded_ns"] - RACY_NS
    if any(st is not None and max(st[3], st[4]) >= limit for key, st in recorded.items()
           if not key.startswith(".git/")):  # git rewrites its index at every reset
        return False
    try:
        return tree_entries(checkout) == recorded
    except OSError:
        return False


def checked_out_ref(checkout: Path, ref: str) -> str:
    """The commit in the loose ref file `ref` when it is the commit the intact manifest names
    (so known to be a commit): '' otherwise, and git resolves the ref."""
    try:
        text = (checkout / ".git" / ref).read_text().strip()
    except OSError:
        return ""
    data = _manifest(checkout, text)
    return text if data is not None and re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", text) else ""
