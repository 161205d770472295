"""The one process runner: timeouts, a clean environment and secret masking."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from vigo.core.records import record

MASK = "***"
# Values shorter than this are not masked: masking "80" or "1" everywhere would garble every
# line and hide nothing. Documented in docs/security.md.
MIN_SECRET_LEN = 4


# A piece of a value at the start or the end of a line is masked too, when it holds at least
# this many characters and at least half the value: tools cut a value at a line end (an env
# file's line in an error) or wrap it. Half: a line ending in `postgres` is no piece of
# `postgres://app:...`. docs/security.md
FRAGMENT_MIN = 8


class Masker:
    """Replaces every registered secret value with *** in text: the value itself, its lines,
    and the forms tools print it in (`forms`), also as a piece at a line's start or end
    (FRAGMENT_MIN). Thread safe."""

    def __init__(self) -> None:
        self._values: set[str] = set()  # every form of every value
        self._bases: set[str] = set()  # the values and their lines: fragments are cut from these
        self._sorted: list[str] = []
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            for value in values:
                for part in (value, *value.splitlines()):
                    part = part.strip()
                    if len(part) >= MIN_SECRET_LEN:
                        self._bases.add(part)
                        self._values.update(f for f in forms(part) if len(f) >= MIN_SECRET_LEN)
            self._sorted = sorted(self._values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        with self._lock:
            values, bases = self._sorted, tuple(self._bases)
        for value in values:
            if value in text:
                text = text.replace(value, MASK)
        if any(len(b) > FRAGMENT_MIN for b in bases):
            text = "".join(_mask_fragments(line, bases) for line in text.splitlines(True))
        return text


def _mask_fragments(line: str, bases: Sequence[str]) -> str:
    """Mask a value's head that ends the line, or its tail that starts it."""
    body = line.rstrip("\r\n")
    end = line[len(body):]
    for base in bases:
        least = max(FRAGMENT_MIN, (len(base) + 1) // 2)
        if len(base) <= least or len(body) < least:
            continue
        if body[-least:] in base:  # cheap test first: most lines end elsewhere
            for n in range(min(len(base) - 1, len(body)), least - 1, -1):
                if body.endswith(base[:n]):
                    body = body[:-n] + MASK
                    break
        if body[:least] in base:
            for n in range(min(len(base) - 1, len(body)), least - 1, -1):
                if body.startswith(base[-n:]):
                    body = MASK + body[n:]
                    break
    return body + end


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
               "\t": "\\t", "\v": "\\v", '"': '\\"', "\\": "\\\\"}


def go_quote(value: str, ascii_only: bool = False) -> str:
    """Go's strconv.Quote (`%q`) without the quotes; QuoteToASCII with ascii_only."""
    out = []
    for ch in value:
        code = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x80 or (not ascii_only and ch.isprintable()):
            out.append(ch)
        else:
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def forms(value: str) -> set[str]:
    """The ways a tool may print `value`: as it is, JSON-escaped (Python's and Go's, which
    also escapes <, > and &), Go-quoted (%q), shell-quoted, URL-encoded."""
    from urllib.parse import quote, quote_plus

    go_json = json.dumps(value, ensure_ascii=False)[1:-1]
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        go_json = go_json.replace(ch, esc)
    return {
        value,
        json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1], go_json,
        go_quote(value), go_quote(value, ascii_only=True),
        shlex.quote(value), "'" + value.replace("'", "'\\''") + "'",
        re.sub(r'([\\"$`])', r"\\\1", value),  # inside "..." for a shell
        quote(value, safe=""), quote(value), quote_plus(value),
    }


@record(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def error(self, limit: int = 8) -> str:
        """The last lines of stderr (or stdout), for a one-line reason."""
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return " | ".join(line.strip() for line in text[-limit:] if line.strip()) or (
            f"exit {self.returncode}"
        )


class CommandTimeout(Exception):
    pass


# Set when vigo is told to stop (SIGTERM from systemd's stop or TimeoutStartSec): the waits of
# every thread end at once and no new command starts, so a run stops in seconds, recorded as
# interrupted, instead of finishing a health wait in a worker thread while systemd waits.
STOP = threading.Event()


class Interrupted(Exception):
    """vigo was told to stop while this step waited or was about to start a command."""


def pause(seconds: float) -> None:
    """time.sleep that ends at once, raising Interrupted, when vigo is told to stop."""
    if STOP.wait(seconds):
        raise Interrupted("vigo was told to stop (SIGTERM)")


# Only these variables of the caller's environment reach child processes: anything else could
# feed compose interpolation (the shell environment wins over --env-file) or alias a project.
PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "DOCKER_HOST", "DOCKER_CONFIG",
            "DOCKER_CONTEXT", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "SSH_AUTH_SOCK",
            "GIT_SSH_COMMAND", "TMPDIR",
            # a workstation's identity for the commits of init / promote (host runs pin config)
            "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
            "GNUPGHOME")


