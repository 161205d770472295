"""Stacks on Docker Swarm: what vigo deploys and how it judges the result. Pure.

- `stack_file`: the resolved compose model (`docker compose config`, env files already in the
  services' environment) -> the stack file `docker stack deploy` gets: the keys Swarm refuses
  left out (and said so by `check`), `restart` mapped to `deploy.restart_policy`, vigo's safe
  update defaults under what the stack sets, vigo's labels (owner, stack hash, the service's own
  hash) on every service, and the stack's secrets as external Swarm secrets named by content.
- `secret_name`: `<stack>_<key>_<hash8>`: immutable, so a new value is a new secret and a
  rolling update of the services that use it; an old one is removed once nothing uses it.
- `check`: the Compose keys Swarm ignores or refuses, per service, with the fix.
- `verdict`: from each service's UpdateStatus (against a marker taken before the deploy) and
  its tasks: done, still going, or failed (rolled back, paused, tasks that keep failing).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from vigo.core.model import LABEL_INSTANCE, LABEL_STACK
from vigo.core.records import record

LABEL_HASH = "io.vigo.stack-hash"  # the whole stack file's digest, on every service
LABEL_SERVICE_HASH = "io.vigo.config-hash"  # the service's own part of it
LABEL_SECRET = "io.vigo.secret"  # the key a secret holds (its value never leaves the engine)
SWARM_NAMESPACE = "com.docker.stack.namespace"  # the label `docker stack` puts on what it makes

# vigo's defaults under `deploy:` of every service; whatever the stack writes wins, key by key.
UPDATE_DEFAULTS = {"parallelism": 1, "order": "start-first", "failure_action": "rollback",
                   "monitor": "15s", "delay": "0s", "max_failure_ratio": 0}
ROLLBACK_DEFAULTS = {"parallelism": 1, "order": "start-first", "failure_action": "pause",
                     "monitor": "10s"}
RESTART_POLICY = {"always": "any", "unless-stopped": "any", "on-failure": "on-failure",
                  "no": "none"}
FAILED_TASKS = 3  # tasks of one service that failed since the deploy: it keeps failing
# A task the deploy created that Swarm has found no node for this long is a wait that never
# ends (Swarm retries it forever): start-first with `max_replicas_per_node` and no spare node,
# a constraint no node meets, reservations no node has room for.
UNPLACED_AFTER = 30.0

# Keys of a service that Swarm refuses or ignores: (what happens, the fix). `build`,
# `container_name` and the rest are left out of the stack file; `check` says so per stack.
IGNORED: dict[str, tuple[str, str]] = {
    "build": ("Swarm does not build images: `docker stack deploy` ignores `build`",
              "push the image to a registry and name it in `image:`"),
    "container_name": ("Swarm names task containers itself: `container_name` is ignored",
                       "drop it; reach the service by its name"),
    "depends_on": ("Swarm starts services in no order: `depends_on` (and its conditions) is "
                   "ignored", "make the service wait for what it needs (retry on start), or "
                   "put the dependency in a stack that comes first (`x-vigo.after`)"),
    "links": ("Swarm ignores `links`", "use the service name on a shared network"),
    "external_links": ("Swarm ignores `external_links`", "use an external network"),
    "network_mode": ("Swarm ignores `network_mode`", "attach the service to networks"),
    "privileged": ("Swarm services cannot be privileged: `privileged` is ignored",
                   "drop it, or run this service with the Compose engine"),
    "devices": ("Swarm ignores `devices`", "run this service with the Compose engine"),
    "cgroup_parent": ("Swarm ignores `cgroup_parent`", "drop it"),
    "userns_mode": ("Swarm ignores `userns_mode`", "drop it"),
    "security_opt": ("Swarm ignores `security_opt`", "drop it, or use the Compose engine"),
    "pid": ("Swarm ignores `pid`", "drop it"),
    "ipc": ("Swarm ignores `ipc`", "drop it"),
    "uts": ("Swarm ignores `uts`", "drop it"),
    "cpu_shares": ("Swarm ignores `cpu_shares`", "use `deploy.resources`"),
    "cpus": ("Swarm ignores `cpus`", "use `deploy.resources.limits.cpus`"),
    "mem_limit": ("Swarm ignores `mem_limit`", "use `deploy.resources.limits.memory`"),
    "mem_reservation": ("Swarm ignores `mem_reservation`",
                        "use `deploy.resources.reservations.memory`"),
    "pull_policy": ("Swarm ignores `pull_policy`", "drop it (vigo loads pinned images)"),
    "profiles": ("Swarm ignores `profiles`: the service is always deployed", "drop it"),
    "scale": ("Swarm ignores `scale`", "use `deploy.replicas`"),
    "domainname": ("Swarm ignores `domainname`", "drop it"),
    "mac_address": ("Swarm ignores `mac_address`", "drop it"),
    "oom_score_adj": ("Swarm ignores `oom_score_adj`", "drop it"),
    "oom_kill_disable": ("Swarm ignores `oom_kill_disable`", "drop it"),
    "storage_opt": ("Swarm ignores `storage_opt`", "drop it"),
    "volumes_from": ("Swarm ignores `volumes_from`", "share a named volume"),
    "runtime": ("Swarm ignores `runtime`", "drop it"),
    "annotations": ("Swarm ignores `annotations`", "use `labels`"),
    "attach": ("Swarm ignores `attach`", "drop it"),
    "develop": ("Swarm ignores `develop`", "drop it"),
    "post_start": ("Swarm ignores `post_start`", "drop it"),
    "pre_stop": ("Swarm ignores `pre_stop`", "drop it"),
    "models": ("Swarm ignores `models`", "drop it"),
    "provider": ("Swarm ignores `provider`", "drop it"),
    "label_file": ("Swarm ignores `label_file`", "write the labels"),
    "gpus": ("Swarm ignores `gpus`", "use `deploy.resources.reservations.generic_resources`"),
    # docker/cli's compose loader: unsupported (ignored) or forbidden (refused) in a stack
    "cgroupns_mode": ("Swarm ignores `cgroupns_mode`", "drop it"),
    "shm_size": ("Swarm ignores `shm_size`", "mount a `type: tmpfs` volume on /dev/shm"),
    "cpu_quota": ("Swarm refuses `cpu_quota`", "use `deploy.resources.limits.cpus`"),
    "cpu_period": ("Swarm ignores `cpu_period`", "use `deploy.resources.limits.cpus`"),
    "cpuset": ("Swarm refuses `cpuset`", "use `deploy.resources`"),
    "memswap_limit": ("Swarm refuses `memswap_limit`", "use `deploy.resources.limits.memory`"),
    "volume_driver": ("Swarm refuses `volume_driver`", "set `driver` on a top-level volume"),
    "pids_limit": ("Swarm ignores `pids_limit`", "use `deploy.resources.limits.pids`"),
    "tmpfs": ("Swarm ignores a service's `tmpfs`", "use a `volumes:` entry of `type: tmpfs` "
              "(with `tmpfs: {size: ...}`)"),
}
# Keys compose resolves before Swarm sees them (never reported).
_RESOLVED = frozenset({"extends"})
# Keys compose's resolved model carries that mean nothing to Swarm (never reported).
_QUIET = frozenset({"env_file", "restart"})
# Service keys `docker stack deploy` (compose file format 3.x) accepts: anything else is dropped.
ACCEPTED = frozenset({
    "cap_add", "cap_drop", "command", "configs", "credential_spec", "deploy", "dns",
    "dns_search", "entrypoint", "environment", "expose", "extra_hosts", "healthcheck",
    "hostname", "image", "init", "isolation", "labels", "logging", "networks", "ports",
    "read_only", "secrets", "stop_grace_period", "stop_signal", "sysctls", "tty",
    "ulimits", "user", "volumes", "working_dir", "stdin_open",
})
TOP_ACCEPTED = frozenset({"services", "networks", "volumes", "secrets", "configs"})


@record(frozen=True)
class Issue:
    """A key of a stack's compose file Swarm refuses or ignores."""

    service: str
    key: str
    message: str
    fix: str

    def line(self) -> str:
        return f"service {self.service}: {self.message}; fix: {self.fix}"


