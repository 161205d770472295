"""The outcome of one run: what `vigo apply` and `vigo plan` print, return and save, and the
exit codes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vigo.core.model import Plan, StackResult
from vigo.host import state

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_SOURCE, EXIT_LOCKED = 0, 1, 2, 3, 75


@dataclass
class Report:
    command: str
    host: str
    revision: str = ""
    exit_code: int = EXIT_OK
    results: list[StackResult] = field(default_factory=list)
    plan: Plan | None = None
    warnings: list[str] = field(default_factory=list)
    error: str = ""
    started: str = field(default_factory=state.now)
    duration: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "command": self.command, "host": self.host, "revision": self.revision,
            "exit_code": self.exit_code, "error": self.error, "warnings": self.warnings,
            "started": self.started, "duration": round(self.duration, 3),
            "stacks": [r.to_json() for r in self.results],
        }
        if self.plan is not None:
            out["plan"] = [{"stack": a.stack, "action": a.kind, "reasons": list(a.reasons)}
                           for a in self.plan.actions]
            out["refusal"] = self.plan.refusal
        return out
