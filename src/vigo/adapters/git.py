"""git: make vigo's checkout exactly origin/<branch>. Never recurses into submodules."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import stat
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from vigo.adapters import fs
from vigo.adapters.run import CommandTimeout, Runner
from vigo.adapters.sops import owned_file_problem, private_file_problem
from vigo.core.records import record

# Pinned for every call: no user or system config, no hooks, no submodules, no prompts, and
# every setting that makes git run a program pinned off (a `.git/config` someone else wrote
# must not run anything as root). `-c` wins over the checkout's config for single-valued keys;
# multi-valued and include-style keys (include.path, includeIf, url.*.insteadOf, core.gitProxy,
# filter.<x>.*, remote.<x>.vcs) cannot be pinned that way, so `Git._pin_config` rewrites the
# checkout's `.git/config` before every fetch (docs/security.md). core.sshCommand is pinned to
# plain ssh: an environment GIT_SSH_COMMAND still wins over it.
_NOT_RUN = {
    "core.hooksPath": "/dev/null", "core.fsmonitor": "false", "core.pager": "cat",
    "core.editor": "false", "core.askPass": "/bin/true", "core.sshCommand": "ssh",
    "core.attributesFile": "/dev/null", "core.alternateRefsCommand": "true",
    "diff.external": "false", "log.showSignature": "false", "gpg.program": "/bin/false",
    "gpg.openpgp.program": "/bin/false", "gpg.ssh.program": "/bin/false",
    "gpg.x509.program": "/bin/false", "remote.origin.uploadpack": "git-upload-pack",
    "remote.origin.receivepack": "git-receive-pack", "sequence.editor": "false",
}
GIT = ("git", *(a for k, v in _NOT_RUN.items() for a in ("-c", f"{k}={v}")),
       "-c", "submodule.recurse=false",
       "-c", "protocol.ext.allow=never", "-c", "credential.helper=")
GIT_ENV = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/true", "GIT_PAGER": "cat",
           "GIT_EDITOR": "false", "GIT_ATTR_NOSYSTEM": "1", "GIT_NO_REPLACE_OBJECTS": "1"}

# Files in a checkout's .git that make git read more config or attributes than vigo's own.
_FOREIGN = ("config.worktree", "commondir", "info/attributes", "objects/info/alternates")

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


# -- credentials of a private infra repo (docs/host-setup.md) -----------------------------
# The token reaches git through this credential helper: a shell function run by git's `sh -c`
# that prints two variables of its own environment with the builtin printf. Its text (the only
# part in an argv) holds no secret; the environment of a root process is readable by root only.
CREDENTIAL_HELPER = ('!f() { test "$1" = get && printf \'username=%s\\npassword=%s\\n\' '
                     '"$VIGO_GIT_USERNAME" "$VIGO_GIT_PASSWORD"; }; f')
DEFAULT_TOKEN_USER = "x-access-token"  # any user name works with a token (GitHub, GitLab, ...)
TOKEN_AS_USER_LEN = 20  # a longer user name with no password in a URL is taken as a token


class CredentialError(SourceError):
    """A credential setting cannot be used (missing file, wrong owner or mode, empty)."""


@record(frozen=True)
class GitAuth:
    """How the host's git proves who it is to a private repo: an SSH deploy key and a pinned
    known_hosts file, or a token read from a root-only file, and a private CA for HTTPS."""

    ssh_key: Path | None = None
    ssh_known_hosts: Path | None = None
    token_file: Path | None = None
    ca_file: Path | None = None


def git_auth(settings) -> GitAuth:
    return GitAuth(settings.ssh_key, settings.ssh_known_hosts, settings.git_token_file,
                   settings.git_ca_file)


@record(frozen=True)
class Remote:
    """A remote as git is given it: the URL without credentials, `-c` options and
    environment. `secrets` are masked everywhere."""

    url: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    secrets: tuple[str, ...] = ()


def split_credentials(url: str) -> tuple[str, str, str]:
    """(url without user and password, user, password) of an http(s) URL; any other URL is
    returned as it is, less a password (an ssh user name is not a secret)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return url, "", ""
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, "", ""
    user, colon, password = userinfo.partition(":")
    if parts.scheme not in ("http", "https"):
        if not colon:
            return url, "", ""
        return urlunsplit(parts._replace(netloc=f"{user}@{hostport}")), "", unquote(password)
    return urlunsplit(parts._replace(netloc=hostport)), unquote(user), unquote(password)


