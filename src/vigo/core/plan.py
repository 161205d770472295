"""Plan: DesiredState x Observed x last state -> Plan, with a reason for every action. Pure."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from vigo.core.model import (
    CREATE,
    FAIL,
    HOLD,
    KEEP,
    PROXY,
    REMOVE,
    UNCHANGED,
    UPDATE,
    Action,
    Container,
    DesiredState,
    Observed,
    Options,
    Plan,
    Resolved,
    Stack,
)


def completed(containers: tuple[Container, ...], finishes: Collection[str]) -> dict[str, str]:
    """The containers of services meant to finish that exited 0: name -> config hash. Recorded
    at apply (`completed`), so that an idle run, which resolves nothing, knows them."""
    return {c.name: c.config_hash for c in containers
            if c.service in finishes and c.state == "exited" and c.exit_code == 0}


def is_completed(c: Container, record: Mapping[str, object]) -> bool:
    """A container that completed successfully for the configuration vigo applied."""
    done = record.get("completed")
    return (isinstance(done, dict) and bool(c.config_hash) and done.get(c.name) == c.config_hash
            and c.state == "exited" and c.exit_code == 0)


def settled(containers: tuple[Container, ...], record: Mapping[str, object],
            hashes: Mapping[str, str]) -> frozenset[str]:
    """Services whose every container completed for the configuration compose would give it
    now (`hashes`, from `compose config --hash`): `compose up` must not run them again."""
    by_service: dict[str, list[Container]] = {}
    for c in containers:
        by_service.setdefault(c.service, []).append(c)
    return frozenset(svc for svc, cs in by_service.items()
                     if all(is_completed(c, record) and hashes.get(svc) == c.config_hash
                            for c in cs))


def drift(containers: tuple[Container, ...], record: Mapping[str, object]) -> list[str]:
    """Why the containers of a stack no longer run as vigo left them ([] when they do). A
    container that completed (exited 0) for the applied configuration is as vigo left it."""
    applied = record.get("containers")
    if not isinstance(applied, dict):
        return []
    reasons = []
    seen = {c.name: c for c in containers}
    for name, config_hash in sorted(applied.items()):
        c = seen.get(name)
        if c is None:
            reasons.append(f"container {name} was removed")
        elif c.state != "running" and is_completed(c, record) and c.config_hash == config_hash:
            continue
        elif c.state == "exited" and name in (record.get("completed") or {}) and c.exit_code:
            reasons.append(f"container {name} exited with code {c.exit_code}")
        elif c.state != "running":
            reasons.append(f"container {name} is {c.state}")
        elif c.config_hash != config_hash:
            reasons.append(f"container {name} was recreated with another configuration")
    for name in sorted(set(seen) - set(applied)):
        reasons.append(f"container {name} was not started by vigo")
    return reasons


def needs_resolve(desired: DesiredState, observed: Observed,
                  records: Mapping[str, Mapping[str, object]], force: bool = False) -> list[str]:
    """Stacks that may change, and so need `compose config` before they can be planned."""
    out = []
    for stack in desired.stacks:
        if stack.problems:
            continue
        record = records.get(stack.name) or {}
        if held(stack, record) and not force:
            continue
        if force or record.get("hash") != stack.hash or drift(observed.stack(stack.name),
                                                               record):
            out.append(stack.name)
    return out


def levels(names: Collection[str], after: Mapping[str, Collection[str]]) -> list[list[str]]:
    """`names` in the order `after` asks for: each level after the stacks of the levels before
    it that it names; a name it gives that is not in `names` does not hold it back (that stack
    does not change in this run). A cycle (refused before, see xvigo.order_problems) ends up
    in one last level."""
    left, out, placed = list(names), [], set()
    while left:
        ready = [n for n in left if not (set(after.get(n, ())) & (set(left) - {n}))]
        if not ready:
            out.append(left)
            break
        out.append(ready)
        placed |= set(ready)
        left = [n for n in left if n not in placed]
    return out


def phases(the_plan: Plan, after: Mapping[str, Collection[str]] | None = None
           ) -> tuple[tuple[Action, ...], ...]:
    """The order apply runs a plan in; the actions of one phase may run in parallel. The proxy
    first (every route needs it); then the removals, which release host ports, Traefik router
    names and container names; then the creates and updates that may take them (a renamed
    stack converges in one run); the proxy's own removal last. `after` (stack -> the stacks
    it comes after, x-vigo.after): the creates and updates in levels of that order, the
    removals in the reverse order (a stack goes before those it came after)."""
    after = after or {}
    work, gone = the_plan.by_kind(CREATE, UPDATE), the_plan.by_kind(REMOVE)
    by_name = {a.stack: a for a in (*work, *gone)}
    removed = [a.stack for a in gone if a.stack != PROXY]
    before_of = {n: [m for m in removed if n in after.get(m, ())] for n in removed}
    ordered = [tuple(a for a in work if a.stack == PROXY)]
    ordered += [tuple(by_name[n] for n in level) for level in levels(removed, before_of)]
    ordered += [tuple(by_name[n] for n in level)
                for level in levels([a.stack for a in work if a.stack != PROXY], after)]
    ordered.append(tuple(a for a in gone if a.stack == PROXY))
    return tuple(phase for phase in ordered if phase)


def blocked(stack: str, after: Mapping[str, Collection[str]],
            results: Mapping[str, bool], failed: Collection[str]) -> str:
    """Why a stack is not attempted in this run ('' when it may go): a stack it comes after
    failed or is held in this run (`failed`), or was to change and did not converge
    (`results`: stack -> ok, for the stacks deployed so far)."""
    for dep in sorted(after.get(stack, ())):
        if dep in failed or results.get(dep) is False:
            return (f"{stack}: not attempted ({dep} did not converge in this run, and {stack} "
                    "comes after it: x-vigo.after, or a network or volume it creates)")
    return ""


# What the engine says when a container cannot take a host port or a name another container
# holds: a conflict with the rest of the host, not a fault of the revision.
CONFLICTS = ("port is already allocated", "address already in use", "is already in use by",
             "already exists in network")


def conflict(message: str) -> bool:
    """A failed deploy whose cause is a resource another stack held: it is tried again once
    the run's other stacks are done (an update may have released it), and never held."""
    low = message.lower()
    return any(c in low for c in CONFLICTS)


