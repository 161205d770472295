"""The engine seam: every way a stack reaches an engine goes through `Engine`.

A stack runs on one engine: Docker Compose on this host (`engines/compose.py`, the default) or,
opted in per stack with `x-vigo: {engine: swarm}` or per host with the `engine` setting, Docker
Swarm (`engines/swarm.py`). The reconciler never calls `docker compose` or `docker stack` for a
stack itself: it asks the engine of that stack to observe, deploy (create or update, with its
health gate and its rollback to the last healthy revision) and remove.

A new engine is a new module here that implements `Engine` and one line in `ENGINES`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from vigo.core.model import Action, Container, Observed, Resolved, Stack, StackResult

COMPOSE, SWARM = "compose", "swarm"
ENGINES = (COMPOSE, SWARM)  # the values `x-vigo.engine` and the host setting `engine` take


class Engine(Protocol):
    """One engine's side of a run. Implementations decide nothing about *whether* a stack
    changes (that is `core.plan`); they carry out an action and say how it ended."""

    name: ClassVar[str]

    def observe(self) -> Observed:
        """What this engine runs of this vigo instance's stacks, in one question to it (an
        idle run asks nothing else): containers (or, for Swarm, tasks) with their labels."""
        ...

    def deploy(self, stack: Stack, action: Action, res: Resolved,
               before: tuple[Container, ...], record: dict[str, Any],
               revision: str) -> StackResult:
        """Create or update one stack, gate it on health, and on a failed gate return it to
        the last healthy state (`record`) and say so (`hold`, `rolled_back_to`). Never raises
        for a failure of the stack; the reconciler isolates anything else."""
        ...

    def remove(self, name: str) -> StackResult:
        """Remove a stack vigo deployed that left the repo (owned only; the plan decided)."""
        ...