def check(services: Mapping[str, Any]) -> list[Issue]:
    """What Swarm will not do of these services (a compose file's `services`), in order."""
    out = []
    for name, svc in services.items():
        if not isinstance(svc, Mapping):
            continue
        for key in svc:
            if key in IGNORED and not (key == "build" and svc.get("image")):
                what, fix = IGNORED[key]
                out.append(Issue(str(name), str(key), what, fix))
            elif key == "build":
                out.append(Issue(str(name), "build", "Swarm does not build images; the "
                                 "image named beside `build` is deployed as it is",
                                 "drop `build` (vigo deploys `image:`)"))
            elif key not in ACCEPTED and key not in _QUIET and key not in _RESOLVED and not (
                    str(key).startswith("x-")):
                out.append(Issue(str(name), str(key), f"`docker stack deploy` has no "
                                 f"`{key}`: it is left out of the stack file",
                                 "drop it, or run this service with the Compose engine"))
        restart = svc.get("restart")
        deploy = svc.get("deploy") if isinstance(svc.get("deploy"), Mapping) else {}
        if restart is not None and (deploy or {}).get("restart_policy"):
            out.append(Issue(str(name), "restart", "`restart` is ignored where "
                             "`deploy.restart_policy` is set", "drop `restart`"))
        for port in svc.get("ports") or ():
            if isinstance(port, Mapping) and port.get("mode") == "host" and (
                    (deploy or {}).get("update_config") or {}).get("order") == "start-first":
                out.append(Issue(str(name), "deploy.update_config.order", "start-first with "
                                 "a host-mode port waits for a node where the port is free "
                                 "(an update on one node never ends)",
                                 "use `order: stop-first`, or let Traefik publish it"))
    return out