def _ssh_path(path: Path) -> str:
    """A path as one ssh -o value: ssh expands % tokens in it and splits it at blanks."""
    text = str(path).replace("%", "%%")
    if '"' in text or "\n" in text:
        raise CredentialError(f"{path}: a path with a double quote or a newline cannot be "
                              "given to ssh; move the file")
    return f'"{text}"' if any(c.isspace() for c in text) else text


def ssh_command(auth: GitAuth) -> str:
    """GIT_SSH_COMMAND: only the deploy key, no agent, no user or system ssh config, strict
    host key checking against the pinned file, never a prompt; ssh writes nothing anywhere."""
    argv = ["ssh", "-F", "/dev/null"]
    if auth.ssh_key is not None:
        argv += ["-i", _ssh_path(auth.ssh_key), "-o", "IdentitiesOnly=yes"]
    argv += ["-o", "IdentityAgent=none", "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no"]
    if auth.ssh_known_hosts is not None:
        argv += ["-o", f"UserKnownHostsFile={_ssh_path(auth.ssh_known_hosts)}",
                 "-o", "GlobalKnownHostsFile=/dev/null"]
    return " ".join(shlex.quote(a) for a in argv)


def known_hosts_problem(path: Path) -> str:
    """The pinned known_hosts file may be read by anyone, but changed only by root: whoever
    can add a line to it can stand in for the git server."""
    return owned_file_problem(
        path, "ssh_known_hosts", mask=0o022, mode=0o644,
        missing=(f"ssh_known_hosts {path} does not exist; fix: vigo bootstrap "
                 "--host-key-fingerprint SHA256:... writes it, or copy the server's line there"),
        uid_risk="", mode_risk="can change the pinned host key")


def read_token(path: Path) -> str:
    """The token: the first line of a root-only file (checked like the age key)."""
    why = private_file_problem(path, "git_token_file")
    if why:
        raise CredentialError(why)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"git_token_file {path} cannot be read ({exc})") from exc
    token = lines[0].strip() if lines else ""
    if not token:
        raise CredentialError(f"git_token_file {path} is empty; fix: write the token on its "
                              "first line")
    return token


def remote_for(url: str, auth: GitAuth, token: str = "") -> Remote:
    """Pure: the URL, `-c` options and environment of every host git call that may reach
    the remote. `token` is the content of auth.token_file (read by the caller)."""
    bare, user, password = split_credentials(url)
    if user and not password and len(user) >= TOKEN_AS_USER_LEN:  # https://TOKEN@host/...
        user, password = "", user
    env = {"GIT_SSH_COMMAND": ssh_command(auth), "GIT_SSH_VARIANT": "ssh",
           "SSH_AUTH_SOCK": ""}  # an empty socket is no agent (and IdentityAgent=none)
    args: list[str] = []
    secrets = [s for s in (password, user if password else "", token) if s]
    try:
        parts = urlsplit(bare)
        scheme, netloc = parts.scheme, parts.netloc
    except ValueError:
        scheme, netloc = "", ""
    if scheme in ("http", "https"):
        password = token or password
        if password:
            # after GIT's `credential.helper=` (which empties the list), only for this server
            args += ["-c", f"credential.{scheme}://{netloc}.helper={CREDENTIAL_HELPER}"]
            env["VIGO_GIT_USERNAME"] = user or DEFAULT_TOKEN_USER
            env["VIGO_GIT_PASSWORD"] = password
        if auth.ca_file is not None:
            args += ["-c", f"http.sslCAInfo={auth.ca_file}", "-c", "http.sslVerify=true"]
    return Remote(bare, tuple(args), tuple(sorted(env.items())), tuple(secrets))


