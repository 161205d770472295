"""The Compose engine (`ComposeEngine`): observe, deploy, remove a stack on this host's Docker.

Deploying one stack safely (`Deployer`): images first, zero-downtime rollout of routed
services, `compose up`, the health gate, and a rollback to the last healthy state when the
gate fails. Removing one: `compose down` and its saved healthy model. The decisions (who is
healthy, which service can roll) are pure and live in health.py and rollout.py; this module
sequences the adapter calls and waits.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from vigo.adapters import fs, traefik
from vigo.adapters.compose import Compose, DockerError
from vigo.adapters.run import CommandTimeout, pause
from vigo.core import health, plan, reasons, registries, rollout, xvigo
from vigo.core.model import (
    CREATE,
    LABEL_INSTANCE,
    LABEL_MOUNTS,
    LABEL_STACK,
    PROXY,
    REMOVE,
    Action,
    Container,
    Observed,
    Paths,
    Resolved,
    Stack,
    StackResult,
)
from vigo.core.records import field, record, replace
from vigo.host import engines
from vigo.host.crash import crash_line
from vigo.host.state import StackRecord

if TYPE_CHECKING:
    from vigo.host.resolve import Guess

# A rollout asks Traefik's API (adapters/traefik.py) when it routes the new container and has
# dropped the old one; these are the most it waits, and all it waits when the API cannot tell.
ROUTE_DELAY = 3.0  # Traefik routes a container ~1 s after it is healthy; events throttle 2 s
DRAIN_SETTLE = 5.0  # after the old container turns unhealthy, until Traefik has dropped it
POLL = 1.0
PROBE = 0.2  # how often a rollout asks Traefik's API, and the engine for the new one's health
# Once Traefik's API has dropped the old container, requests it sent there before may still be
# under way: the old one stops GRACE s later, or SLOW_FACTOR x the slowest answer of the API (a
# starved Traefik is slow to answer everything), at most DRAIN_SETTLE.
GRACE = 1.0
SLOW_FACTOR = 10.0


def image_ref(image: str) -> str:
    """The name `docker images` lists an image under."""
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/"):
        if image.startswith(prefix):
            image = image[len(prefix):]
            break
    if "@" in image:  # repo:tag@sha256:... is listed (and pulled) as repo@sha256:...
        name, _, digest = image.partition("@")
        last = name.rsplit("/", 1)
        if ":" in last[-1]:
            name = name[: len(name) - len(last[-1])] + last[-1].split(":", 1)[0]
        return f"{name}@{digest}"
    if ":" in image.rsplit("/", 1)[-1]:
        return image
    return image + ":latest"


def rollback_timeout(saved: dict, res: Resolved | None, default: int) -> int:
    """How long the gate after a rollback waits: the `x-vigo.health_timeout` of the revision
    it brings back (its saved model), else of the revision that failed (the gate before it
    waited as long), else the host's `health_timeout`."""
    back = xvigo.parse(saved.get(xvigo.KEY) if isinstance(saved, dict) else None)[0]
    return back.health_timeout or (res.health_timeout if res is not None else None) or default


