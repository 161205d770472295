"""Notifications: which event a run announces (pure), and the requests that announce it.

Webhook and ntfy speak on transitions only: the first failed run after a good one (or the first
run ever, failed), and the first good run after failures. healthchecks.io-style pings go out on
every run (start, then success or fail): they are a dead man's switch. Every text passed in is
already masked by the caller; nothing here reads settings files or secrets.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from vigo.core.records import asdict, field, record

FAILURE, RECOVERY = "failure", "recovery"
OK, FAILED = "ok", "failed"
BODY_LIMIT = 10_000  # characters of text in a ping or ntfy body


@record(frozen=True)
class Request:
    channel: str  # webhook, ntfy, healthchecks
    method: str
    url: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@record(frozen=True)
class Event:
    kind: str  # FAILURE or RECOVERY
    host: str
    revision: str  # the revision the run attempted ('' when the fetch failed)
    exit_code: int
    error: str  # one line per failure, masked
    failed_stacks: tuple[tuple[str, str], ...]  # (stack, its message), masked
    consecutive_failures: int  # failed runs in a row (for a recovery: before this one)
    started: str
    duration: float
    code: str = ""  # the run's named reason (core/reasons.py): StackFailed, SourceFailed, ...
    stack_codes: tuple[str, ...] = ()  # the named reason of each of failed_stacks, in order

    @property
    def title(self) -> str:
        return f"vigo on {self.host}: " + ("apply failed" if self.kind == FAILURE
                                           else "recovered")

    @property
    def text(self) -> str:
        rev = self.revision[:12] or "(no revision: the fetch failed)"
        if self.kind == RECOVERY:
            return (f"{self.host} converged again at {rev} after "
                    f"{self.consecutive_failures} failed run(s).")
        code = f", {self.code}" if self.code else ""
        lines = [f"{self.host}: vigo apply failed at {rev} (exit {self.exit_code}{code})."]
        codes = (*self.stack_codes, *[""] * len(self.failed_stacks))
        lines += [f"- [{c}] {reason}" if c else f"- {reason}"
                  for (_, reason), c in zip(self.failed_stacks, codes, strict=False)]
        if not self.failed_stacks and self.error:
            lines.append(f"- {self.error}")
        return "\n".join(lines)[:BODY_LIMIT]


def pending(announced: str | None, status: str) -> str | None:
    """The event to announce, given what was last announced and how this run ended."""
    if status == FAILED and announced != FAILED:
        return FAILURE
    if status == OK and announced == FAILED:
        return RECOVERY
    return None


def webhook(url: str, event: Event) -> Request:
    body = {"event": event.kind, "title": event.title, "text": event.text, **asdict(event)}
    body.pop("kind")
    body.pop("stack_codes")
    codes = (*event.stack_codes, *[""] * len(event.failed_stacks))
    body["failed_stacks"] = [{"stack": s, "reason": r, "code": c}
                             for (s, r), c in zip(event.failed_stacks, codes, strict=False)]
    body["duration"] = round(event.duration, 3)
    return Request("webhook", "POST", url, json.dumps(body).encode(),
                   {"Content-Type": "application/json"})


def ntfy(url: str, event: Event) -> Request:
    failure = event.kind == FAILURE
    return Request("ntfy", "POST", url, event.text.encode(), {
        "Title": event.title,
        "Priority": "high" if failure else "default",
        "Tags": "rotating_light" if failure else "white_check_mark",
    })


def ping_start(url: str) -> Request:
    return Request("healthchecks", "GET", url.rstrip("/") + "/start")


def ping_end(url: str, ok: bool, text: str) -> Request:
    base = url.rstrip("/")
    return Request("healthchecks", "POST", base if ok else base + "/fail",
                   text[:BODY_LIMIT].encode(), {"Content-Type": "text/plain; charset=utf-8"})


def deliver(requests: list[Request], send: Callable[..., str]) -> dict[str, str]:
    """Send each request; channel -> error ('' when delivered). `send` never raises."""
    return {r.channel: send(r.method, r.url, r.body, r.headers) for r in requests}