# `docker compose` without the docker CLI in front. The CLI only finds its compose plugin, asks
# it for its metadata (a process of its own) and execs it: about 50 ms of each compose
# process's ~100 ms here, a dozen times in a promotion and once per stack in `vigo check`. The
# runner execs the plugin the CLI would pick the way the CLI does (the same binary, argv and
# DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND), so compose runs as the plugin of that CLI, with the
# same config, context and DOCKER_HOST. Logs, errors and Result.argv keep `docker compose`.
# Where the CLI's choice is not plain (no `docker` on PATH, `cliPluginsExtraDirs` in its
# config.json, no home folder and no DOCKER_CONFIG) the CLI is run as given.
PLUGIN_DIRS = ("/usr/local/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins",
               "/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins")


def compose_plugin(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(the docker CLI on env's PATH, the docker-compose plugin it would run), or None."""
    import shutil  # not imported by an idle run, which starts no compose process

    docker = shutil.which("docker", path=env.get("PATH", os.defpath))
    config = env.get("DOCKER_CONFIG") or os.path.join(env.get("HOME") or _home(), ".docker")
    if docker is None or config == ".docker":
        return None
    try:
        with open(os.path.join(config, "config.json"), "rb") as f:
            if b"cliPluginsExtraDirs" in f.read(1 << 20):
                return None
    except OSError:
        pass  # no config file: the CLI's defaults
    for folder in (os.path.join(config, "cli-plugins"), *PLUGIN_DIRS):
        path = os.path.join(folder, "docker-compose")
        if os.path.isfile(path):  # the first one there is the CLI's, runnable or not
            return (docker, path) if os.access(path, os.X_OK) else None
    return None


def _home() -> str:
    """The user's home folder from the password database, as the CLI falls back to when HOME
    is not set (a systemd service without User=); '' when there is none."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return ""


class Runner:
    """Starts every process vigo runs. `log` receives masked `$ argv` lines when verbose."""

    def __init__(self, masker: Masker | None = None, log=None, verbose: bool = False,
                 interactive: bool = False) -> None:
        self.masker = masker or Masker()
        self.log = log
        self.verbose = verbose
        # Workstation commands on a terminal (promote's git push, init's signed commit, host
        # add's sops): children stay in vigo's process group, so ssh, gpg and age can prompt
        # on the terminal; a timeout then kills the child and its descendants by pid.
        self.interactive = interactive

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in PASS_ENV}
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        env["LC_ALL"] = "C.UTF-8"
        if extra:
            env.update(extra)
        return env

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 300,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        input: str | None = None,
        mask_output: bool = True,
        limit_data: int | None = None,
    ) -> Result:
        """Run argv; never raises on a non-zero exit. Output is masked unless mask_output is
        False (only for output that is itself the secret, e.g. `sops -d`). `limit_data` caps
        the data segment (RLIMIT_DATA, bytes) of the command and its children: for commands
        that parse what the repo holds (docs/security.md)."""
        argv = tuple(str(a) for a in argv)
        if STOP.is_set():
            raise Interrupted(f"vigo was told to stop (SIGTERM) before {describe(argv)}")
        if self.verbose and self.log:
            self.log("$ " + self.masker(" ".join(_quote(a) for a in argv)))
        start, full_env = argv, self.env(env)  # what starts (argv: what the caller ran)
        if argv[:2] == ("docker", "compose"):
            plugin = compose_plugin(full_env)
            if plugin is not None:  # see PLUGIN_DIRS
                start = (plugin[1], *argv[1:])
                full_env["DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND"] = plugin[0]
        if limit_data is not None and os.path.exists(PRLIMIT):
            argv = (PRLIMIT, f"--data={limit_data}", "--", *argv)
            start = (PRLIMIT, f"--data={limit_data}", "--", *start)
        try:
            # Its own process group (a new session): a timeout ends the command and every
            # child it started (docker's docker-compose plugin, git's ssh), never one alone.
            proc = subprocess.Popen(
                start,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                env=full_env,
                cwd=cwd,
                start_new_session=not self.interactive,
            )
        except FileNotFoundError:
            return Result(argv, 127, "", f"{argv[0]}: command not found")
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self._end(proc)
            raise CommandTimeout(
                self.masker(f"{describe(argv)} timed out after {timeout:g} s")) from exc
        except BaseException:  # Ctrl-C, SIGTERM in vigo: the command goes with it
            self._end(proc)
            raise
        if limit_data is not None and proc.returncode != 0 and (
                "out of memory" in err or proc.returncode == -signal.SIGSEGV):
            err = (f"{describe(argv)} ran out of memory (vigo limits it to "
                   f"{limit_data >> 20} MiB): a YAML alias bomb or a huge file?")
        if mask_output:
            out, err = self.masker(out), self.masker(err)
        else:
            err = self.masker(err)
        return Result(argv, proc.returncode, out, err)


    def pipe(self, argv: Sequence[str], data: bytes, *, timeout: float = 60,
             limit: int | None = None) -> tuple[int, bytes, str]:
        """Run argv with `data` on its stdin (then closed) and return its exit code, its whole
        stdout as bytes (no newline translation: a raw protocol, `docker system dial-stdio`)
        and its stderr (masked). Same process group, timeout and stop rules as `run`. Its
        output is not masked: the caller parses it and prints none of it."""
        argv = tuple(str(a) for a in argv)
        if STOP.is_set():
            raise Interrupted(f"vigo was told to stop (SIGTERM) before {describe(argv)}")
        if self.verbose and self.log:
            self.log("$ " + self.masker(" ".join(_quote(a) for a in argv)))
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=self.env(),
                                    start_new_session=not self.interactive)
        except FileNotFoundError:
            return 127, b"", f"{argv[0]}: command not found"
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self._end(proc)
            raise CommandTimeout(
                self.masker(f"{describe(argv)} timed out after {timeout:g} s")) from exc
        except BaseException:
            self._end(proc)
            raise
        if limit is not None and len(out) > limit:
            out = out[:limit + 1]  # the caller says it is too large
        return proc.returncode, out, self.masker(err.decode("utf-8", "replace"))

    def _end(self, proc: subprocess.Popen) -> None:
        if not self.interactive:
            kill_group(proc)
            return
        pids = [proc.pid, *descendants(proc.pid)]  # read before any is reparented
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + GRACE  # SIGKILL is delivered at once, the exit takes a moment
        while time.monotonic() < deadline and any(_running(pid) for pid in pids):
            proc.poll()
            time.sleep(0.02)
        _reap(proc)


PRLIMIT = "/usr/bin/prlimit"
# The data segment (RLIMIT_DATA) of a command that parses what the repo holds (`docker compose
# config`): a YAML alias bomb then ends in "out of memory" instead of eating the host. Not
# RLIMIT_AS: Go reserves large virtual ranges it never uses, which RLIMIT_AS counts and
# RLIMIT_DATA does not (Linux >= 4.7 counts private writable mappings only). A real compose
# file needs well under 100 MiB. Inherited by docker's docker-compose plugin. docs/security.md
UNTRUSTED_DATA_LIMIT = 1 << 30
GRACE = 2.0  # seconds between SIGTERM and SIGKILL for the process group of a timed-out command


def kill_group(proc: subprocess.Popen, grace: float = GRACE) -> None:
    """End the process group of `proc` (its session): SIGTERM, up to `grace` seconds for
    every member to go, then SIGKILL to whatever is left; reap `proc` and close its pipes."""
    pgid = proc.pid  # start_new_session: the child leads its own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader
        if not group_alive(pgid):
            break  # every member is gone (or a zombie its new parent has not reaped yet)
        time.sleep(0.05)
    if group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + grace  # SIGKILL is delivered at once, the exit takes a moment
    while time.monotonic() < deadline and group_alive(pgid):
        proc.poll()
        time.sleep(0.02)
    _reap(proc, grace)


def _reap(proc: subprocess.Popen, grace: float = GRACE) -> None:
    try:
        proc.communicate(timeout=grace)  # reaps; drains pipes that a dead child held
    except (subprocess.TimeoutExpired, ValueError, OSError):
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        proc.wait()


def descendants(pid: int, proc_dir: Path = Path("/proc")) -> list[int]:
    """The children, grandchildren... of `pid` now (from /proc's parent ids)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir(proc_dir) if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            fields = (proc_dir / entry / "stat").read_text().rsplit(")", 1)[-1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def _running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def group_alive(pgid: int, proc_dir: Path = Path("/proc")) -> bool:
    """Whether a process of group `pgid` still runs (zombies do not count)."""
    try:
        entries = [e for e in os.listdir(proc_dir) if e.isdigit()]
    except OSError:
        entries = None
    if entries is None:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in entries:
        try:
            stat = (proc_dir / entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # state ppid pgrp ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


_VALUE_OPTIONS = {"-c", "-C", "--project-name", "-p", "--file", "-f", "--env-file", "--filter",
                  "--format", "--type", "--tail", "--time", "--input-type", "--output-type",
                  "--filename-override", "--project-directory", "--profile"}
_WORD = r"^[a-z][a-z0-9-]*$"  # compiled at the first message that names a command


def describe(argv: Sequence[str]) -> str:
    """The command for a message: program, subcommand and compose project, never a value or
    a path: `docker compose config (project x)`, `git fetch`."""
    args = list(argv)
    if args and args[0] == PRLIMIT:
        args = args[args.index("--") + 1:] if "--" in args else args[1:]
    if not args:
        return "a command"
    words, project, i = [os.path.basename(args[0])], "", 1
    while i < len(args):
        arg = args[i]
        if arg in ("--project-name", "-p") and i + 1 < len(args):
            project = args[i + 1]
        if arg in _VALUE_OPTIONS:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        if not re.match(_WORD, arg) or len(words) == 3:
            break
        words.append(arg)
        if not (words[0] == "docker" and arg == "compose"):
            break
        i += 1
    return " ".join(words) + (f" (project {project})" if project else "")


def _quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_./=:@,+%" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"