def held(stack: Stack, record: Mapping[str, object]) -> bool:
    """A revision of the stack failed its deploy and was rolled back (or could not be): it is
    not tried again until the stack changes, `vigo retry`, or `--force`."""
    return record.get("failed_hash") == stack.hash


def _short(image: str, other: str) -> str:
    """sha-abc1234 for ghcr.io/x/app:sha-abc1234 when both images share a repository."""
    repo, _, tag = image.rpartition(":")
    other_repo = other.rpartition(":")[0]
    return tag if repo and repo == other_repo and "/" not in tag else image


def _image_reasons(stack: Stack, resolved: Resolved,
                   containers: tuple[Container, ...]) -> list[str]:
    running = {c.service: c.image for c in containers}
    reasons = []
    single = len(resolved.services) == 1
    for service, image in sorted(resolved.services.items()):
        old = running.get(service)
        who = "" if single else f"{service}: "
        if old is None:
            if containers and resolved.replicas.get(service, 1):
                reasons.append(f"{who}new service" if who else f"new service {service}")
        elif old != image:
            reasons.append(f"{who}image {_short(old, image)} -> {_short(image, old)}")
    for service in sorted(set(running) - set(resolved.services)):
        reasons.append(f"service {service} removed")
    return reasons


def _change_reasons(stack: Stack, record: Mapping[str, object]) -> list[str]:
    before = record.get("digests")
    if not isinstance(before, dict):
        return ["no record of the last apply"]
    reasons = []
    for rel in sorted(set(before) | set(stack.digests)):
        if before.get(rel) == stack.digests.get(rel):
            continue
        what = "secrets in " if rel.startswith("env/") else ""
        if rel not in stack.digests:
            reasons.append(f"{rel} removed")
        elif rel not in before:
            reasons.append(f"{what}{rel} added")
        else:
            reasons.append(f"{what}{rel} changed")
    return reasons or ["vigo's rendering changed"]


def jobs_due(jobs: tuple, hashes: Mapping[str, str], record: Mapping[str, object]) -> list:
    """The release jobs (x-vigo.jobs) a deploy runs: those that never exited 0 for the
    configuration compose gives them now (`hashes`, with vigo's override). The record
    (`job_hashes`, kept whatever became of the deploy) decides, not a container: a job that
    ran is not run again by a retry, a rollback, a revert or a removed container."""
    done = record.get("job_hashes")
    done = done if isinstance(done, Mapping) else {}
    return [j for j in jobs
            if not hashes.get(j.service) or done.get(j.service) != hashes[j.service]]


def job_reasons(res: Resolved, record: Mapping[str, object]) -> list[str]:
    """What `vigo plan` says of the jobs a deploy of the stack would run."""
    when = {"before": "before any container is replaced", "after": "once the stack is healthy"}
    return [f"runs job {j.service} {when.get(j.when, j.when)}"
            for j in jobs_due(res.jobs, res.job_hashes, record)]


