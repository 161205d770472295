"""A Runner that starts nothing: it records each command an adapter builds (argv, the
environment it adds, stdin, cwd, timeout, masking) and answers from a table of canned results.
As borgmatic asserts the exact borg argv, tests assert the exact argv of git, sops, compose,
systemctl and the tool probes, and that no secret is in any argv.

    runner = RecordingRunner()
    runner.on("rev-parse", stdout="0123abcd\\n")          # argv holds these words, in order
    runner.on("fetch", returncode=128, stderr="fatal: x", times=1)  # the first fetch only
    Git(runner).fetch(...)
    assert runner.argvs == [...]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from vigo.adapters.run import Masker, Result, Runner


@dataclass(frozen=True)
class Call:
    argv: tuple[str, ...]
    env: Mapping[str, str]  # what the adapter adds to the runner's clean environment
    stdin: str | None
    cwd: str | None
    timeout: float
    mask_output: bool
    limit_data: int | None

    def words(self) -> str:
        return " ".join(self.argv)


@dataclass
class _Answer:
    words: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    times: int | None  # None: every time
    effect: Callable[[Call], None] | None = field(default=None)
    stdin_has: str | None = None


def _has_in_order(argv: Sequence[str], words: Sequence[str]) -> bool:
    it = iter(argv)
    return all(any(a == w for a in it) for w in words)


class RecordingRunner(Runner):
    def __init__(self, masker: Masker | None = None) -> None:
        super().__init__(masker)
        self.calls: list[Call] = []
        self._answers: list[_Answer] = []

    def on(self, *words: str, returncode: int = 0, stdout: str = "", stderr: str = "",
           times: int | None = None, effect: Callable[[Call], None] | None = None,
           stdin_has: str | None = None) -> RecordingRunner:
        """Answer the commands whose argv holds `words` in this order (and whose stdin holds
        `stdin_has`, if given); the first matching answer wins, `times` uses it up. `effect`
        runs first: a command's side effect on the disk (git init's folder) that the adapter
        then reads. Without a match: exit 0, no output."""
        self._answers.append(_Answer(words, returncode, stdout, stderr, times, effect,
                                     stdin_has))
        return self

    def run(self, argv: Sequence[str], *, timeout: float = 300,
            env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
            input: str | None = None, mask_output: bool = True,
            limit_data: int | None = None) -> Result:
        call = Call(tuple(str(a) for a in argv), dict(env or {}), input,
                    None if cwd is None else str(cwd), timeout, mask_output, limit_data)
        self.calls.append(call)
        for answer in self._answers:
            if answer.times == 0 or not _has_in_order(call.argv, answer.words):
                continue
            if answer.stdin_has is not None and answer.stdin_has not in (call.stdin or ""):
                continue
            if answer.times is not None:
                answer.times -= 1
            if answer.effect is not None:
                answer.effect(call)
            out, err = answer.stdout, answer.stderr
            if mask_output:
                out = self.masker(out)
            return Result(call.argv, answer.returncode, out, self.masker(err))
        return Result(call.argv, 0, "", "")

    def pipe(self, argv: Sequence[str], data: bytes, *, timeout: float = 60,
             limit: int | None = None) -> tuple[int, bytes, str]:
        """Runner.pipe, recorded like `run` (its stdin: `data` as text; its answer: stdout)."""
        res = self.run(argv, timeout=timeout, input=data.decode("utf-8", "replace"),
                       mask_output=False)
        return res.returncode, res.stdout.encode(), res.stderr

    @property
    def argvs(self) -> list[tuple[str, ...]]:
        return [c.argv for c in self.calls]

    def assert_not_in_argv(self, *secrets: str) -> None:
        """No secret in any argv (the process list shows argv to every user)."""
        for call in self.calls:
            for secret in secrets:
                assert secret not in call.words(), f"{secret!r} is in the argv {call.argv}"
