"""The Swarm engine: a stack deployed with `docker stack deploy` on a swarm this host manages.

One deploy: the stack's secrets created by content (`<stack>_<key>_<hash8>`), the stack file
(core/swarm.py) written to the secrets tmpfs, `docker stack deploy --prune
--with-registry-auth`, then the wait: every service's UpdateStatus against the marker taken
before, and its tasks (`core.swarm.verdict`); the CLI's exit code says nothing of the result
(it exits 0 after Swarm rolled an update back). A failed gate (rolled back or paused by Swarm,
tasks that keep failing, a wait that never ends) deploys the last healthy stack file again and
holds the revision, as for Compose stacks. Only the swarm's leader applies (`leader`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from vigo.adapters import fs
from vigo.adapters.compose import DockerError
from vigo.adapters.run import CommandTimeout, pause
from vigo.adapters.swarm import Swarm
from vigo.core import dotenv, registries
from vigo.core import swarm as core
from vigo.core.model import (
    CREATE,
    LABEL_INSTANCE,
    LABEL_STACK,
    REMOVE,
    Action,
    Container,
    Observed,
    Paths,
    Resolved,
    Stack,
    StackResult,
)
from vigo.core.records import field, record

POLL = 1.0


def containers(services: tuple[core.Service, ...]) -> tuple[Container, ...]:
    """Services as the plan sees containers: one per service, its hash label as the config
    hash. Swarm keeps the replicas running itself; `status` shows running/desired."""
    return tuple(Container(id=s.id, name=s.name, stack=s.stack, instance=s.instance,
                           project=s.namespace, service=s.service, state="running",
                           status=f"{s.running}/{s.desired} running", image=s.image,
                           config_hash=s.config_hash) for s in services)


def leader(api: Swarm) -> str:
    """'' when this node is the swarm's leader (it applies), else why it does not: not in a
    swarm, a worker, or a manager that is not the leader (and which one is)."""
    info = (api.info().get("Swarm") or {})
    if info.get("LocalNodeState") != "active":
        return (f"this engine is not part of an active swarm (its state: "
                f"{info.get('LocalNodeState') or 'inactive'}); fix: `docker swarm init`, or "
                "join it to the swarm (docs/swarm.md)")
    if not info.get("ControlAvailable"):
        return "this node is a swarm worker; vigo runs on the managers (docs/swarm.md)"
    me = api.node(str(info.get("NodeID") or ""))
    if (me.get("ManagerStatus") or {}).get("Leader"):
        return ""
    name = ""
    try:
        for node in api.nodes():
            if (node.get("ManagerStatus") or {}).get("Leader"):
                name = str((node.get("Description") or {}).get("Hostname") or node.get("ID"))
    except DockerError:
        pass
    return "not the leader" + (f" (the swarm leader {name} applies)" if name else "")


@record
class SwarmEngine:
    name: ClassVar[str] = "swarm"

    api: Swarm
    project_prefix: str
    paths: Paths
    health_timeout: int
    log: Callable[[str], None]
    sleep: Callable[[float], None] = pause
    pulls: registries.Pulls = field(default_factory=registries.Pulls)

    def namespace(self, stack: str) -> str:
        return self.project_prefix + stack

    def stack_path(self, namespace: str, good: bool = False) -> Path:
        return self.paths.secrets / ("good" if good else "swarm") / f"{namespace}.swarm.json"

    # -- observe -------------------------------------------------------------------------------

    def services(self, namespace: str = "") -> tuple[core.Service, ...]:
        labels = [LABEL_STACK, f"{LABEL_INSTANCE}={self.project_prefix}"]
        if namespace:
            labels.append(f"{core.SWARM_NAMESPACE}={namespace}")
        return tuple(s for s in core.parse_services(self.api.services(labels))
                     if s.instance == self.project_prefix
                     and s.namespace == self.namespace(s.stack))

    def observe(self) -> Observed:
        return Observed(containers(self.services()))

    def status_lines(self) -> list[str]:
        """Per service: its tasks running on nodes that are up (a task of a node that is
        down still reads `running` in the swarm's count until Swarm gives up on it), the
        nodes, the state of its last update, and the nodes that are down with a task."""
        return core.status_lines(*self.placed())

    def samples(self) -> tuple[Any, ...]:
        """The metrics of each service (host/metrics.ServiceSample), counted as `status`."""
        from vigo.host.metrics import ServiceSample

        services, where, lost = self.placed()
        return tuple(ServiceSample(s.stack, s.service, len(where.get(s.id, ())), s.desired,
                                   s.update, len(set(lost.get(s.id, ())))) for s in services)

    def placed(self) -> tuple[tuple[core.Service, ...], dict[str, list[str]],
                              dict[str, list[str]]]:
        """The services, and per service id the nodes of its running tasks that are up and
        those that are down."""
        services = self.services()
        tasks = self.api.tasks([s.id for s in services])
        nodes = {str(n.get("ID")): n for n in self.api.nodes()}

        def name(node_id: str) -> str:
            node = nodes.get(node_id) or {}
            return str((node.get("Description") or {}).get("Hostname") or node_id[:12])
        where: dict[str, list[str]] = {}
        lost: dict[str, list[str]] = {}
        for t in tasks:
            if t.get("DesiredState") != "running" or (t.get("Status") or {}).get(
                    "State") != "running":
                continue
            node_id = str(t.get("NodeID"))
            up = ((nodes.get(node_id) or {}).get("Status") or {}).get("State") == "ready"
            (where if up else lost).setdefault(str(t.get("ServiceID")), []).append(
                name(node_id))
        return services, where, lost

    # -- deploy --------------------------------------------------------------------------------

    def _secret_values(self, stack: Stack, res: Resolved) -> tuple[dict[str, str], str]:
        """The value of each secret the stack's services use, from the env files given to
        its interpolation (key = the variable) or from a file of the stack; why not, if not."""
        env: dict[str, str] = {}
        for rel in stack.interpolation_env:
            try:
                env.update(dotenv.parse_written((self.paths.secrets / rel).read_text()))
            except OSError as exc:
                return {}, f"cannot read {rel}: {exc.strerror or exc}"
        values = {}
        for key, (kind, source) in core.secret_sources(res.model).items():
            if kind == "environment":
                if source not in env:
                    return {}, (f"secret {key}: {source} is in none of the stack's env files "
                                f"({', '.join(stack.interpolation_env) or 'none'})")
                values[key] = env[source]
            else:
                path = Path(source)
                if not path.is_absolute():
                    path = self.paths.runtime / stack.folder / path
                try:
                    values[key] = path.read_text()
                except OSError as exc:
                    return {}, f"secret {key}: cannot read {source}: {exc.strerror or exc}"
        return values, ""

    def _secrets(self, stack: Stack, namespace: str, values: dict[str, str]) -> dict[str, str]:
        """Create the secrets that do not exist yet; key -> Swarm secret name."""
        names = {key: core.secret_name(namespace, key, value.encode())
                 for key, value in values.items()}
        have = {str((s.get("Spec") or {}).get("Name")) for s in self.api.secrets(
            [f"{LABEL_STACK}={stack.name}", f"{LABEL_INSTANCE}={self.project_prefix}"])}
        for key, name in sorted(names.items()):
            if name in have:
                continue
            made = self.api.secret_create(name, values[key], {
                LABEL_STACK: stack.name, LABEL_INSTANCE: self.project_prefix,
                core.LABEL_SECRET: key})
            if not made.ok:
                raise DockerError(f"docker secret create {name}: {made.error(2)}")
            self.log(f"{stack.name}: secret {key}: created {name}")
        return names

    def _prune_secrets(self, stack: str, keep: set[str]) -> None:
        """Remove the stack's secrets no service uses any more (Swarm refuses one in use)."""
        try:
            old = [str((s.get("Spec") or {}).get("Name")) for s in self.api.secrets(
                [f"{LABEL_STACK}={stack}", f"{LABEL_INSTANCE}={self.project_prefix}"])]
            gone = sorted(n for n in old if n not in keep)
            if gone and self.api.secret_rm(gone).ok:
                self.log(f"{stack}: removed {len(gone)} secret(s) no service uses")
        except (DockerError, CommandTimeout):
            pass  # they are removed by a later run

    def deploy(self, stack: Stack, action: Action, res: Resolved,
               before: tuple[Container, ...], record: dict[str, Any],
               revision: str) -> StackResult:
        namespace = self.namespace(stack.name)
        timeout = res.health_timeout or self.health_timeout
        why = list(action.reasons)
        try:
            place, nodes = self._placement(stack)
            if place.error:
                return StackResult(stack.name, action.kind, False, f"{stack.name}: failed "
                                   f"({place.error}; the running services were left as "
                                   "they are)")
            why += [w for w in (*place.warnings, place.line()) if w]
            values, problem = self._secret_values(stack, res)
            if problem:
                return StackResult(stack.name, action.kind, False, f"{stack.name}: failed "
                                   f"({problem}; the running services were left as they are)")
            secrets = self._secrets(stack, namespace, values)
            doc = core.stack_file(res.model, namespace, stack.name, self.project_prefix,
                                  secrets, place.constraint(namespace))
            path = self.stack_path(namespace)
            fs.write_secret(path, json.dumps(doc, indent=1), root=self.paths.secrets)
            self._label(stack.name, core.labels_to_add(namespace, place, nodes))
            old = self.services(namespace)
            wanted = {f"{namespace}_{svc}" for svc in doc["services"]}
            whole = next(iter(doc["services"].values()))["deploy"]["labels"][core.LABEL_HASH]
            if old and {s.name for s in old} == wanted and all(
                    s.stack_hash == whole for s in old):
                failure = self._wait(namespace, doc, {}, _now(), timeout)
                if not failure:
                    self._unlabel(stack.name, namespace, place)
                    text = "; ".join(w for w in (*place.warnings, place.line()) if w)
                    return StackResult(stack.name, action.kind, True, f"{stack.name}: "
                                       "unchanged (the swarm runs this stack file already"
                                       + (f"; {text})" if text else ")"),
                                       containers=containers(self.services(namespace)))
            failure = self._apply(namespace, path, doc, timeout)
            if failure:
                return self._rollback(stack, action, failure, record, revision, timeout)
        except (DockerError, CommandTimeout, OSError) as exc:
            return StackResult(stack.name, action.kind, False, f"{stack.name}: failed ({exc})")
        self._unlabel(stack.name, namespace, place)
        try:
            fs.write_secret(self.stack_path(namespace, good=True), json.dumps(doc, indent=1),
                            root=self.paths.secrets)
        except OSError as exc:
            why.append(f"its healthy state was not saved for a rollback: {exc}")
        self._prune_secrets(stack.name, set(secrets.values()))
        verb = "created" if action.kind == CREATE else "updated"
        text = "; ".join(why)
        return StackResult(stack.name, action.kind, True,
                           f"{stack.name}: {verb} on the swarm" + (f" ({text})" if text else ""),
                           containers=containers(self.services(namespace)))

    # -- placement (docs/swarm.md#placement) ---------------------------------------------------

    def _placement(self, stack: Stack) -> tuple[core.Placement, tuple[core.NodeInfo, ...]]:
        """Where the stack runs, from its placement folders and the swarm's nodes (read only
        here, when the stack deploys; never by an idle run)."""
        nodes = core.parse_nodes(self.api.nodes())
        folder = stack.folder + "/"
        rendered = {rel[len(folder):]: sha for rel, sha in stack.digests.items()
                    if rel.startswith(folder)}
        problems = core.placement_problems(stack.name, stack.placement, rendered)
        return core.placement(stack.name, stack.placed_on, [n.hostname for n in nodes],
                              problems), nodes

    def _label(self, stack: str, add: dict[str, str]) -> None:
        """Set the placement label on the nodes of the set that lack it, before the deploy
        (the new constraint must find its nodes)."""
        for node_id, label in sorted(add.items()):
            out = self.api.node_labels(node_id, {label: "true"})
            if not out.ok:
                raise DockerError(f"docker node update {node_id[:12]}: {out.error(2)}")
            self.log(f"{stack}: node {node_id[:12]}: label {label} set")

    def _unlabel(self, stack: str, namespace: str, keep: core.Placement) -> None:
        """Once the stack file of `keep` converged: remove this stack's other placement
        labels (an old set's, or `keep`'s on nodes out of it). Never fails the stack: a
        label left behind is named by no constraint, and a later deploy removes it."""
        try:
            nodes = core.parse_nodes(self.api.nodes())
            for node_id, labels in sorted(core.labels_to_remove(namespace, keep, nodes).items()):
                out = self.api.node_labels(node_id, {}, labels)
                if out.ok:
                    self.log(f"{stack}: node {node_id[:12]}: label(s) {', '.join(labels)} "
                             "removed")
        except (DockerError, CommandTimeout):
            pass

    def _kept(self, namespace: str, doc: dict[str, Any]) -> core.Placement:
        """The placement a stack file deployed again (a rollback) keeps: its label on the
        nodes that carry it now (they were never unlabelled while it could come back)."""
        value = core.placed_value(doc, namespace)
        if not value:
            return core.Placement()
        label = core.place_label(namespace, value)
        nodes = core.parse_nodes(self.api.nodes())
        return core.Placement(tuple(sorted(n.hostname for n in nodes
                                           if n.labels.get(label) == "true")), value)

    def _allowed(self, namespace: str, doc: dict[str, Any]) -> frozenset[str]:
        """The ids of the nodes the stack file's placement by vigo allows (every node when it
        has none): a placement change rolls only tasks on other nodes (`core.changed`)."""
        value = core.placed_value(doc, namespace)
        label = core.place_label(namespace, value) if value else ""
        return frozenset(n.id for n in core.parse_nodes(self.api.nodes())
                         if not label or n.labels.get(label) == "true")

    def _apply(self, namespace: str, path: Path, doc: dict[str, Any], timeout: float) -> str:
        """Deploy a stack file and wait for it: '' when every service converged healthy."""
        before = {str((row.get("Spec") or {}).get("Name")): row for row in self.api.services(
            [f"{core.SWARM_NAMESPACE}={namespace}"])}
        marks = {name: core.mark(row) for name, row in before.items()}
        since = _now()
        images = [str(s.get("image") or "") for s in doc["services"].values()]
        out = self.api.deploy(namespace, path, self.pulls.for_images(images))
        if not out.ok:
            return f"docker stack deploy: {out.error(3)}"
        return self._wait(namespace, doc, marks, since, timeout, before)

    def _wait(self, namespace: str, doc: dict[str, Any], marks: dict[str, str], since: str,
              timeout: float, before: dict[str, Any] | None = None) -> str:
        start = time.monotonic()
        told = start
        names = [f"{namespace}_{svc}" for svc in doc["services"]]
        nodes = 0
        allowed: frozenset[str] | None = None
        while True:
            rows = [r for r in self.api.services([f"{core.SWARM_NAMESPACE}={namespace}"])
                    if (r.get("Spec") or {}).get("Name") in names]
            if any("Global" in ((r.get("Spec") or {}).get("Mode") or {}) for r in rows):
                nodes = nodes or sum(1 for n in self.api.nodes() if (n.get("Spec") or {}).get(
                    "Availability") == "active" and (n.get("Status") or {}).get(
                    "State") == "ready")
            tasks = self.api.tasks([str(r.get("ID")) for r in rows])
            if before and allowed is None:
                allowed = self._allowed(namespace, doc)
            updating = {name for r in rows if (name := str(r["Spec"]["Name"])) in (
                before or {}) and core.changed(before[name], r, tasks, allowed)
                } if before else set()
            verdict = core.verdict(rows, tasks, marks, since, nodes or 1, updating, _now())
            if len(rows) < len(names):
                verdict = core.Verdict(core.WAIT, "services are being created")
            if verdict.status == core.OK:
                return ""
            if verdict.status == core.FAIL:
                return verdict.reason
            now = time.monotonic()
            if now - start >= timeout:
                return f"not converged after {timeout:.0f}s: {verdict.reason}"
            if now - told >= 5:
                told = now
                self.log(f"{namespace}: waiting for the swarm: {verdict.reason} "
                         f"({now - start:.0f}s of {timeout:.0f}s)")
            self.sleep(POLL)

    def _rollback(self, stack: Stack, action: Action, reason: str, record: dict[str, Any],
                  revision: str, timeout: float) -> StackResult:
        namespace = self.namespace(stack.name)
        good = self.stack_path(namespace, good=True)
        last = str(record.get("revision") or "")[:12]
        if not record.get("containers") or not good.is_file():
            note = ("nothing to roll back to" if not record.get("containers") else
                    "its last healthy state is lost (the secrets tmpfs was cleared)")
            return StackResult(stack.name, action.kind, False,
                               f"{stack.name}: failed ({reason}; {note})", hold=True)
        self.log(f"{stack.name}: {reason}; rolling back to {last}")
        doc = json.loads(good.read_text())
        failure = self._apply(namespace, good, doc, max(timeout, self.health_timeout))
        if failure:  # every placement label stays: either stack file may run
            return StackResult(stack.name, action.kind, False,
                               f"{stack.name}: failed ({reason}); the rollback to {last} "
                               f"failed too: {failure}", hold=True)
        self._prune_after_rollback(stack.name, namespace, doc)
        with contextlib.suppress(DockerError, CommandTimeout):  # the rollback converged:
            self._unlabel(stack.name, namespace, self._kept(namespace, doc))  # new labels go
        return StackResult(stack.name, action.kind, False,
                           f"{stack.name}: rolled back to {last}; {revision[:12]} failed: "
                           f"{reason}", containers=containers(self.services(namespace)),
                           hold=True, rolled_back_to=last)

    def _prune_after_rollback(self, stack: str, namespace: str, doc: dict[str, Any]) -> None:
        """Once the rollback converged, the secrets the failed revision created go: every
        secret of the stack's (its labels) but those the restored stack file names and those a
        service of the namespace still references (never one in use)."""
        try:
            keep = used_secrets(doc, self.api.services([f"{core.SWARM_NAMESPACE}={namespace}"]))
        except (DockerError, CommandTimeout):
            return  # the next good deploy removes them
        self._prune_secrets(stack, keep)

    # -- remove --------------------------------------------------------------------------------

    def remove(self, name: str) -> StackResult:
        namespace = self.namespace(name)
        try:
            out = self.api.rm(namespace)
            if not out.ok:
                return StackResult(name, REMOVE, False, f"{name}: failed to remove (docker "
                                   f"stack rm: {out.error(3)})")
            for path in (self.stack_path(namespace), self.stack_path(namespace, good=True)):
                fs.remove(path, root=self.paths.secrets)
            deadline = time.monotonic() + 60  # secrets go once the tasks that use them have
            while self.services(namespace) and time.monotonic() < deadline:
                self.sleep(POLL)
            self._prune_secrets(name, set())
            self._unlabel(name, namespace, core.Placement())  # its placement labels go too
        except (DockerError, CommandTimeout) as exc:
            return StackResult(name, REMOVE, False, f"{name}: failed to remove ({exc})")
        return StackResult(name, REMOVE, True, f"{name}: removed from the swarm (no longer "
                           "in the repo)")


def used_secrets(doc: dict[str, Any], rows: list[dict[str, Any]]) -> set[str]:
    """The Swarm secrets a stack file names (`secrets: {key: {name: ...}}`) and those the
    services (`GET /services` rows) reference in their task template."""
    names = {str(spec.get("name")) for spec in (doc.get("secrets") or {}).values()
             if isinstance(spec, dict) and spec.get("name")}
    for row in rows:
        spec = ((row.get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}
        names |= {str(ref.get("SecretName")) for ref in spec.get("Secrets") or ()
                  if isinstance(ref, dict) and ref.get("SecretName")}
    return names


def _now() -> str:
    """An RFC 3339 time in the engine's form, to compare with task timestamps."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- what the reconciler calls (the dispatch: one line each in host/reconcile.py) -------------

def wanted(res: Resolved | None, settings: Any, record: dict[str, Any] | None = None) -> bool:
    """Whether a stack concerns the Swarm engine: its x-vigo.engine, else the host setting
    `engine`, says swarm, or it last ran on the swarm (`record["engine"]`)."""
    return engine_of(res, settings) == SwarmEngine.name or (record or {}).get(
        "engine") == SwarmEngine.name


def engine_of(res: Resolved | None, settings: Any) -> str:
    from vigo.core import xvigo

    block = (res.model if res is not None else {}).get(xvigo.KEY)
    chosen = xvigo.parse(block)[0].engine if isinstance(block, dict) else ""
    return chosen or str(getattr(settings, "engine", "") or "compose")


def observes(settings: Any, records: dict[str, Any]) -> bool:
    """Whether a run asks the swarm too (the one rule: engines.swarm_in_use)."""
    from vigo.host.engines import swarm_in_use

    return swarm_in_use(settings, records)


class LeaderEngine:
    """Swarm behind the engine seam (`engines.of`): the Swarm engine, applying only on the
    swarm's leader; other managers report "not the leader" and change nothing."""

    name: ClassVar[str] = "swarm"

    def __init__(self, run: Any) -> None:
        self.settings = run.settings
        self.engine = engine(run.settings, run.compose, run.log, run.paths)
        if run.pulls is not None:
            self.engine.pulls = run.pulls

    @classmethod
    def start(cls, run: Any) -> LeaderEngine:
        return cls(run)

    def observe(self, stack: str = "") -> Observed:
        return Observed(tuple(c for c in self.engine.observe().containers
                              if not stack or c.stack == stack))

    def deploy(self, stack: Stack, action: Action, res: Resolved,
               before: tuple[Container, ...], record: dict[str, Any],
               revision: str) -> StackResult:
        return deploy_on_leader(self.settings, self.engine, stack, action, res, before,
                                record, revision)

    def remove(self, name: str) -> StackResult:
        return remove_on_leader(self.engine, name)

    def remove_images(self, images: Any) -> None:
        """Each node keeps its own images; Swarm has no image cleanup of vigo's."""


def engine(settings: Any, compose: Any, log: Callable[[str], None] = lambda _: None,
           paths: Paths | None = None) -> SwarmEngine:
    s = settings
    paths = paths or Paths(s.runtime, s.secrets, s.state / "overrides",
                           s.state / "rendered.json")
    return SwarmEngine(Swarm(compose.runner, compose, timeout=s.compose_timeout),
                       s.project_prefix, paths, s.health_timeout, log)


def deploy_on_leader(settings: Any, engine: SwarmEngine, stack: Stack, action: Action,
                     res: Resolved, before: tuple[Container, ...], record: dict[str, Any],
                     revision: str) -> StackResult:
    """Deploy on the swarm when this node is its leader; a follower manager reports 'not the
    leader' and changes nothing (ok: its next run applies if it has become the leader)."""
    from vigo.core.model import KEEP

    wants = engine_of(res, settings)
    if wants != SwarmEngine.name:
        return StackResult(stack.name, action.kind, False, f"{stack.name}: failed (it runs "
                           f"on the swarm and now names engine {wants}: moving a stack off "
                           "the swarm is an explicit operation, docs/swarm.md#moving; the "
                           "services were left as they are)")
    if any(c.project == settings.project(stack.name) and c.config_hash and
           "/" not in c.status for c in before):
        return StackResult(stack.name, action.kind, False, f"{stack.name}: failed (it runs on "
                           "Compose on this host and now names engine swarm: moving a stack "
                           "is an explicit operation, docs/swarm.md#moving; its containers "
                           "were left as they are)")
    jobs = core.job_problem(res.model)
    if jobs:
        from vigo.core import reasons

        return StackResult(stack.name, action.kind, False, f"{stack.name}: failed ({jobs}; "
                           "nothing was deployed)", reason=reasons.RESOLVE_FAILED)
    try:
        why, follower = leader_state(engine.api)
    except (DockerError, CommandTimeout) as exc:
        return StackResult(stack.name, action.kind, False, f"{stack.name}: failed ({exc})")
    if why:
        return not_leader(stack.name, KEEP if follower else action.kind, follower,
                          f"{stack.name}: not applied ({why})")
    if hasattr(record, "ran_on"):  # a host/state.StackRecord
        record.ran_on(SwarmEngine.name)
    else:
        record["engine"] = SwarmEngine.name
    return engine.deploy(stack, action, res, before, record, revision)


def remove_on_leader(engine: SwarmEngine, name: str) -> StackResult:
    from vigo.core.model import KEEP

    try:
        why, follower = leader_state(engine.api)
    except (DockerError, CommandTimeout) as exc:
        return StackResult(name, REMOVE, False, f"{name}: failed to remove ({exc})")
    if why:
        return not_leader(name, KEEP if follower else REMOVE, follower,
                          f"{name}: not removed ({why})")
    return engine.remove(name)


def not_leader(name: str, kind: str, follower: bool, message: str) -> StackResult:
    """A swarm stack this node does not apply: on a follower manager ok (NotLeader, exit 0;
    the run records no revision as applied for it), on a worker or a node in no swarm a
    failure (NotSwarmManager)."""
    from vigo.core import reasons

    return StackResult(name, kind, follower, message,
                       reason=reasons.NOT_LEADER if follower else reasons.NOT_MANAGER)


def leader_state(api: Swarm) -> tuple[str, bool]:
    """(why this node does not apply, whether it is a follower manager); ('', False) on the
    leader."""
    why = leader(api)
    return why, why.startswith("not the leader")


def status_containers(settings: Any, compose: Any, records: dict[str, Any]) -> list[Container]:
    """`vigo status`'s rows of the swarm stacks (one per service); [] on a Compose-only host
    or when the swarm cannot be asked (`status_lines` says why)."""
    if not shows(settings, records):
        return []
    try:
        return list(engine(settings, compose).observe().containers)
    except (DockerError, CommandTimeout):
        return []


def status_lines(settings: Any, compose: Any, records: dict[str, Any]) -> list[str]:
    """`vigo status`: per swarm service, replicas running/desired, the nodes its tasks run on
    and the state of its last update ([] on a Compose-only host). On a manager that is not
    the leader, which node applies."""
    if not shows(settings, records):
        return []
    try:
        api = engine(settings, compose)
        lines = api.status_lines()
        why = leader_state(api.api)[0] if lines else ""
    except (DockerError, CommandTimeout) as exc:
        return ["", f"swarm: cannot be asked ({exc})"]
    head = f"swarm services ({why}):" if why else "swarm services:"
    return ["", head, *lines] if lines else []


def shows(settings: Any, records: dict[str, Any]) -> bool:
    """Whether `vigo status` and the metrics ask the swarm (engines.swarm_shown)."""
    from vigo.host.engines import swarm_shown

    return swarm_shown(settings, records)


def samples(settings: Any, compose: Any, records: dict[str, Any]) -> tuple[Any, ...]:
    """The metrics of the swarm services ((): a Compose-only host, nothing asked)."""
    return engine(settings, compose).samples() if shows(settings, records) else ()
