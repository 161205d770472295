"""The `x-vigo` block of a stack's compose file: its one schema. Pure.

    x-vigo:
      health_timeout: 300          # seconds the health gate waits (1 to 3600)
      after: [db]                  # stacks that converge before this one in the same run
      jobs:                        # services that run once per revision that changes them
        migrate: {when: before, timeout: 300}   # before any container is replaced
        warm: {when: after}                     # once the new revision passed its gate
      engine: swarm                # compose (the default) or swarm (docs/swarm.md)

`vigo check` (core/lint/xvigo.py) and apply read it through `parse`, the one parser; a stack
whose block has a problem is not applied.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from vigo.core.model import PROXY
from vigo.core.records import record

KEY = "x-vigo"
BEFORE, AFTER = "before", "after"
JOB_TIMEOUT = 300  # seconds a job may run when it names no timeout
MAX_TIMEOUT = 3600
TOP_KEYS = ("health_timeout", "after", "jobs", "engine")
ENGINES = ("compose", "swarm")  # the values of x-vigo.engine (host/engines: COMPOSE, SWARM)
JOB_KEYS = ("when", "timeout")


@record(frozen=True)
class Job:
    service: str
    when: str  # BEFORE or AFTER
    timeout: int = JOB_TIMEOUT


@record(frozen=True)
class Options:
    health_timeout: int | None = None
    after: tuple[str, ...] = ()
    jobs: tuple[Job, ...] = ()
    engine: str = ""  # '' when the block names none: the host's setting decides

    def job_services(self) -> frozenset[str]:
        return frozenset(j.service for j in self.jobs)


@record(frozen=True)
class Problem:
    key: str  # where in the block, e.g. "x-vigo.jobs.migrate.when"
    message: str
    fix: str

    def line(self) -> str:
        return f"{self.key}: {self.message}; fix: {self.fix}"


def _seconds(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_TIMEOUT


def parse(block: object, services: Mapping[str, Any] | None = None,
          stack: str = "") -> tuple[Options, list[Problem]]:
    """The options of an `x-vigo` block (None: no block) and what is wrong with it. `services`:
    the compose file's services, to check that every job is one; `stack`: its own name."""
    problems: list[Problem] = []
    if block is None:
        return Options(), problems
    if not isinstance(block, Mapping):
        return Options(), [Problem(KEY, f"is a {type(block).__name__}, not a mapping",
                                   "write `x-vigo: {after: [db], jobs: {...}}` or drop it")]
    for key in block:
        if key not in TOP_KEYS:
            problems.append(Problem(f"{KEY}.{key}", "is not a vigo option",
                                    f"use one of {', '.join(TOP_KEYS)}"))
    timeout = block.get("health_timeout")
    if timeout is not None and not _seconds(timeout):
        problems.append(Problem(f"{KEY}.health_timeout", f"is {timeout!r}",
                                f"a whole number of seconds from 1 to {MAX_TIMEOUT}"))
        timeout = None
    after: list[str] = []
    raw_after = block.get("after") or []  # compose's resolved model gives `after: []` as null
    if isinstance(raw_after, str):
        raw_after = [raw_after]
    if not isinstance(raw_after, list):
        problems.append(Problem(f"{KEY}.after", f"is a {type(raw_after).__name__}",
                                "a list of stack names: `after: [db]`"))
        raw_after = []
    if raw_after and stack == PROXY:
        problems.append(Problem(f"{KEY}.after", "is set on the proxy, which always runs first",
                                "drop it"))
        raw_after = []
    for name in raw_after:
        if not isinstance(name, str) or not name:
            problems.append(Problem(f"{KEY}.after", f"holds {name!r}, not a stack name",
                                    "a list of stack names: `after: [db]`"))
        elif name == stack:
            problems.append(Problem(f"{KEY}.after", f"names the stack itself ({name})",
                                    "drop it"))
        elif name not in after:
            after.append(name)
    jobs: list[Job] = []
    raw_jobs = block.get("jobs") or {}
    if not isinstance(raw_jobs, Mapping):
        problems.append(Problem(f"{KEY}.jobs", f"is a {type(raw_jobs).__name__}",
                                "a mapping of service name to {when: before|after, timeout: N}"))
        raw_jobs = {}
    for service, spec in raw_jobs.items():
        where = f"{KEY}.jobs.{service}"
        found = _job(where, str(service), spec, services, problems)
        if found is not None:
            jobs.append(found)
    engine = block.get("engine") or ""
    if engine and engine not in ENGINES:
        problems.append(Problem(f"{KEY}.engine", f"is {engine!r}",
                                f"one of {', '.join(ENGINES)} (docs/swarm.md)"))
        engine = ""
    # in name order, as compose's resolved model gives them (it sorts the keys)
    return Options(timeout, tuple(after), tuple(sorted(jobs, key=lambda j: j.service)),
                   str(engine)), problems


