"""The engine seam: every way a stack reaches an engine goes through `Engine`.

A stack runs on one engine: Docker Compose on this host (`engines/compose.py`, the default) or,
opted in per stack with `x-vigo: {engine: swarm}` or per host with the `engine` setting, Docker
Swarm (`engines/swarm.py`). The reconciler never calls `docker compose` or `docker stack` for a
stack itself: it asks the engine of that stack (`of`) to observe, deploy (create or update,
with its health gate and its rollback to the last healthy revision) and remove.

A new engine is a new module here that implements `Engine` and one line in `of`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from vigo.core.model import Action, Container, Observed, Paths, Resolved, Stack, StackResult
from vigo.core.records import record

if TYPE_CHECKING:
    from vigo.adapters.compose import Compose, Listing
    from vigo.config import Settings
    from vigo.host.state import StackRecord

COMPOSE, SWARM = "compose", "swarm"
ENGINES = (COMPOSE, SWARM)  # the values `x-vigo.engine` and the host setting `engine` take


@record(frozen=True)
class Run:
    """What an engine gets from the run it serves."""

    settings: Settings
    compose: Compose  # the docker and docker compose adapter (its runner masks and logs)
    paths: Paths
    log: Callable[[str], None]  # progress inside one stack (a terminal, -v)
    journal: Callable[[str], None]  # lines every run shows (release jobs, image removals)
    mask: Callable[[str], str] = str
    pulls: Any = None  # registries.Pulls of this run, when it deploys (credentials)


class Engine(Protocol):
    """One engine's side of a run. Implementations decide nothing about *whether* a stack
    changes (that is `core.plan`); they carry out an action and say how it ended."""

    name: ClassVar[str]

    @classmethod
    def start(cls, run: Run) -> Engine:
        """The engine for one run."""
        ...

    def observe(self, stack: str = "") -> Observed:
        """What this engine runs of this vigo instance's stacks (or of one), in one question
        to it: containers (or, for Swarm, tasks) with their labels."""
        ...

    def deploy(self, stack: Stack, action: Action, res: Resolved,
               before: tuple[Container, ...], record: StackRecord,
               revision: str) -> StackResult:
        """Create or update one stack, gate it on health, and on a failed gate return it to
        the last healthy state (`record`) and say so (`hold`, `rolled_back_to`). Never raises
        for a failure of the stack; the reconciler isolates anything else."""
        ...

    def remove(self, name: str) -> StackResult:
        """Remove a stack vigo deployed that left the repo (owned only; the plan decided)."""
        ...

    def remove_images(self, images: Iterable[str]) -> None:
        """Remove images no stack keeps for a rollback any more (never fails the run)."""
        ...


def override_file(paths: Paths, project: str) -> Path:
    """The override vigo writes for a compose project (its labels, drain-aware healthchecks)."""
    return paths.overrides / f"{project}.json"


def of(stack: Stack | Resolved | None, settings: Settings,
       record: Mapping[str, Any] | None = None) -> type[Engine]:
    """The engine a stack runs on: the one place that decides it (its x-vigo.engine, else the
    host's `engine` setting, or where its record says it last ran). Imported only when a stack
    changes (an idle run imports no deployer)."""
    if swarm_in_use(settings, {"": record} if record is not None else {}) or (
            isinstance(stack, Resolved) and "x-vigo" in stack.model):
        from vigo.host.engines import swarm

        if swarm.wanted(stack if isinstance(stack, Resolved) else None, settings, record):
            return swarm.LeaderEngine
    from vigo.host.engines.compose import ComposeEngine

    return ComposeEngine


def swarm_in_use(settings: Settings, records: dict[str, Any]) -> bool:
    """Whether a run asks the swarm too: the host's default engine is swarm, or a stack of it
    last ran there (its record says so). Cheap, and imports nothing: Compose-only hosts ask the
    swarm nothing and an idle run imports no Swarm engine."""
    return getattr(settings, "engine", "") == SWARM or any(
        isinstance(r, dict) and r.get("engine") == SWARM for r in records.values())


def swarm_shown(settings: Settings, records: dict[str, Any]) -> bool:
    """Whether `vigo status` and the metrics ask the swarm: a run does (`swarm_in_use`), or a
    stack was left to the swarm's leader (a follower manager's record: NotLeader; it never
    deployed the stack itself)."""
    return swarm_in_use(settings, records) or any(
        isinstance(r, dict) and r.get("code") == "NotLeader" for r in records.values())


def mine(containers: Iterable[Container], prefix: str) -> tuple[Container, ...]:
    """The one rule of which containers are this vigo instance's: its instance label is the
    host's `project_prefix` and its compose project is that prefix and its stack label."""
    return tuple(c for c in containers if c.instance == prefix and c.project == prefix + c.stack)


def observe(compose: Compose, prefix: str, project: str = "",
            asked: Listing | None = None) -> Observed:
    """What Compose runs of this instance: one question to the engine (its label filter drops
    other instances' containers), read through `mine`; `asked`: that question, asked earlier
    (`ask`). Here, not in engines/compose.py, so an idle run asks without importing the
    deployer."""
    found = asked.result() if asked else compose.containers(project=project, instance=prefix)
    return Observed(mine(found, prefix))


def ask(compose: Compose, prefix: str) -> Listing:
    """`observe`'s question, asked now: the engine lists while the run fetches and renders."""
    return compose.containers_soon(instance=prefix)


class Engines:
    """The engines of one run, each started once, on first use: `engines(stack)`."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._started: dict[str, Engine] = {}

    def __call__(self, stack: Stack | Resolved | None,
                 record: Mapping[str, Any] | None = None) -> Engine:
        kind = of(stack, self.run.settings, record)
        if kind.name not in self._started:
            self._started[kind.name] = kind.start(self.run)
        return self._started[kind.name]