def plan(
    desired: DesiredState,
    observed: Observed,
    records: Mapping[str, Mapping[str, object]],
    resolved: Mapping[str, Resolved],
    failures: Mapping[str, str],
    options: Options = Options(),
) -> Plan:
    """One action per stack in the tree, and one per deployed stack no longer in it.

    `failures` are reasons found before planning (decryption, compose config) per stack."""
    actions: list[Action] = []
    for stack in desired.stacks:
        record = records.get(stack.name) or {}
        containers = observed.stack(stack.name)
        problems = list(stack.problems)
        if stack.name in failures:
            problems.append(failures[stack.name])
        res = resolved.get(stack.name)
        if res is not None and res.error:
            problems.append(res.error)
        if problems:
            actions.append(Action(stack.name, FAIL, tuple(problems)))
            continue
        if res is None and held(stack, record):
            rev = str(record.get("failed_revision") or "")[:12]
            actions.append(Action(stack.name, HOLD, (
                f"{rev} failed and is not retried; `vigo retry {stack.name}` or a new commit "
                "that changes the stack tries again",)))
            continue
        if res is None:
            actions.append(Action(stack.name, UNCHANGED))
            continue
        jobs = job_reasons(res, record)
        if not containers and not record.get("containers"):
            actions.append(Action(stack.name, CREATE,
                                  (("new stack",) if not record else ()) + tuple(jobs)))
            continue
        reasons: list[str] = []
        if record.get("hash") != stack.hash:
            images = _image_reasons(stack, res, containers)
            others = [r for r in _change_reasons(stack, record)
                      if not (images and r == f"{stack.compose_file} changed")]
            reasons += images + others
        reasons += drift(containers, record)
        reasons = reasons or [("forced" if options.force else "converge")]
        actions.append(Action(stack.name, UPDATE, tuple(reasons + jobs)))
    wanted = {s.name for s in desired.stacks}
    gone = sorted(observed.stacks - wanted, key=lambda n: (n == PROXY, n))
    refusal = ""
    # A tree with no app stacks while apps run, or nothing at all while something runs, looks
    # like a broken checkout: refuse to prune.
    empty = (not wanted and observed.stacks) or (
        not (wanted - {PROXY}) and (observed.stacks - {PROXY}))
    if gone and empty and not options.allow_empty:
        refusal = (f"the rendered tree of {desired.revision[:12] or 'the checkout'} has no "
                   f"stacks while {len(observed.stacks - {PROXY})} deployed stack(s) run: "
                   "not pruning (a broken checkout must not take the sites down); "
                   "use --allow-empty if the repo really is meant to be empty")
    for name in gone:
        if refusal:
            actions.append(Action(name, KEEP, ("not pruned: the tree has no stacks",)))
        else:
            actions.append(Action(name, REMOVE, ("no longer in the repo",)))
    return Plan(revision=desired.revision, actions=tuple(actions), refusal=refusal)


def overlay_record(desired: DesiredState) -> dict[str, object]:
    """What an applied run remembers of its host overlay, for `guard_overlay` next time."""
    if not desired.has_overlay:
        return {}
    return {"host": desired.host, "stacks": sorted(desired.overlay_stacks)}


def guard_overlay(the_plan: Plan, desired: DesiredState, last: Mapping[str, object] | None,
                  options: Options = Options()) -> Plan:
    """No prune on a changed host: when the last applied run had a hosts/<host>/ overlay and
    this tree has none (the machine's host name changed, the folder was renamed or lost), the
    stacks only that overlay had are kept, and the run is refused (exit 1), unless
    --allow-empty confirms it."""
    last = last if isinstance(last, Mapping) else {}  # a hand-edited state file: no guard
    stacks = last.get("stacks")
    if options.allow_empty or desired.has_overlay or not isinstance(stacks, list):
        return the_plan
    was = str(last.get("host") or "")
    kept = {a.stack for a in the_plan.actions if a.kind == REMOVE and a.stack in stacks}
    if not kept:
        return the_plan
    why = (f"hosts/{desired.host}/ does not exist, but the last apply ran with hosts/{was}/ "
           f"and its stack(s) {', '.join(sorted(kept))}: not pruning them (a renamed machine "
           f"must not take its sites down); if this host is {was}, set host = \"{was}\" in the "
           "settings; if the overlay was removed on purpose, run `vigo apply --allow-empty` once")
    actions = tuple(Action(a.stack, KEEP, (f"not pruned: hosts/{desired.host}/ is missing",))
                    if a.stack in kept else a for a in the_plan.actions)
    refusal = "; ".join(r for r in (the_plan.refusal, why) if r)
    return Plan(revision=the_plan.revision, actions=actions, refusal=refusal)