# -- a refused SSH host key: the offered fingerprint and the fix --------------------------

# Patterns, compiled (and cached by `re`) at the first refusal: a run that fetches needs none.
_UNKNOWN = r"No (\S+) host key is known for (\S+) and you have requested strict"
_CHANGED = (r"The fingerprint for the (\S+) key sent by the remote host is\s+"
            r"(SHA256:[A-Za-z0-9+/=]+)")
_CHANGED_HOST = r"Host key for (\S+) has changed"


@record(frozen=True)
class HostKeyRefusal:
    kind: str  # "unknown" or "changed"
    key_type: str  # ED25519, ECDSA, RSA
    host: str  # as ssh names it: host or [host]:port
    fingerprint: str = ""  # SHA256:... when ssh printed it (a changed key)


def host_key_refusal(stderr: str) -> HostKeyRefusal | None:
    """Pure: whether ssh refused the server's host key, from its stderr."""
    if "Host key verification failed" not in stderr:
        return None
    changed = re.search(_CHANGED, stderr)
    if changed:
        host = re.search(_CHANGED_HOST, stderr)
        return HostKeyRefusal("changed", changed.group(1), host.group(1) if host else "",
                              changed.group(2).rstrip("."))
    unknown = re.search(_UNKNOWN, stderr)
    if unknown:
        return HostKeyRefusal("unknown", unknown.group(1), unknown.group(2))
    return HostKeyRefusal("unknown", "", "")


def ssh_target(url: str) -> tuple[str, int] | None:
    """(host, port) of an ssh remote: ssh://[user@]host[:port]/path or [user@]host:path."""
    if "://" in url:
        try:
            parts = urlsplit(url)
            if parts.scheme not in ("ssh", "git+ssh", "ssh+git") or not parts.hostname:
                return None
            return parts.hostname, parts.port or 22
        except ValueError:
            return None
    m = re.match(r"^(?:[^@/:]+@)?(\[[^\]]+\]|[^:/]+):(?!//)", url)
    if not m or url.startswith(("/", ".")):
        return None
    return m.group(1).strip("[]"), 22


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def refusal_line(refusal: HostKeyRefusal, fingerprint: str, host: str, port: int,
                 known_hosts: Path | None) -> str:
    """Pure: the one line for a refused host key, with the offered fingerprint and the fix."""
    pinned = str(known_hosts) if known_hosts else "~/.ssh/known_hosts (set ssh_known_hosts)"
    name = refusal.host or known_hosts_name(host, port)
    offered = " ".join(w for w in (refusal.key_type, "key", fingerprint) if w)
    offered = offered if fingerprint else "a key it did not show (ssh-keyscan found none)"
    pin = (f"vigo bootstrap --host-key-fingerprint {fingerprint}" if fingerprint else
           "vigo bootstrap --host-key-fingerprint SHA256:...")
    if refusal.kind == "changed":
        return (f"the SSH host key of {name} CHANGED: the server offers {offered}, "
                f"{pinned} pins another (a reinstalled server, or someone in between); "
                f"refused. Fix: confirm {fingerprint or 'the fingerprint'} with the git "
                f"server's admin, then replace the line for {name} in {pinned} "
                f"(or remove the file and run {pin})")
    return (f"the SSH host key of {name} is not in {pinned}: the server offers {offered}; "
            f"refused. Fix: if that is your git server's key (compare it with what its admin "
            f"or web page shows), pin it with {pin}, or: ssh-keyscan -p {port} {host} >> "
            f"{pinned}")