@record
class Deployer:
    compose: Compose
    project_prefix: str
    paths: Paths
    health_timeout: int
    log: Callable[[str], None]
    sleep: Callable[[float], None] = pause  # ends at once when vigo is told to stop
    # Registry credentials (docs/private-images.md): given to the pulls of the stacks that
    # need them only.
    pulls: registries.Pulls = field(default_factory=registries.Pulls)
    # Where the output of release jobs goes (the journal); `log` when unset.
    journal: Callable[[str], None] | None = None
    # project -> `compose config --hash` of this deploy, when resolve did not ask it already
    _asked: dict[str, Mapping[str, str]] = field(default_factory=dict, init=False, repr=False)

    # -- one stack ----------------------------------------------------------------------------

    def deploy(self, stack: Stack, action: Action, res: Resolved, before: tuple[Container, ...],
               record: StackRecord, revision: str) -> StackResult:
        project = self.project_prefix + stack.name
        try:
            files = [self.paths.runtime / stack.compose_file, self._override(project, stack, res)]
        except OSError as exc:  # a full state folder: nothing was touched
            return StackResult(stack.name, action.kind, False, f"{stack.name}: failed (cannot "
                               f"write {engines.override_file(self.paths, project)}: "
                               f"{exc.strerror or exc}; the running containers were left as "
                               "they are)")
        envs = [self.paths.secrets / rel for rel in stack.interpolation_env]
        timeout = res.health_timeout or self.health_timeout
        why = list(action.reasons)
        docker_config = self.pulls.for_images(res.services.values())
        jobs = {j.service for j in res.jobs}
        ran: list[dict[str, object]] = []
        try:
            missing = self._pull(res, docker_config)
            if missing:  # nothing was touched: the running containers stay as they are
                return StackResult(stack.name, action.kind, False, f"{stack.name}: failed "
                                   f"({missing}; the running containers were left as they are)",
                                   reason=reasons.PULL_FAILED)
            if res.jobs and not res.job_hashes:  # what the record of a job that ran keeps
                hashes = self._hashes(project, files, envs, res)
                res = replace(res, job_hashes={j.service: hashes.get(j.service, "")
                                               for j in res.jobs})
            # a revision that leaves a job as it was does not run it again
            pending = plan.jobs_due(res.jobs, res.job_hashes, record)
            for job in (j for j in pending if j.when == xvigo.BEFORE):
                failure = self._run_job(project, files, envs, job, docker_config, ran, res)
                if failure:  # nothing of the stack was replaced: held like a failed gate
                    last = record.revision[:12]
                    serving = (f"{last or 'the running revision'} keeps serving" if before
                               else "nothing of the stack was started")
                    return StackResult(stack.name, action.kind, False,
                                       f"{stack.name}: failed (job {job.service} "
                                       f"({xvigo.BEFORE}): {failure}; nothing was replaced, "
                                       f"{serving})", containers=before, hold=True,
                                       jobs=tuple(ran), reason=reasons.JOB_FAILED)
            rolled = self._roll_services(project, files, envs, res, before, timeout)
            if rolled.failure:
                return self._rollback(stack, action, rolled.failure, record, revision,
                                      kept=rolled.kept, res=res)
            start = self._to_start(project, files, envs, res, before, record)
            if start is not None:
                up = self.compose.up(project, files, envs, docker_config, start)
                if not up.ok:
                    return self._rollback(stack, action, f"docker compose up: {up.error(4)}",
                                          record, revision, res=res, code=reasons.DEPLOY_FAILED)
            verdict = self.gate(project, [s for s in res.services if s not in jobs], timeout,
                                counts=res.replicas)
            if verdict.status != health.OK:
                return self._rollback(stack, action, self._explain(verdict), record, revision,
                                      res=res)
            for job in (j for j in pending if j.when == xvigo.AFTER):
                failure = self._run_job(project, files, envs, job, docker_config, ran, res)
                if failure:
                    result = self._rollback(stack, action, f"job {job.service} "
                                            f"({xvigo.AFTER}): {failure}", record, revision,
                                            res=res, code=reasons.JOB_FAILED)
                    return replace(result, jobs=tuple(ran))
            after = self.compose.containers(project)
        except (DockerError, CommandTimeout) as exc:
            gone = self._engine_gone()
            return StackResult(stack.name, action.kind, False,
                               f"{stack.name}: failed ({gone or exc})", hold=False,
                               jobs=tuple(ran), reason=reasons.ENGINE_UNAVAILABLE if gone
                               else reasons.DEPLOY_FAILED)
        unsaved = self._save_good(project, files, envs)
        if unsaved:
            why.append(unsaved)
        if rolled.names:
            why.append(f"{', '.join(rolled.names)} replaced without downtime")
        if ran:
            why.append("ran job " + ", ".join(f"{r['service']} ({r['when']}, "
                                              f"{r['duration']:.0f}s)" for r in ran))
        verb = "created" if action.kind == CREATE else "updated"
        if before and not rolled.names and not ran and {(c.id, c.config_hash) for c in after} == {
                (c.id, c.config_hash) for c in before} and all(
                c.state == "running" or plan.is_completed(c, record) for c in (*before, *after)):
            verb = "unchanged"
            why.append("no container needed a change")
        text = "; ".join(why)
        return StackResult(stack.name, action.kind, True,
                           f"{stack.name}: {verb}" + (f" ({text})" if text else ""),
                           containers=after, jobs=tuple(ran))

    def _hashes(self, project: str, files: list[Path], envs: list[Path],
                res: Resolved) -> Mapping[str, str]:
        """service -> the config hash compose gives its container now: asked at resolve
        (res.config_hashes, the same files: the override is written from the same model), else
        one `compose config --hash` for the whole deploy."""
        if res.config_hashes:
            return res.config_hashes
        if project not in self._asked:
            self._asked[project] = self.compose.config_hashes(project, files, envs)
        return self._asked[project]

    def _override(self, project: str, stack: Stack, res: Resolved) -> Path:
        """vigo's labels on every service, and drain-aware healthchecks on rolled services."""
        services: dict[str, dict] = {}
        for svc in res.services:
            labels = {LABEL_STACK: stack.name, LABEL_INSTANCE: self.project_prefix}
            if svc in res.mounts_hash:
                labels[LABEL_MOUNTS] = res.mounts_hash[svc]
            services[svc] = {"labels": labels}
            if svc in {j.service for j in res.jobs}:  # a job runs once: never restarted
                services[svc]["restart"] = "no"
            spec = res.rollouts.get(svc)
            if spec is not None and spec.zero_downtime:
                services[svc]["healthcheck"] = {"test": rollout.drain_test(spec.test)}
        path = engines.override_file(self.paths, project)
        fs.write_json(path, {"services": services}, mode=0o600)
        return path

    def _to_start(self, project: str, files: list[Path], envs: list[Path], res: Resolved,
                  before: tuple[Container, ...], record: StackRecord) -> list[str] | None:
        """The services `up` names: [] (all) unless some completed for the configuration they
        would get now, or are release jobs (vigo runs those itself, see `pending_jobs`); those
        are left out, so a one-shot runs again only when it changes. None: nothing to start."""
        jobs = {j.service for j in res.jobs}
        done: frozenset[str] = frozenset()
        if any(c.service in res.finishes and c.exit_code == 0 for c in before):
            done = plan.settled(before, record, self._hashes(project, files, envs, res))
        if not done and not jobs:
            return []
        start = [svc for svc in res.services if svc not in done and svc not in jobs]
        return start or None

    def _run_job(self, project: str, files: list[Path], envs: list[Path], job: xvigo.Job,
                 docker_config: Path | None, ran: list[dict[str, object]],
                 res: Resolved) -> str:
        """Run one job to its end; '' when it exited 0, else why (with its last lines). Its
        output goes to the journal, masked like every command's."""
        journal = self.journal or self.log
        journal(f"{project}: job {job.service} ({job.when}): running (at most {job.timeout}s)")
        t0 = time.monotonic()
        try:
            out = self.compose.run_job(project, files, envs, job.service, job.timeout,
                                       docker_config)
        except CommandTimeout:
            self._remove_job(project, job.service)
            ran.append(dict(service=job.service, when=job.when, exit=None,
                            duration=round(time.monotonic() - t0, 1)))
            return (f"did not finish within {job.timeout}s (x-vigo.jobs.{job.service}.timeout)"
                    "; it was stopped")
        lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        for line in lines:
            journal(f"{project}: job {job.service}: {line}")
        ran.append(dict(service=job.service, when=job.when, exit=out.returncode,
                        duration=round(time.monotonic() - t0, 1),
                        hash=res.job_hashes.get(job.service, "")))
        if out.ok:
            return ""
        self._remove_job(project, job.service)
        tail = " | ".join(lines[-5:]) or out.error(3)
        return f"exited with code {out.returncode}; last lines: {tail}"

    def _remove_job(self, project: str, service: str) -> None:
        """A job that failed or ran out of time leaves no container behind (the gate, drift and
        the next run see the stack as it was)."""
        for c in self.compose.containers(project):
            if c.service == service:
                self.compose.remove(c.id, stop_timeout=5)

    def _pull(self, res: Resolved, docker_config: Path | None = None) -> str:
        """Pull every image the stack lacks before any container is touched ('' when all are
        there); the reason when one cannot be pulled: the registry, the image, the fix."""
        have = self.compose.local_images()
        for image in sorted(set(res.services.values())):
            if image and image_ref(image) not in have:
                self.log(f"pulling {image}")
                pulled = self.compose.pull(image, docker_config)
                if not pulled.ok:
                    return self.pulls.explain(image, pulled.error(2))
        return ""

    # -- zero-downtime rollout ------------------------------------------------------------------

    @record(frozen=True)
    class Rolled:
        names: tuple[str, ...] = ()
        failure: str = ""
        kept: str = ""  # the old container that still serves after a failed rollout

    def _roll_services(self, project: str, files: list[Path], envs: list[Path], res: Resolved,
                       before: tuple[Container, ...], timeout: int) -> Deployer.Rolled:
        olds = {svc: [c for c in before if c.service == svc] for svc in res.services}
        candidates = [svc for svc, spec in res.rollouts.items() if spec.zero_downtime
                      and len(olds.get(svc, [])) == 1 and olds[svc][0].state == "running"
                      and olds[svc][0].health == "healthy"]
        if not candidates:
            return self.Rolled()
        hashes = self._hashes(project, files, envs, res)
        done = []
        for svc in candidates:
            old = olds[svc][0]
            if hashes.get(svc) == old.config_hash:
                continue
            failure = self._roll(project, files, envs, svc, res.rollouts[svc], old, timeout)
            if failure:
                return self.Rolled(tuple(done), failure, kept=old.name)
            done.append(svc)
        return self.Rolled(tuple(done))

    def _roll(self, project: str, files: list[Path], envs: list[Path], service: str,
              spec, old: Container, timeout: int) -> str:
        """Start the new container beside the old one, wait until it is healthy and routed,
        drain the old one, stop it. On failure the new container goes, the old one stays.

        "Routed" and "drained" are what Traefik's API says (the new container's server is in
        every load balancer the old one is in; the old one is in none), asked every PROBE
        seconds; ROUTE_DELAY and DRAIN_SETTLE bound the waits, and are the waits when the API
        cannot tell (no API, unreachable, slow, or the old server is in no load balancer)."""
        self.log(f"{project}: {service}: starting the new container beside {old.name}")
        # Where Traefik's API is and which of its services hold the old container: asked while
        # the new one starts (it waits at least one healthcheck interval), off the critical path.
        found: dict[str, object] = {}
        finder = threading.Thread(target=self._find_traefik, args=(project, old.id, found),
                                  daemon=True)
        finder.start()
        up = self.compose.up_service(project, files, envs, service, scale=2)
        new = {c.id for c in self.compose.containers(project)
               if c.service == service and c.id != old.id}
        poll = min(POLL, max(PROBE, spec.interval / 4))
        verdict = (self.gate(project, [service], timeout, only=new, poll=poll) if up.ok and new
                   else health.Verdict(health.FAIL, f"docker compose up: {up.error(3)}"))
        finder.join()
        old_doc = found.get("old") or next(iter(self.compose.inspect([old.id])), {})
        api = found.get("api")
        assert isinstance(old_doc, dict) and (api is None or isinstance(api, traefik.Api))
        old_ips = traefik.addresses(old_doc)
        held = found.get("held") or frozenset()
        assert isinstance(held, frozenset)
        if verdict.status != health.OK:
            reason = self._explain(verdict)
            for cid in new:
                self.compose.remove(cid, stop_timeout=5)
            return f"{service}: {reason}"
        self.log(f"{project}: {service}: the new container is healthy")
        new_docs = self.compose.inspect(sorted(new)) if held else []
        new_ips = frozenset().union(*(traefik.addresses(d) for d in new_docs))
        def routed(svcs: dict[str, frozenset[str]]) -> bool:  # the new one, everywhere
            return bool(held) and all(traefik.holding({name: svcs.get(name, frozenset())},
                                                      new_ips) for name in held)

        # The new container routes as the old one does (its Traefik labels are the same, as in
        # a new image tag): Traefik will put it beside the old one, however slowly it works on
        # a loaded host, so the rollout waits for that (up to the health timeout) and never
        # drains the old one before. New labels (a changed rule or service) may never land in
        # the old one's services: then ROUTE_DELAY is all it waits.
        same = bool(new_docs) and all(traefik.labels(d) == traefik.labels(old_doc)
                                      for d in new_docs)
        bound = max(ROUTE_DELAY, float(timeout)) if same else ROUTE_DELAY
        how = self._await(api if held and new_ips else None, bound, routed, blind=ROUTE_DELAY)
        if same and how.startswith("not seen"):
            for cid in new:
                self.compose.remove(cid, stop_timeout=5)
            return (f"{service}: Traefik did not route the new container within {bound:g}s "
                    f"(its API still shows only {old.name} for {', '.join(sorted(held))}); "
                    f"{old.name} keeps serving, the next run tries again")
        self.log(f"{project}: {service}: routed ({how})")
        drainable = rollout.DRAIN_FILE in " ".join(
            ((old_doc.get("Config") or {}).get("Healthcheck") or {}).get("Test") or [])
        if drainable and self.compose.exec(old.id, "touch", rollout.DRAIN_FILE).ok:
            self.log(f"{project}: {service}: draining {old.name}")
            bound = rollout.drain_seconds(spec) + 5
            if held:  # Traefik drops the old server once its health turns unhealthy
                how = self._await(api, bound + DRAIN_SETTLE,  # and the new one still routed
                                  lambda svcs: routed(svcs) and not traefik.holding(svcs, old_ips))
                if how.startswith("traefik") and api is not None:
                    grace = min(DRAIN_SETTLE, max(GRACE, SLOW_FACTOR * api.slowest))
                    self.sleep(grace)
                    how += f", then {grace:.1f}s for requests under way"
            else:
                self._unhealthy(old.id, time.monotonic() + bound)
                self.sleep(DRAIN_SETTLE)  # Traefik reacts to the health event, throttled
                how = f"{DRAIN_SETTLE:g}s after unhealthy"
            self.log(f"{project}: {service}: drained ({how}); stopping {old.name}")
        self.compose.remove(old.id)
        return ""

    def _find_traefik(self, project: str, old: str, found: dict[str, object]) -> None:
        """found["old"]: the old container's inspect document; found["api"]: the API of the
        host's Traefik (absent when the proxy serves none vigo can reach); found["held"]: the
        services of Traefik that hold the old container now. One `docker inspect`, one GET."""
        proxy = self.project_prefix + PROXY
        try:
            ids = [] if project == proxy else [c.id for c in self.compose.containers(proxy)
                                               if c.state == "running"]
            docs = {str(d.get("Id") or ""): d for d in self.compose.inspect([old, *ids])}
        except (DockerError, CommandTimeout, ValueError) as exc:
            self.log(f"{project}: cannot inspect {old[:12]} and the proxy ({exc}); the rollout "
                     "waits its fixed times")
            return
        old_doc = next((d for i, d in docs.items() if old and i.startswith(old)), None)
        if old_doc is None:
            return
        found["old"] = old_doc
        old_ips = traefik.addresses(old_doc)
        for doc in (d for d in docs.values() if d is not old_doc):
            base = traefik.endpoint(doc)
            if base:
                found["api"] = api = traefik.Api(base, timeout=max(PROBE, 1.0))
                for attempt in range(3):  # a loaded Traefik may miss one timeout
                    found["held"] = self._ask(api, lambda svcs: traefik.holding(svcs, old_ips),
                                              quiet=attempt < 2)
                    if found["held"] is not None:
                        break
                return

    def _ask(self, api: traefik.Api | None,
             judge: Callable[[dict[str, frozenset[str]]], object],
             quiet: bool = False) -> object | None:
        """judge(Traefik's services now), None when the API does not answer."""
        if api is None:
            return None
        try:
            return judge(api.services())
        except traefik.TraefikError as exc:
            if not quiet:
                self.log(f"Traefik's API: {exc}; the rollout asks again, and waits its fixed "
                         "times while it does not answer")
            return None

    def _await(self, api: traefik.Api | None, bound: float,
               done: Callable[[dict[str, frozenset[str]]], bool],
               blind: float | None = None) -> str:
        """Wait until done(Traefik's services) or `bound` seconds; how it ended. An API that
        does not answer (a starved Traefik can miss a timeout and answer the next time) is
        asked again; once it has been silent for `blind` seconds (at most `bound`, the
        default), or there is none, the wait ends `blind` seconds after it began or it last
        answered."""
        start = time.monotonic()
        deadline = start + bound
        fixed = bound if blind is None else min(bound, blind)
        heard, told = start, False
        while api is not None:
            answer = self._ask(api, done, quiet=told)
            now = time.monotonic()
            if answer:
                return f"traefik, {now - start:.1f}s"
            if answer is None:
                told = True
                if now + PROBE >= heard + fixed:  # silent for the fixed time: no more asking
                    break
            else:
                heard = now
            if now + PROBE >= deadline:
                return f"not seen in Traefik's API within {bound:g}s"
            self.sleep(PROBE)
        self.sleep(max(0.0, heard + fixed - time.monotonic()))
        return f"after {fixed:g}s"

    def _unhealthy(self, cid: str, deadline: float) -> None:
        """Wait until a drained container reports unhealthy (or is gone), or the deadline."""
        while time.monotonic() < deadline:
            probes = [health.probe(d) for d in self.compose.inspect([cid])]
            if not probes or probes[0].health == "unhealthy":
                return
            self.sleep(0.5)

    # -- the health gate ------------------------------------------------------------------------

    def gate(self, project: str, services: Collection[str], timeout: float,
             only: set[str] | None = None,
             counts: Mapping[str, int] | None = None, poll: float = POLL) -> health.Verdict:
        """Wait until every container of the project (or the `only` ones) is healthy, or one
        fails, or the timeout passes."""
        start = time.monotonic()
        deadline, told = start + timeout, start
        baseline: dict[str, int] | None = None
        while True:
            ids = [c.id for c in self.compose.containers(project) if only is None or c.id in only]
            probes = [health.probe(d) for d in self.compose.inspect(ids)]
            if baseline is None:
                baseline = {p.id: p.restarts for p in probes}
            verdict = health.judge(probes, services, baseline, time.time(), counts=counts)
            if verdict.status != health.WAIT:
                return verdict
            now = time.monotonic()
            if now >= deadline:
                return health.Verdict(health.FAIL, f"not healthy after {timeout:.0f}s: "
                                      f"{verdict.reason}", verdict.container)
            if now - told >= 5:
                told = now
                self.log(f"{project}: waiting for health: {verdict.reason} "
                         f"({now - start:.0f}s of {timeout:.0f}s)")
            self.sleep(poll)

    def _explain(self, verdict: health.Verdict) -> str:
        if not verdict.container:
            return verdict.reason
        lines = self.compose.logs(verdict.container, 5).splitlines()
        tail = " | ".join(line.strip() for line in lines if line.strip())
        return verdict.reason + (f"; last log lines: {tail}" if tail else "")

    # -- rollback -------------------------------------------------------------------------------

    def _save_good(self, project: str, files: list[Path], envs: list[Path]) -> str:
        """Keep the resolved model of a healthy stack (it holds secrets: tmpfs, 0600); the
        reason when it cannot be kept (a full tmpfs): a later failure then has no rollback."""
        try:  # the stack is up and healthy: nothing here may fail it or the run
            res = self.compose.resolved(project, files, envs)
        except (DockerError, CommandTimeout) as exc:
            return f"its healthy state was not saved for a rollback: {exc}"
        if res.ok:
            try:
                fs.write_secret(self.paths.good_model(project), res.stdout,
                                root=self.paths.secrets)
            except OSError as exc:
                return (f"its healthy state was not saved for a rollback: cannot write "
                        f"{self.paths.good_model(project)}: {exc.strerror or exc}")
        return ""

    def _without_jobs(self, project: str, good: Path, res: Resolved | None
                      ) -> tuple[Path, dict]:
        """The saved healthy model, without the release jobs of it or of the failed revision:
        a rollback never runs a job again (compose removes their containers as orphans)."""
        doc = json.loads(good.read_text())
        model = doc.get("services") or {}
        jobs = {j.service for j in (res.jobs if res is not None else ())}
        jobs |= xvigo.parse(doc.get(xvigo.KEY))[0].job_services()
        if not jobs & set(model):
            return good, model
        doc["services"] = {k: v for k, v in model.items() if k not in jobs}
        path = good.with_name(f"{project}.rollback.json")
        fs.write_secret(path, json.dumps(doc), root=self.paths.secrets)
        return path, doc["services"]

    def _engine_gone(self) -> str:
        """Why the engine does not answer, or '' when it does. A deploy that failed because the
        engine stopped says nothing about the revision: it is neither rolled back nor held."""
        try:
            self.compose.engine_ok()
        except (DockerError, CommandTimeout) as exc:
            return f"{exc}; the next run tries again"
        return ""

    def _rollback(self, stack: Stack, action: Action, reason: str, record: StackRecord,
                  revision: str, kept: str = "", res: Resolved | None = None,
                  code: str = reasons.HEALTH_CHECK_FAILED) -> StackResult:
        """`code`: the named reason of the failure (core/reasons.py), when nothing restores
        the last healthy state."""
        project = self.project_prefix + stack.name
        gone = self._engine_gone()
        if gone:
            return StackResult(stack.name, action.kind, False,
                               f"{stack.name}: failed ({gone}; {reason})", hold=False,
                               reason=reasons.ENGINE_UNAVAILABLE)
        good = self.paths.good_model(project)
        last = record.revision[:12]
        if kept:  # a failed zero-downtime rollout never touched the old container
            for job in res.jobs if res is not None else ():  # as the old revision left it
                self._remove_job(project, job.service)
            return StackResult(stack.name, action.kind, False,
                               f"{stack.name}: rolled back to {last or 'the running container'}"
                               f"; {revision[:12]} failed: {reason} ({kept} kept serving)",
                               containers=self.compose.containers(project), hold=True,
                               rolled_back_to=last, reason=reasons.ROLLED_BACK)
        if not record.containers or not good.is_file():
            note = ("nothing to roll back to" if not record.containers else
                    "its last healthy state is lost (the secrets tmpfs was cleared)")
            return StackResult(stack.name, action.kind, False,
                               f"{stack.name}: failed ({reason}; {note})", hold=True,
                               reason=code)
        self.log(f"{stack.name}: {reason}; rolling back to {last}")
        good, model = self._without_jobs(project, good, res)
        up = self.compose.up_model(project, good, self.pulls.for_images(
            str((svc or {}).get("image") or "") for svc in model.values()))
        counts = {name: n for name, svc in model.items() if (n := health.replicas(svc)) != 1}
        timeout = rollback_timeout(json.loads(good.read_text()), res, self.health_timeout)
        verdict = (self.gate(project, list(model), timeout, counts=counts)
                   if up.ok else health.Verdict(health.FAIL, f"docker compose up: {up.error(3)}"))
        if verdict.status != health.OK:
            return StackResult(stack.name, action.kind, False,
                               f"{stack.name}: failed ({reason}); the rollback to {last} "
                               f"failed too: {self._explain(verdict)}", hold=True,
                               reason=code)
        return StackResult(stack.name, action.kind, False,
                           f"{stack.name}: rolled back to {last}; {revision[:12]} failed: "
                           f"{reason}", containers=self.compose.containers(project),
                           hold=True, rolled_back_to=last, reason=reasons.ROLLED_BACK)