def _job(where: str, service: str, spec: object, services: Mapping[str, Any] | None,
         problems: list[Problem]) -> Job | None:
    if spec in (BEFORE, AFTER):
        spec = {"when": spec}
    if not isinstance(spec, Mapping):
        problems.append(Problem(where, f"is {spec!r}", "write `{when: before, timeout: 300}`"))
        return None
    bad = len(problems)
    for key in spec:
        if key not in JOB_KEYS:
            problems.append(Problem(f"{where}.{key}", "is not a job option",
                                    f"use one of {', '.join(JOB_KEYS)}"))
    when = spec.get("when")
    if when not in (BEFORE, AFTER):
        problems.append(Problem(f"{where}.when", f"is {when!r}",
                                f"`{BEFORE}` (before any container is replaced) or `{AFTER}` "
                                "(once the new revision is healthy)"))
    timeout = spec.get("timeout", JOB_TIMEOUT)
    if not _seconds(timeout):
        problems.append(Problem(f"{where}.timeout", f"is {timeout!r}",
                                f"a whole number of seconds from 1 to {MAX_TIMEOUT}"))
    if services is not None:
        svc = services.get(service)
        if not isinstance(svc, Mapping):
            problems.append(Problem(where, f"names no service of this compose file ({service})",
                                    "name a service, or drop the job"))
        else:
            for other, osvc in services.items():
                deps = osvc.get("depends_on") if isinstance(osvc, Mapping) else None
                if other != service and isinstance(deps, Mapping | list) and service in deps:
                    problems.append(Problem(
                        where, f"service {other} depends on it, so compose would start the job "
                        "with it", "drop the depends_on: vigo runs jobs itself, at their time"))
            for key in ("scale",):
                if svc.get(key) not in (None, 1):
                    problems.append(Problem(where, f"has {key}: {svc.get(key)}",
                                            "a job runs one container: drop it"))
            replicas = (svc.get("deploy") or {}).get("replicas") if isinstance(
                svc.get("deploy"), Mapping) else None
            if replicas not in (None, 1):
                problems.append(Problem(where, f"has deploy.replicas: {replicas}",
                                        "a job runs one container: drop it"))
    if len(problems) > bad:
        return None
    return Job(service, str(when), int(timeout))  # type: ignore[call-overload]


def cycle(after: Mapping[str, Collection[str]]) -> list[str]:
    """A chain of `after` that comes back to its start ([] when there is none), e.g.
    ['a', 'b', 'a']: the first found in name order."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str]:
        if name in path:
            return [*path[path.index(name):], name]
        if name in done:
            return []
        for dep in sorted(after.get(name, ())):
            found = visit(dep, [*path, name])
            if found:
                return found
        done.add(name)
        return []

    for name in sorted(after):
        found = visit(name, [])
        if found:
            return found
    return []


def order_problems(after: Mapping[str, Collection[str]], stacks: Collection[str]
                   ) -> dict[str, str]:
    """stack -> why its `after` cannot be honoured: a name that is no stack, or a cycle (every
    stack of the chain is named)."""
    out: dict[str, str] = {}
    for name, deps in sorted(after.items()):
        unknown = sorted(set(deps) - set(stacks))
        if unknown:
            out[name] = (f"x-vigo.after names {', '.join(unknown)}, which is no stack of this "
                         "host; fix: name a stack under stacks/, or drop it")
    chain = cycle({k: [d for d in v if d in stacks] for k, v in after.items()})
    if chain:
        for name in chain[:-1]:
            out.setdefault(name, f"x-vigo.after makes a cycle: {' -> '.join(chain)}; fix: "
                           "drop one of these `after` entries")
    return out


# -- implicit order: the networks and volumes stacks share -------------------------------------

KINDS = ("networks", "volumes")


@record(frozen=True)
class Shared:
    """What a compose file creates and what it uses as `external` (kind, name). A created name
    that starts with `*` is known only up to the project prefix (offline: `*db_data` for the
    volume `data` of stack `db`)."""

    creates: frozenset[tuple[str, str]] = frozenset()
    uses: frozenset[tuple[str, str]] = frozenset()


def _external(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true") or (
        isinstance(value, Mapping))


def shared(doc: object, stack: str, project: str | None = None) -> Shared:
    """The networks and volumes of a compose file (text or resolved model); `project`: the
    compose project name when known (at apply), else names are known up to the prefix."""
    creates: set[tuple[str, str]] = set()
    uses: set[tuple[str, str]] = set()
    if not isinstance(doc, Mapping):
        return Shared()
    for kind in KINDS:
        decls = doc.get(kind)
        decls = decls if isinstance(decls, Mapping) else {}
        keys = [*decls, *(["default"] if kind == "networks" and "default" not in decls else [])]
        for key in keys:
            decl = decls.get(key)
            decl = decl if isinstance(decl, Mapping) else {}
            ext = decl.get("external")
            name = decl.get("name")
            if _external(ext):
                legacy = ext.get("name") if isinstance(ext, Mapping) else None
                uses.add((kind, str(legacy or name or key)))
            elif name:
                creates.add((kind, str(name)))
            else:
                creates.add((kind, f"{project}_{key}" if project is not None
                             else f"*{stack}_{key}"))
    return Shared(frozenset(creates), frozenset(uses))


def implicit_after(shares: Mapping[str, Shared], exclude: Collection[str] = ()
                   ) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """stack -> the stacks that create an external network or volume it uses (an order as
    if it said `after:`), and the (stack, kind, name) that no stack creates. Stacks in
    `exclude` (the proxy, which always runs first) give no order but count as creators."""
    after: dict[str, set[str]] = {}
    orphans: list[tuple[str, str, str]] = []
    # who creates what, by (kind, name); a `*suffix` name by (kind, suffix): a name is then
    # looked up with each of its suffixes (a `*x` matches every name ending in x), not
    # compared with every stack's
    creators: dict[tuple[str, str], set[str]] = {}
    for other, theirs in shares.items():
        for kind, created in theirs.creates:
            creators.setdefault((kind, created), set()).add(other)
    wild = {(kind, created[1:]): who for (kind, created), who in creators.items()
            if created.startswith("*")}
    for stack, mine in sorted(shares.items()):
        for kind, name in sorted(mine.uses):
            owners = set(creators.get((kind, name), ()))
            for i in range(len(name) + 1):
                owners |= wild.get((kind, name[i:]), set())
            owners.discard(stack)
            if not owners:
                orphans.append((stack, kind, name))
            elif owners - set(exclude):
                after.setdefault(stack, set()).update(owners - set(exclude))
    return after, orphans