class SignatureSetupError(Exception):
    """The trusted keys or the program that checks them is missing (docs/security.md)."""


def signature_pins(allowed_signers: Path | None, gpg_keyring: Path | None
                   ) -> tuple[tuple[str, ...], dict[str, str]]:
    """`-c` options and environment under which `%G?` says G only for the trusted keys. git
    picks the verifier from the signature in the commit, not from gpg.format: the one that
    checks the trusted keys is pinned to its absolute path, the others to /bin/false."""
    import shutil  # shutil loads zlib, bz2 and lzma: imported where it is used, never idle

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


def config_text(repo: str, branch: str) -> str:
    """The whole `.git/config` of vigo's checkout; nothing in it runs a program."""
    if any(c in repo for c in "\n\r\0"):
        raise SourceError("the repo URL holds a line break: fix `repo` in the settings")
    if branch and (any(c.isspace() or c in '"\\;#:' for c in branch) or branch.startswith("-")):
        raise SourceError(f"branch {branch!r} is not a branch name: fix `branch` in the settings")
    quoted = repo.replace("\\", "\\\\").replace('"', '\\"')
    refspec = (f"+refs/heads/{branch}:refs/remotes/origin/{branch}" if branch
               else "+refs/heads/*:refs/remotes/origin/*")
    return ("[core]\n\trepositoryformatversion = 0\n\tbare = false\n"
            f'[remote "origin"]\n\turl = "{quoted}"\n\tfetch = {refspec}\n')