RULE = "swarm-keys"
RULES = {RULE: "a stack on Swarm (x-vigo.engine: swarm) uses no Compose key Swarm refuses or "
         "ignores (build, container_name, depends_on, privileged, ...) (warning)",
         "swarm-jobs": "a stack on Swarm declares no job mode (deploy.mode replicated-job or "
         "global-job): vigo refuses them (error)"}


def lint_rule(cf: Any) -> Iterable[Any]:
    """`vigo check`'s rule over one compose file (a lint.ComposeFile) of a stack that names
    engine swarm: a warning per key Swarm will not honour. (A host whose `engine` setting is
    swarm gets them at apply, in the stack's output.)"""
    from vigo.core.lint import WARNING, Finding  # lint registers this rule: no cycle at import

    doc = cf.doc if isinstance(cf.doc, Mapping) else {}
    block = doc.get("x-vigo")
    if not isinstance(block, Mapping) or block.get("engine") != "swarm":
        return []
    services = doc.get("services") if isinstance(doc.get("services"), Mapping) else {}
    out = []
    for issue in check(services):
        svc = services.get(issue.service)
        line = None
        with contextlib.suppress(AttributeError, KeyError, TypeError):
            line = svc.lc.key(issue.key.split(".")[0])[0] + 1  # ruamel's line of the key
        out.append(Finding(RULE, WARNING, cf.rel, line, f"stack '{cf.stack}', service "
                           f"'{issue.service}': {issue.message}", issue.fix[:1].upper()
                           + issue.fix[1:] + "."))
    out += job_findings(cf, services)
    return out


def job_findings(cf: Any, services: Mapping[str, Any]) -> list[Any]:
    """`vigo check`'s errors for the services of a swarm stack that declare a job mode."""
    from vigo.core.lint import ERROR, Finding

    out = []
    for name in job_services(services):
        line = None
        with contextlib.suppress(AttributeError, KeyError, TypeError):
            line = services[name].lc.key("deploy")[0] + 1
        out.append(Finding(JOB_RULE, ERROR, cf.rel, line, f"stack '{cf.stack}', service "
                           f"'{name}': deploy.mode {services[name]['deploy']['mode']} (a Swarm "
                           "job) is not supported by vigo: it waits for tasks that keep running",
                           JOB_FIX[:1].upper() + JOB_FIX[1:] + "."))
    return out


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"),
                                     default=str).encode()).hexdigest()


def secret_name(namespace: str, key: str, value: bytes) -> str:
    """The Swarm secret that holds `value`: `<stack>_<key>_<hash8>` (at most 64 characters)."""
    h = hashlib.sha256(value).hexdigest()[:8]
    return f"{namespace}_{key}"[:54] + f"_{h}"


def _int_port(value: Any) -> Any:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def _port(port: Any) -> Any:
    if not isinstance(port, Mapping):
        return port
    out = {k: v for k, v in port.items() if k in ("target", "published", "protocol", "mode")}
    if "published" in out:
        published = _int_port(out["published"])
        if isinstance(published, str) and "-" not in published:
            published = _int_port(published)
        out["published"] = published
    if out.get("published") in ("", None):
        out.pop("published", None)
    return out


def _merge(defaults: Mapping[str, Any], given: Any) -> dict[str, Any]:
    return {**defaults, **(given if isinstance(given, Mapping) else {})}