@record
class ComposeEngine:
    """`engines.Engine` on Docker Compose: one compose project per stack on this host."""

    name: ClassVar[str] = engines.COMPOSE
    run: engines.Run

    @classmethod
    def start(cls, run: engines.Run) -> ComposeEngine:
        return cls(run)

    @property
    def compose(self) -> Compose:
        return self.run.compose

    def observe(self, stack: str = "") -> Observed:
        s = self.run.settings
        return engines.observe(self.compose, s.project_prefix, s.project(stack) if stack else "")

    def deployer(self) -> Deployer:
        s, run = self.run.settings, self.run
        return Deployer(self.compose, s.project_prefix, run.paths, s.health_timeout, run.log,
                        pulls=run.pulls if run.pulls is not None else registries.Pulls(),
                        journal=run.journal)

    def deploy(self, stack: Stack, action: Action, res: Resolved, before: tuple[Container, ...],
               record: StackRecord, revision: str) -> StackResult:
        return self.deployer().deploy(stack, action, res, before, record, revision)

    def remove(self, name: str) -> StackResult:
        project = self.run.settings.project(name)
        try:
            out = self.compose.down(project)
            if not out.ok:
                return StackResult(name, REMOVE, False, f"{name}: failed to remove "
                                   f"(docker compose down: {out.error(3)})")
            fs.remove(self.run.paths.good_model(project))
        except CommandTimeout as exc:
            return StackResult(name, REMOVE, False, f"{name}: failed to remove ({exc})")
        except Exception as exc:  # fails this removal only
            return StackResult(name, REMOVE, False,
                               self.run.mask(f"{name}: failed to remove ({crash_line(exc)})"))
        return StackResult(name, REMOVE, True, f"{name}: removed (no longer in the repo)")

    def remove_images(self, images: Collection[str]) -> None:
        """Remove images vigo deployed that no stack keeps for a rollback any more; docker
        refuses to remove one a container still uses, and that is fine."""
        for image in sorted(images):
            try:
                removed = self.compose.remove_image(image).ok
            except Exception as exc:  # an image that stays is no failure of the run
                self.run.journal(f"warning: image {image}: not removed ({crash_line(exc)})")
                continue
            if removed:
                self.run.journal(f"image {image}: removed (older than the last "
                                 f"{self.run.settings.keep_images} revisions)")

    def job_hashes(self, stack: Stack, res: Resolved, guess: Guess | None = None) -> Resolved:
        """The config hash each service gets with vigo's override (`config_hashes`: what the
        rollout compares with the running container), and each release job's (`job_hashes`:
        what `vigo plan` and the deploy compare with the job's completed container, a job runs
        once per change). Asked once, at resolve; res unchanged when compose cannot say.
        `guess`: the bytes of the override file before, and compose's answer for it (asked
        beside the model, Resolver._guess): taken when the override written now is the same
        bytes, whichever of the two compose read (the file is replaced whole)."""
        project = self.run.settings.project(stack.name)
        paths = self.run.paths
        try:
            override = self.deployer()._override(project, stack, res)
            hashes = self._guessed(override, guess)
            if hashes is None:
                hashes = self.compose.config_hashes(
                    project, [paths.runtime / stack.compose_file, override],
                    [paths.secrets / rel for rel in stack.interpolation_env])
        except (OSError, DockerError, CommandTimeout):
            return res  # the deploy asks compose again
        return replace(res, config_hashes=hashes,
                       job_hashes={j.service: hashes.get(j.service, "") for j in res.jobs})

    @staticmethod
    def _guessed(override: Path, guess: Guess | None) -> dict[str, str] | None:
        """The guess's hashes when `override` holds the bytes it was asked with, else None."""
        if guess is None or override.read_bytes() != guess[0]:
            return None
        try:
            hashes = guess[1].result()
        except (OSError, DockerError, CommandTimeout):
            return None  # asked again, the ordinary way
        return hashes if isinstance(hashes, dict) else None