def _read_at(dir_fd: int, name: str) -> bytes | None:
    """A file's bytes, or None when it is missing or not a regular file (a link included)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read(1 << 20)


class Git:
    def __init__(self, runner: Runner, timeout: float = 120, auth: GitAuth = GitAuth()) -> None:
        self.runner = runner
        self.timeout = timeout
        self.auth = auth
        self.stamp = ""  # the last checkout's tree_stamp: '' unless it found the tree intact

    def _git(self, checkout: Path, *args: str, timeout: float | None = None,
             remote: Remote | None = None):
        extra, env = (remote.args, dict(remote.env)) if remote else ((), {})
        return self.runner.run((*GIT, *extra, "-C", str(checkout), *args),
                               env={**GIT_ENV, **env}, timeout=timeout or self.timeout)

    def remote(self, repo: str) -> Remote:
        """The repo URL without credentials and how git gets them; every secret is masked."""
        token = read_token(self.auth.token_file) if self.auth.token_file else ""
        if self.auth.ssh_key is not None:
            why = private_file_problem(self.auth.ssh_key, "ssh_key")
            if why:
                raise CredentialError(why)
        if self.auth.ssh_known_hosts is not None:
            why = known_hosts_problem(self.auth.ssh_known_hosts)
            if why:
                raise CredentialError(why)
        remote = remote_for(repo, self.auth, token)
        self.runner.masker.add(remote.secrets)
        return remote

    def _refused(self, remote: Remote, res) -> str:
        """For a failed network call: the host key line when ssh refused the server's key
        (the offered fingerprint comes from ssh, or from ssh-keyscan for an unknown key)."""
        refusal = host_key_refusal(res.stderr)
        target = ssh_target(remote.url)
        if refusal is None or target is None:
            return ""
        host, port = target
        fingerprint = refusal.fingerprint or self.offered_fingerprint(host, port,
                                                                      refusal.key_type)
        return refusal_line(refusal, fingerprint, host, port, self.auth.ssh_known_hosts)

    def host_keys(self, host: str, port: int, key_type: str = "") -> list[tuple[str, str]]:
        """(known_hosts line, SHA256 fingerprint) of each key the server offers now."""
        types = ("-t", key_type.lower()) if key_type else ()
        res = self.runner.run(("ssh-keyscan", "-T", "10", "-p", str(port), *types, "--", host),
                              timeout=self.timeout)
        out = []
        for line in res.stdout.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            fp = self.runner.run(("ssh-keygen", "-l", "-E", "sha256", "-f", "-"),
                                 input=line + "\n", timeout=self.timeout)
            words = fp.stdout.split()
            if fp.ok and len(words) > 1 and words[1].startswith("SHA256:"):
                out.append((line.strip(), words[1]))
        return out

    def offered_fingerprint(self, host: str, port: int, key_type: str) -> str:
        keys = self.host_keys(host, port, key_type)
        return keys[0][1] if keys else ""

    def fetch(self, repo: str, branch: str, checkout: Path) -> str:
        """Fetch the branch into refs/remotes/origin/<branch> (the checkout created or its
        config pinned first); return the fetched commit. The working tree is not touched: a
        commit can be verified before it is checked out. A broken checkout raises SourceError
        (host/source.py decides whether to clone afresh)."""
        remote = self.remote(repo)
        self._ensure_repo(remote.url, checkout, branch)
        return self._fetch(remote, branch, checkout)

    def checkout(self, checkout: Path, commit: str) -> str:
        """Make the working tree exactly `commit` (untracked files removed); SourceError when
        it cannot (a stale index.lock after a crash, a broken object)."""
        self.stamp = tree_stamp(checkout, commit)
        if self.stamp:  # idle: reset and clean would change nothing
            return commit
        return self._checkout(checkout, commit)

    def _checkout(self, checkout: Path, commit: str) -> str:
        forget_tree(checkout)  # a crash in between leaves no manifest that could match
        for args in (("reset", "-q", "--hard", commit), ("clean", "-ffdxq")):
            res = self._git(checkout, *args)
            if not res.ok:
                raise SourceError(f"cannot check out {commit[:12]} in {checkout}: "
                                  f"{res.error(3)}")
        record_tree(checkout, commit)
        # The housekeeping `fetch` would start after every fetch (_fetch turns it off: an idle
        # fetch brings no objects), here where new objects came in. Like fetch's, a gc it
        # starts goes on in the background; when it packs the refs, the next run sees a changed
        # .git and checks out once more. Its failure costs nothing but disk space.
        with contextlib.suppress(CommandTimeout):
            self._git(checkout, "maintenance", "run", "--auto", "--quiet")
        return commit

    def _ensure_repo(self, repo: str, checkout: Path, branch: str = "") -> None:
        dotgit = checkout / ".git"
        if not dotgit.is_dir() and not dotgit.is_symlink():
            if checkout.exists() and any(checkout.iterdir()):
                raise SourceError(f"{checkout} exists and is not a git checkout: move it away "
                                  "or set `checkout` to an empty folder")
            checkout.mkdir(parents=True, exist_ok=True, mode=0o700)
            res = self._git(checkout, "init", "-q")
            if not res.ok:
                import shutil

                shutil.rmtree(checkout / ".git", ignore_errors=True)
                raise SourceError(f"cannot create the checkout in {checkout}: {res.error()}")
        self._pin_config(repo, branch, checkout)

    def _pin_config(self, repo: str, branch: str, checkout: Path) -> bool:
        """Make the checkout's `.git/config` exactly vigo's own (format 0, not bare, the origin
        remote and its refspec), 0600, never through a link; remove the files that make git
        read other config or attributes; the checkout folder 0700. Compares before it writes:
        an unchanged checkout costs a few stats and one small read. True when it wrote."""
        text = config_text(repo, branch)
        try:
            if stat.S_IMODE(os.stat(checkout).st_mode) != 0o700:
                os.chmod(checkout, 0o700)
            gitdir = fs.open_dir(checkout, checkout / ".git", create=False)
        except OSError as exc:  # a .git that is a link or a file (gitdir: elsewhere)
            raise SourceError(f"{checkout}/.git is not vigo's checkout: {exc.strerror or exc}; "
                              "it is replaced by a fresh clone") from None
        try:
            for rel in _FOREIGN:
                folder, _, name = rel.rpartition("/")
                try:
                    fd = fs.open_dir(checkout / ".git", checkout / ".git" / folder,
                                     create=False) if folder else os.dup(gitdir)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise SourceError(f"{checkout}/.git/{folder}: {exc.strerror or exc}; it is "
                                      "replaced by a fresh clone") from None
                try:
                    os.unlink(name, dir_fd=fd)
                except FileNotFoundError:
                    pass
                except IsADirectoryError:
                    import shutil

                    shutil.rmtree(name, dir_fd=fd)
                finally:
                    os.close(fd)
            if _read_at(gitdir, "config") == text.encode():
                return False
            fs.atomic_write(checkout / ".git" / "config", text.encode(), mode=0o600,
                            dir_mode=0o700, root=checkout / ".git")
            return True
        finally:
            os.close(gitdir)

    def _fetch(self, remote: Remote, branch: str, checkout: Path) -> str:
        ref = f"refs/remotes/origin/{branch}"
        # No auto maintenance (a second git process; _checkout runs it when a commit came in)
        # and no FETCH_HEAD (vigo reads the ref): an idle fetch writes nothing.
        res = self._git(checkout, "fetch", "-q", "--no-tags", "--no-recurse-submodules",
                        "--prune", "--no-auto-maintenance", "--no-write-fetch-head", "origin",
                        f"+refs/heads/{branch}:{ref}", remote=remote)
        if not res.ok:
            refused = self._refused(remote, res)
            if refused:
                raise CredentialError(refused)
            why = res.error(3)
            if "Permission denied (publickey" in res.stderr:
                key = self.auth.ssh_key or "root's default SSH key (set ssh_key)"
                why = (f"the server refused the key (Permission denied (publickey)): add the "
                       f"public half of {key} to the repo as a read-only deploy key")
            raise SourceError(f"fetch of branch {branch!r} from {redact(remote.url)} failed: "
                              f"{why}")
        if known := checked_out_ref(checkout, ref):  # idle: the commit already checked out
            return known
        res = self._git(checkout, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
        if not res.ok:
            raise SourceError(f"{checkout}: the fetched branch {branch!r} has no commit: "
                              f"{res.error()}")
        return res.stdout.strip()

    def remote_answers(self, repo: str, branch: str, cwd: Path) -> bool:
        remote = self.remote(repo)
        cwd.mkdir(parents=True, exist_ok=True)
        res = self.runner.run((*GIT, *remote.args, "ls-remote", "--heads", remote.url, branch),
                              env={**GIT_ENV, **dict(remote.env)}, timeout=self.timeout, cwd=cwd)
        return res.ok and bool(res.stdout.strip())

    def reclone(self, repo: str, branch: str, checkout: Path, why: str) -> None:
        """Replace a broken checkout with a fresh clone, swapped in by renames."""
        import shutil

        remote = self.remote(repo)
        fresh = checkout.with_name(f".{checkout.name}.fresh")
        shutil.rmtree(fresh, ignore_errors=True)
        res = self.runner.run((*GIT, *remote.args, "clone", "-q", "--no-checkout",
                               "--no-recurse-submodules", "--single-branch", "--branch", branch,
                               "--origin", "origin", remote.url, str(fresh)),
                              env={**GIT_ENV, **dict(remote.env)}, timeout=self.timeout)
        if not res.ok:
            shutil.rmtree(fresh, ignore_errors=True)
            raise SourceError(f"{checkout} is broken ({why}) and a fresh clone failed: "
                              f"{res.error(3)}")
        self._pin_config(remote.url, branch, fresh)  # clone wrote it with the umask's mode
        broken = checkout.with_name(f".{checkout.name}.broken")
        shutil.rmtree(broken, ignore_errors=True)
        if checkout.exists():
            checkout.rename(broken)
        fresh.rename(checkout)
        shutil.rmtree(broken, ignore_errors=True)

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

    # -- signed commits (vigo/core/trust.py decides; these only ask git) ---------------------------

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


@record(frozen=True)
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
        for entry in res.stdout.split("\x1e")[1:]:
            head, _, names = entry.partition("\n")
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
# an lstat of each recorded path (the work tree's own folder '.' too) finds exactly the same
# data, `reset --hard` and `clean -ffdx` would change nothing and are skipped. Any write,
# chmod, rename, new or removed file changes ctime (which no tool can set back): a file's own,
# and for a name added to, removed from or renamed in a folder the folder's, so a person's
# edit, a new file anywhere or a crash mid-checkout is seen without listing the folders.
# Entries whose timestamps are within RACY_NS of the recording are not trusted (a write in
# the same clock tick could keep them): the next run then checks out in full and records
# again.

TREE_MANIFEST = "vigo-tree.json"
RACY_NS = 2_000_000_000  # coarse file timestamps (1-2 s on some file systems)
_GIT_META = ("HEAD", "index", "packed-refs")


def _stat(path: Path) -> list[int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return [st.st_mode, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def tree_entries(checkout: Path) -> dict[str, list[int] | None]:
    """lstat data of the work tree's folder ('.'), of every entry under it (not .git) and of
    .git's HEAD, index, packed-refs and the ref HEAD names ('.git/' keys)."""
    out: dict[str, list[int] | None] = {".": _stat(checkout)}
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