def _service(name: str, svc: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in svc.items():
        if key not in ACCEPTED or value is None:
            continue
        out[key] = copy.deepcopy(value)
    if "ports" in out:
        out["ports"] = [_port(p) for p in out["ports"]]
    nets = out.get("networks")
    if isinstance(nets, Mapping):
        out["networks"] = {k: ({kk: vv for kk, vv in v.items() if kk in ("aliases",)} or None
                               if isinstance(v, Mapping) else None) for k, v in nets.items()}
    for vol in out.get("volumes") or ():
        if isinstance(vol, dict):
            for key in ("bind", "volume"):
                if vol.get(key) == {}:
                    vol.pop(key)
            if isinstance(vol.get("bind"), dict):
                vol["bind"] = {k: v for k, v in vol["bind"].items() if k == "propagation"}
                if not vol["bind"]:
                    vol.pop("bind")
    if isinstance(out.get("healthcheck"), dict):
        out["healthcheck"] = {k: v for k, v in out["healthcheck"].items() if k in (
            "test", "interval", "timeout", "retries", "start_period", "disable")}
    deploy = dict(svc.get("deploy") or {}) if isinstance(svc.get("deploy"), Mapping) else {}
    deploy = {k: copy.deepcopy(v) for k, v in deploy.items() if v is not None}
    publishes_host = any(isinstance(p, Mapping) and p.get("mode") == "host"
                         for p in out.get("ports") or ())
    # start-first with a host-mode port waits forever for a node where the port is free
    update = {**UPDATE_DEFAULTS, **({"order": "stop-first"} if publishes_host else {})}
    rollback = {**ROLLBACK_DEFAULTS, **({"order": "stop-first"} if publishes_host else {})}
    deploy["update_config"] = _merge(update, deploy.get("update_config"))
    deploy["rollback_config"] = _merge(rollback, deploy.get("rollback_config"))
    restart = svc.get("restart")
    if "restart_policy" not in deploy and restart in RESTART_POLICY:
        deploy["restart_policy"] = {"condition": RESTART_POLICY[str(restart)]}
    if isinstance(deploy.get("replicas"), str) and str(deploy["replicas"]).isdigit():
        deploy["replicas"] = int(deploy["replicas"])
    deploy["labels"] = {**(deploy.get("labels") or {}), **labels}
    out["deploy"] = deploy
    return out


def stack_file(model: Mapping[str, Any], namespace: str, stack: str, instance: str,
               secrets: Mapping[str, str] | None = None, constraint: str = "") -> dict[str, Any]:
    """The stack file for `docker stack deploy` from a resolved model. `secrets`: each of the
    model's top-level secrets -> the Swarm secret that holds its value (`secret_name`); they
    are deployed as external secrets. `constraint`: vigo's placement (`Placement.constraint`),
    beside each service's own constraints. The labels carry the stack's hash and each
    service's."""
    secrets = secrets or {}
    services = model.get("services") or {}
    out: dict[str, Any] = {"services": {}}
    owner = {LABEL_STACK: stack, LABEL_INSTANCE: instance}
    for name, svc in sorted(services.items()):
        if isinstance(svc, Mapping):
            out["services"][name] = _service(name, svc, owner)
            if constraint:
                place = dict(out["services"][name]["deploy"].get("placement") or {})
                own = [c for c in place.get("constraints") or () if c != constraint]
                place["constraints"] = [*own, constraint]
                out["services"][name]["deploy"]["placement"] = place
    nets = {}
    for name, net in (model.get("networks") or {}).items():
        net = dict(net or {})
        if net.get("external"):
            nets[name] = {"external": True, "name": net.get("name") or name}
            continue
        nets[name] = {"driver": net.get("driver") or "overlay",
                      **({"attachable": True} if net.get("attachable") else {}),
                      **({"labels": net["labels"]} if net.get("labels") else {})}
    if nets:
        out["networks"] = nets
    vols = {}
    for name, vol in (model.get("volumes") or {}).items():
        vol = dict(vol or {})
        if vol.get("external"):
            vols[name] = {"external": True, "name": vol.get("name") or name}
        else:
            vols[name] = {k: v for k, v in vol.items() if k in ("driver", "driver_opts",
                                                                "labels")} or None
    if vols:
        out["volumes"] = vols
    if secrets:
        out["secrets"] = {key: {"external": True, "name": real}
                          for key, real in sorted(secrets.items())}
    for svc in out["services"].values():
        svc["deploy"]["labels"][LABEL_SERVICE_HASH] = digest(
            {"service": svc, "secrets": {k: v for k, v in secrets.items()
                                         if k in _secret_refs(svc)}})[:16]
    whole = digest(out)[:16]
    for svc in out["services"].values():
        svc["deploy"]["labels"][LABEL_HASH] = whole
    return out


def _secret_refs(svc: Mapping[str, Any]) -> set[str]:
    refs = set()
    for ref in svc.get("secrets") or ():
        refs.add(str(ref.get("source") if isinstance(ref, Mapping) else ref))
    return refs


def secret_sources(model: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """The model's top-level secrets that services use: key -> ("environment", VAR) or
    ("file", path); secrets marked external stay as they are (not in the result)."""
    used = set().union(*(_secret_refs(s) for s in (model.get("services") or {}).values()
                         if isinstance(s, Mapping))) if model.get("services") else set()
    out = {}
    for key, spec in (model.get("secrets") or {}).items():
        if key not in used or not isinstance(spec, Mapping) or spec.get("external"):
            continue
        if spec.get("environment"):
            out[str(key)] = ("environment", str(spec["environment"]))
        elif spec.get("file"):
            out[str(key)] = ("file", str(spec["file"]))
    return out


# -- the verdict of a deploy ---------------------------------------------------------------------

OK, WAIT, FAIL = "ok", "wait", "fail"
FAILED_STATES = frozenset({"failed", "rejected", "orphaned"})
STOPPED_UPDATES = frozenset({"rollback_completed", "paused", "rollback_paused"})


@record(frozen=True)
class Verdict:
    status: str  # OK WAIT FAIL
    reason: str = ""


def mark(service: Mapping[str, Any]) -> str:
    """What tells this service's update apart from the last one: UpdateStatus.StartedAt."""
    return str((service.get("UpdateStatus") or {}).get("StartedAt") or "")


def desired_count(service: Mapping[str, Any]) -> int | None:
    """Replicas a replicated service wants; None for a global one (one per eligible node)."""
    mode = (service.get("Spec") or {}).get("Mode") or {}
    if "Replicated" in mode:
        return int((mode.get("Replicated") or {}).get("Replicas", 1) or 0)
    return None


def wanted_tasks(service: Mapping[str, Any], nodes: int = 1) -> int:
    """Tasks a service wants running: its replicas; for a global service the swarm's own count
    (`ServiceStatus.DesiredTasks` of `GET /services?status=true`: one per eligible node, its
    placement and the nodes that are up counted by Swarm), `nodes` when the answer has none."""
    want = desired_count(service)
    if want is not None:
        return want
    status = service.get("ServiceStatus")
    if isinstance(status, Mapping) and isinstance(status.get("DesiredTasks"), int):
        return int(status["DesiredTasks"])
    return nodes


JOB_MODES = frozenset({"replicated-job", "global-job"})
JOB_RULE = "swarm-jobs"
JOB_FIX = ("make it a service that keeps running, or run the one-off as a release job of a "
           "Compose stack (x-vigo.jobs, docs/deploys.md)")


def job_services(services: Any) -> list[str]:
    """The services that declare a Swarm job mode (`deploy.mode: replicated-job` or
    `global-job`): vigo refuses them (its wait is for tasks that keep running; a job's tasks
    complete), in check and at apply."""
    out = []
    for name, svc in (services.items() if isinstance(services, Mapping) else ()):
        deploy = svc.get("deploy") if isinstance(svc, Mapping) else None
        if isinstance(deploy, Mapping) and str(deploy.get("mode") or "") in JOB_MODES:
            out.append(str(name))
    return out


def job_problem(model: Mapping[str, Any]) -> str:
    """Why a resolved model cannot run on the swarm because of job modes ('' : it can)."""
    jobs = job_services(model.get("services"))
    if not jobs:
        return ""
    return (f"service(s) {', '.join(jobs)}: deploy.mode replicated-job / global-job is not "
            f"supported on the swarm by vigo (it waits for tasks that keep running); "
            f"fix: {JOB_FIX}")


def changed(before: Mapping[str, Any], after: Mapping[str, Any],
            tasks: Sequence[Mapping[str, Any]] = (), allowed: Collection[str] | None = None
            ) -> bool:
    """Whether a deploy changed what a service's tasks run (its TaskTemplate): Swarm then
    rolls an update, which `verdict` waits to see start; a change of service labels alone
    (Traefik's, vigo's) updates no task. A change of the placement alone rolls only tasks
    whose node no longer fits (Swarm's IsTaskDirty): with `allowed` (the node ids vigo's
    placement allows, when only it changed), an update is awaited only when a running task
    of the service is on another node."""
    spec = lambda row: (row.get("Spec") or {}).get("TaskTemplate") or {}  # noqa: E731
    old, new = spec(before), spec(after)
    if old == new:
        return False
    if allowed is None or _unplaced(old) != _unplaced(new):
        return True
    sid = str(after.get("ID") or "")
    return any(str(t.get("ServiceID") or "") == sid and t.get("DesiredState") == "running"
               and str(t.get("NodeID") or "") not in allowed for t in tasks)


def _unplaced(template: Mapping[str, Any]) -> dict[str, Any]:
    """A TaskTemplate without vigo's placement constraint (what else a deploy changed)."""
    out = dict(template)
    place = dict(out.get("Placement") or {})
    place["Constraints"] = [c for c in place.get("Constraints") or ()
                            if not str(c).startswith(f"node.labels.{PLACE_LABEL}")]
    out["Placement"] = {k: v for k, v in place.items() if v}
    return out


def verdict(services: Sequence[Mapping[str, Any]], tasks: Sequence[Mapping[str, Any]],
            marks: Mapping[str, str], since: str, nodes: int = 1,
            updating: Collection[str] = (), now: str = "") -> Verdict:
    """Whether a deploy is done: every service's update `completed` (or no update started:
    a new or unchanged service), and every one of its tasks wanted running is running (its
    healthcheck passed: Swarm keeps a task `starting` until then). FAIL when Swarm rolled an
    update back or paused it, or a service's tasks keep failing since the deploy (`since`,
    an RFC 3339 time). `marks`: service name -> `mark()` before the deploy. `nodes`: how many
    tasks a global service wants. `updating`: the services whose tasks the deploy changed
    (`changed`): until their update shows (Swarm starts it a moment after the deploy), the
    old tasks still running say nothing. `now` (the same form as `since`): a task created
    since the deploy that has waited for a node `UNPLACED_AFTER` seconds by then is a FAIL."""
    waiting = []
    for svc in services:
        name = str((svc.get("Spec") or {}).get("Name") or "")
        sid = str(svc.get("ID") or "")
        status = svc.get("UpdateStatus") or {}
        state = str(status.get("State") or "")
        new = mark(svc) != marks.get(name, "")
        own = [t for t in tasks if str(t.get("ServiceID") or "") == sid]
        failed = [t for t in own if _task_state(t) in FAILED_STATES
                  and str((t.get("Status") or {}).get("Timestamp") or "") >= since]
        if new and state in STOPPED_UPDATES:
            message = str(status.get("Message") or "").strip()
            last = max(failed, key=lambda t: str((t.get("Status") or {}).get("Timestamp")),
                       default=None)
            return Verdict(FAIL, f"{name}: Swarm stopped the update ({state}"
                           + (f": {message}" if message else "") + ")"
                           + (f"; last failed task: {_task_error(last)}" if last else ""))
        if len(failed) >= FAILED_TASKS:
            last = max(failed, key=lambda t: str((t.get("Status") or {}).get("Timestamp")))
            return Verdict(FAIL, f"{name}: {len(failed)} tasks failed since the deploy "
                           f"(last: {_task_error(last)})")
        if now and (stuck := _unplaced_task(own, since, now)):
            return Verdict(FAIL, f"{name}: Swarm has found no node for a new task for "
                           f"{UNPLACED_AFTER:.0f}s ({stuck}){_unplaced_fix(svc, stuck)}")
        if new and state in ("updating", "rollback_started"):
            waiting.append(f"{name}: {state.replace('_', ' ')}")
            continue
        if name in updating and not new:
            waiting.append(f"{name}: the update has not started yet")
            continue
        want = wanted_tasks(svc, nodes)
        if want == 0 and desired_count(svc) is None:
            waiting.append(f"{name}: no task scheduled yet (global: no node is eligible, "
                           "or Swarm has not placed its tasks)")
            continue
        running = [t for t in own if t.get("DesiredState") == "running"
                   and _task_state(t) == "running"]
        if len(running) < want:
            waiting.append(f"{name}: {len(running)}/{want} tasks running")
    if waiting:
        return Verdict(WAIT, "; ".join(waiting))
    return Verdict(OK)


def _unplaced_task(tasks: Sequence[Mapping[str, Any]], since: str, now: str) -> str:
    """The scheduler's reason for the first task created since `since` that still waits for a
    node `UNPLACED_AFTER` seconds later at `now` ('' when there is none)."""
    try:
        limit = _epoch(now) - UNPLACED_AFTER
    except ValueError:
        return ""
    for t in tasks:
        err = str((t.get("Status") or {}).get("Err") or "")
        created = str(t.get("CreatedAt") or "")
        if (t.get("DesiredState") != "running" or _task_state(t) != "pending"
                or not err.startswith("no suitable node") or created < since):
            continue
        with contextlib.suppress(ValueError):
            if _epoch(created) <= limit:
                return err
    return ""


def _unplaced_fix(svc: Mapping[str, Any], err: str) -> str:
    """What to change when a service's new task waits for a node. Start-first (vigo's default
    without host-mode ports) starts each new task before it stops the old one, so the new task
    needs a node where the old one leaves room."""
    spec = svc.get("Spec") or {}
    first = str((spec.get("UpdateConfig") or {}).get("Order") or "") == "start-first"
    most = ((spec.get("TaskTemplate") or {}).get("Placement") or {}).get("MaxReplicas")
    if first and "host-mode port" in err:
        return ("; an update starts each new task before it stops the old one, and the port is "
                "taken on every node it may use: add a node, or set "
                "`deploy.update_config.order: stop-first`")
    if first and (most or "max replicas per node" in err):
        return ("; an update starts each new task before it stops the old one, so it needs a "
                "node that runs fewer of the service's tasks than max_replicas_per_node: add "
                "a node, lower `replicas`, or set `deploy.update_config.order: stop-first`")
    return ("; free a node, or change the placement, reservations or replicas so the tasks "
            "fit the nodes there are")


def _epoch(stamp: str) -> float:
    """Seconds of an RFC 3339 UTC time as the engine writes it (nanoseconds, a `Z`)."""
    base, _, frac = stamp.rstrip("Z").partition(".")
    moment = datetime.fromisoformat(base).replace(tzinfo=UTC)
    return moment.timestamp() + (float("0." + frac[:9]) if frac.isdigit() else 0.0)


def _task_state(task: Mapping[str, Any]) -> str:
    return str((task.get("Status") or {}).get("State") or "")


def _task_error(task: Mapping[str, Any]) -> str:
    status = task.get("Status") or {}
    err = str(status.get("Err") or status.get("Message") or status.get("State") or "")
    exit_code = ((status.get("ContainerStatus") or {}).get("ExitCode"))
    return err + (f", exit code {exit_code}" if exit_code else "")


# -- what a stack runs on the swarm, as vigo records it ------------------------------------------

@record(frozen=True)
class Service:
    """One service of the swarm as `GET /services?status=true` tells it."""

    id: str
    name: str  # <namespace>_<service>
    stack: str
    instance: str
    namespace: str
    image: str
    config_hash: str
    stack_hash: str
    running: int
    desired: int
    update: str  # UpdateStatus.State, '' when no update ran

    @property
    def service(self) -> str:
        prefix = self.namespace + "_"
        return self.name[len(prefix):] if self.name.startswith(prefix) else self.name


def parse_services(rows: Iterable[Mapping[str, Any]]) -> tuple[Service, ...]:
    out = []
    for row in rows:
        spec = row.get("Spec") or {}
        labels = spec.get("Labels") or {}
        status = row.get("ServiceStatus") or {}
        image = str(((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get(
            "Image") or "")
        out.append(Service(
            id=str(row.get("ID") or ""), name=str(spec.get("Name") or ""),
            stack=str(labels.get(LABEL_STACK) or ""),
            instance=str(labels.get(LABEL_INSTANCE) or ""),
            namespace=str(labels.get(SWARM_NAMESPACE) or ""),
            image=image.split("@sha256:")[0] if "@sha256:" in image and ":" in image.split(
                "@")[0].rsplit("/", 1)[-1] else image,
            config_hash=str(labels.get(LABEL_SERVICE_HASH) or ""),
            stack_hash=str(labels.get(LABEL_HASH) or ""),
            running=int(status.get("RunningTasks") or 0),
            desired=int(status.get("DesiredTasks") or 0),
            update=str((row.get("UpdateStatus") or {}).get("State") or "")))
    return tuple(out)


def status_lines(services: Sequence[Service], nodes: Mapping[str, Sequence[str]] | None = None,
                 lost: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """`vigo status` lines of the swarm stacks: per service, running/desired replicas, the
    nodes its tasks run on, and the state of its last update. `nodes`: service id -> the
    nodes of its running tasks (when given, they are the running count); `lost`: service id ->
    nodes that are down but still hold a task of it."""
    lines = []
    for s in sorted(services, key=lambda s: (s.stack, s.name)):
        on = list((nodes or {}).get(s.id, ()))
        running = len(on) if nodes is not None else s.running
        where = ", ".join(sorted(set(on))) or "no node"
        update = f", update {s.update}" if s.update else ""
        down = sorted(set((lost or {}).get(s.id, ())))
        gone = f"; node(s) down: {', '.join(down)}" if down else ""
        lines.append(f"  {s.stack}/{s.service} (swarm): {running}/{s.desired} running"
                     f"{update}, on {where}{gone}")
    return lines


# -- placement: hosts/<node>/stacks/<stack>/ places a swarm stack on that node ----------------
# Swarm ANDs constraints (no OR), so a set of nodes is one node label vigo owns. The label's key
# carries the hash of the node set, `io.vigo.place.<namespace>.<hash8>=true`: a node may carry
# the old set's label and the new one's at once, so the tasks of the last healthy stack file
# (a rollback) still find their nodes while an update moves them. The hash in the constraint
# makes a change of the set a change of the stack file (Swarm evaluates constraints only when
# it schedules: a new constraint is the rolling update that moves the tasks).

PLACE_LABEL = "io.vigo.place."  # vigo's own node label prefix: nothing else is ever touched
GITKEEP = ".gitkeep"


def place_label(namespace: str, value: str) -> str:
    """The node label of one placement of a stack: `io.vigo.place.<namespace>.<hash8>`."""
    return f"{PLACE_LABEL}{namespace}.{value}"


def place_constraint(namespace: str, value: str) -> str:
    return f"node.labels.{place_label(namespace, value)} == true"


def place_value(nodes: Iterable[str]) -> str:
    """hash8 of the sorted node set (independent of the order the folders are found in)."""
    return hashlib.sha256("\n".join(sorted(set(nodes))).encode()).hexdigest()[:8]


@record(frozen=True)
class NodeInfo:
    """One node of the swarm as `GET /nodes` tells it: what placement needs."""

    id: str
    hostname: str
    labels: Mapping[str, str]


def parse_nodes(rows: Iterable[Mapping[str, Any]]) -> tuple[NodeInfo, ...]:
    return tuple(NodeInfo(str(r.get("ID") or ""),
                          str((r.get("Description") or {}).get("Hostname") or ""),
                          dict((r.get("Spec") or {}).get("Labels") or {})) for r in rows)


@record(frozen=True)
class Placement:
    """Where a swarm stack runs: `nodes` () means no constraint of vigo's (the stack's own
    placement only). `error`: the stack fails before anything is touched."""

    nodes: tuple[str, ...] = ()
    value: str = ""
    warnings: tuple[str, ...] = ()
    error: str = ""

    def constraint(self, namespace: str) -> str:
        return place_constraint(namespace, self.value) if self.value else ""

    def line(self) -> str:
        return f"placement: {', '.join(self.nodes)}" if self.nodes else ""


def placement(stack: str, folders: Iterable[str], nodes: Iterable[str],
              problems: Sequence[str] = ()) -> Placement:
    """The placement of `stack` from the nodes its `hosts/<node>/stacks/<stack>/` folders
    name (`folders`) and the hostnames of the swarm's nodes (`nodes`). A folder naming no
    node is a warning; folders that name no node at all fail the stack (it must not run
    everywhere silently). `problems` (from `placement_problems`) fail it too."""
    wanted, have = sorted(set(folders)), sorted(set(nodes))
    if problems:
        return Placement(error="; ".join(problems))
    if not wanted:
        return Placement()
    real = [n for n in wanted if n in have]
    unknown = [n for n in wanted if n not in have]
    listed = ", ".join(have) or "none"
    said = [f"hosts/{n}/stacks/{stack} places {stack} on {n}, which is not a node of this "
            f"swarm (nodes: {listed})" for n in unknown]
    if not real:
        return Placement(error="; ".join(said))
    return Placement(tuple(real), place_value(real),
                     tuple(f"{s}: ignored" for s in said))


def placement_problems(stack: str, files: Iterable[tuple[str, str, str]],
                       rendered: Mapping[str, str]) -> list[str]:
    """Files of placement folders that would change the stack per node: Swarm runs one
    definition on every node. `files`: (node, path inside the stack folder, sha256) of each
    file under hosts/<node>/stacks/<stack>/; `rendered`: path inside the stack folder -> the
    sha256 of what the stack renders from. A `.gitkeep`, or a byte-identical copy, is fine."""
    out = []
    for node, rel, sha in sorted(files):
        if rel.rsplit("/", 1)[-1] == GITKEEP or rendered.get(rel) == sha:
            continue
        where = f"hosts/{node}/stacks/{stack}/{rel}"
        what = ("differs from" if rel in rendered else "is not a file of")
        out.append(f"{where} {what} the stack's stacks/{stack}/{rel}: a swarm service has one "
                   f"definition for all nodes, so hosts/{node}/stacks/{stack}/ only places "
                   f"{stack} on {node} (keep a {GITKEEP} in it, or identical copies); use node "
                   "labels or env for what differs per node")
    return out


def placed_value(doc: Mapping[str, Any], namespace: str) -> str:
    """The placement hash a stack file's constraints carry ('' when vigo placed it nowhere)."""
    head = f"node.labels.{PLACE_LABEL}{namespace}."
    for svc in (doc.get("services") or {}).values():
        for c in ((svc.get("deploy") or {}).get("placement") or {}).get("constraints") or ():
            if isinstance(c, str) and c.startswith(head):
                return c[len(head):].split(" ", 1)[0]
    return ""


def labels_to_add(namespace: str, place: Placement, nodes: Sequence[NodeInfo]
                  ) -> dict[str, str]:
    """node id -> the placement label it lacks (set before `docker stack deploy`)."""
    if not place.value:
        return {}
    label = place_label(namespace, place.value)
    return {n.id: label for n in nodes if n.hostname in place.nodes and n.labels.get(label)
            != "true"}


def labels_to_remove(namespace: str, keep: Placement, nodes: Sequence[NodeInfo]
                     ) -> dict[str, tuple[str, ...]]:
    """node id -> vigo's placement labels of this stack it should no longer carry, once the
    stack file of `keep` converged: every other set's label, and `keep`'s label on nodes out
    of its set. Only `io.vigo.place.<namespace>.<hash8>` is ever named."""
    head = f"{PLACE_LABEL}{namespace}."
    wanted = place_label(namespace, keep.value) if keep.value else ""
    out = {}
    for n in nodes:
        stale = tuple(sorted(k for k in n.labels if k.startswith(head)
                             and len(k) == len(head) + 8
                             and not (k == wanted and n.hostname in keep.nodes)))
        if stale:
            out[n.id] = stale
    return out
