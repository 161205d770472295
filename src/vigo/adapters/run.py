"""The one process runner: timeouts, a clean environment and secret masking."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

MASK = "***"
# Values shorter than this are not masked: masking "80" or "1" everywhere would garble every
# line and hide nothing. Documented in docs/security.md.
MIN_SECRET_LEN = 4


class Masker:
    """Replaces every registered secret value with *** in text. Thread safe."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            for value in values:
                for part in (value, *value.splitlines()):
                    if len(part.strip()) >= MIN_SECRET_LEN:
                        self._values.add(part.strip())

    def __call__(self, text: str) -> str:
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, MASK)
        return text


@dataclass(frozen=True)
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


# Only these variables of the caller's environment reach child processes: anything else could
# feed compose interpolation (the shell environment wins over --env-file) or alias a project.
PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "DOCKER_HOST", "DOCKER_CONFIG",
            "DOCKER_CONTEXT", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "SSH_AUTH_SOCK",
            "GIT_SSH_COMMAND", "TMPDIR",
            # a workstation's identity for the commits of init / promote (host runs pin config)
            "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
            "GNUPGHOME")


class Runner:
    """Starts every process vigo runs. `log` receives masked `$ argv` lines when verbose."""

    def __init__(self, masker: Masker | None = None, log=None, verbose: bool = False) -> None:
        self.masker = masker or Masker()
        self.log = log
        self.verbose = verbose

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
    ) -> Result:
        """Run argv; never raises on a non-zero exit. Output is masked unless mask_output is
        False (only for output that is itself the secret, e.g. `sops -d`)."""
        argv = tuple(str(a) for a in argv)
        if self.verbose and self.log:
            self.log("$ " + self.masker(" ".join(_quote(a) for a in argv)))
        try:
            proc = subprocess.run(
                argv,
                input=input,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                env=self.env(env),
                cwd=cwd,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandTimeout(
                self.masker(f"{argv[0]} {argv[1] if len(argv) > 1 else ''} timed out after "
                            f"{timeout:.0f}s")
            ) from exc
        except FileNotFoundError:
            return Result(argv, 127, "", f"{argv[0]}: command not found")
        out, err = proc.stdout, proc.stderr
        if mask_output:
            out, err = self.masker(out), self.masker(err)
        else:
            err = self.masker(err)
        return Result(argv, proc.returncode, out, err)


def _quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_./=:@,+%" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"