_READ: dict[str, tuple[tuple[int, ...], object]] = {}  # path: (its lstat, its parsed text)


def _manifest(checkout: Path, commit: str) -> dict | None:
    path = checkout / ".git" / TREE_MANIFEST
    try:
        st = os.lstat(path)
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        seen = _READ.get(str(path))
        if seen is not None and seen[0] == key:  # read once a run (the ref, then the tree)
            data = seen[1]
        else:
            data = json.loads(path.read_text())
            _READ[str(path)] = (key, data)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("commit") != commit or not commit:
        return None
    return data


def tree_intact(checkout: Path, commit: str) -> bool:
    """Whether the work tree is exactly what the checkout of `commit` left (see above)."""
    return bool(tree_stamp(checkout, commit))


def tree_stamp(checkout: Path, commit: str) -> str:
    """'' unless the work tree is intact (tree_intact); then what names that recording (the
    commit and when it was recorded): a render of this tree is a render of that stamp."""
    data = _manifest(checkout, commit)
    if data is None or not isinstance(data.get("recorded_ns"), int):
        return ""
    recorded = data.get("entries")
    if not isinstance(recorded, dict) or "." not in recorded:  # an older manifest: check out
        return ""
    limit = data["recorded_ns"] - RACY_NS
    base = str(checkout) + "/"
    for key, st in recorded.items():  # an lstat each, no listing: see the note above
        trusted = (isinstance(st, list) and len(st) == 5 and isinstance(st[3], int)
                   and isinstance(st[4], int) and max(st[3], st[4]) < limit)
        if st is not None and not key.startswith(".git/") and not trusted:
            return ""  # racy or odd (git rewrites its index at every reset: not checked)
        try:
            now = os.lstat(base + key)
        except OSError:
            if st is None:  # .git's packed-refs, say: absent then and now
                continue
            return ""
        if st != [now.st_mode, now.st_size, now.st_ino, now.st_mtime_ns, now.st_ctime_ns]:
            return ""
    return f"{commit}@{data['recorded_ns']}"


def checked_out_ref(checkout: Path, ref: str) -> str:
    """The commit in the loose ref file `ref` when it is the commit the intact manifest names
    (so known to be a commit): '' otherwise, and git resolves the ref."""
    try:
        text = (checkout / ".git" / ref).read_text().strip()
    except OSError:
        return ""
    data = _manifest(checkout, text)
    return text if data is not None and re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", text) else ""
