"""One reconcile: lock -> source -> render -> secrets -> observe -> plan -> apply -> record.

This room only sequences the stages, each in its own: source.py (fetch, signatures, checkout),
core/render.py, secrets.py, runtime.py, engines/ (observe, deploy, remove), resolve.py,
core/plan.py, record.py; and keeps one stack's failure from stopping the others. `vigo plan`
runs the same steps up to the plan in a private temp dir and changes nothing.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from vigo.adapters import fs
from vigo.adapters.compose import Compose, DockerError, Listing
from vigo.adapters.engine import local_capacity
from vigo.adapters.git import Git, git_auth, url_secrets
from vigo.adapters.lock import Locked, LockError, RunLock
from vigo.adapters.run import CommandTimeout, Masker, Runner
from vigo.adapters.sops import Sops
from vigo.config import Settings
from vigo.core import reasons, render, trust, xvigo
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
    DesiredState,
    Observed,
    Options,
    Paths,
    Plan,
    Report,
    Resolved,
    StackResult,
)
from vigo.core.plan import (
    blocked,
    conflict,
    guard_overlay,
    needs_resolve,
    overlay_record,
    phases,
    plan,
)
from vigo.core.records import replace
from vigo.host import engines, record, runtime, state
from vigo.host.crash import crash_line
from vigo.host.resolve import Resolver, apply_order, stack_order
from vigo.host.secrets import Secrets
from vigo.host.source import Source

__all__ = ["EXIT_FAILED", "EXIT_INVALID", "EXIT_LOCKED", "EXIT_OK", "EXIT_SOURCE", "Reconciler",
           "Report", "crash_line", "parallelism"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_SOURCE, EXIT_LOCKED = (reasons.exit_code(r) for r in (
    reasons.CONVERGED, reasons.STACK_FAILED, reasons.SETTINGS_INVALID, reasons.SOURCE_FAILED,
    reasons.LOCKED))  # the table: core/reasons.py
PARALLEL_PER_CPU = 4  # a deploy mostly waits (engine, health polls): more than one per core
PARALLEL_MAX = 16  # the engine serialises network attaches; compose is ~40 MB a process
COMPOSE_MB = 100  # memory one concurrent deploy may take (compose, docker CLI, vigo thread)
ACME_JSON = "proxy/acme/acme.json"
ASKED_FOR_S = 5.0  # the container list asked under the lock is used if read within this


class Reconciler:
    def __init__(self, settings: Settings, *, verbose: bool = False,
                 emit: Callable[[str], None] = print,
                 debug: Callable[[str], None] | None = None,
                 trace: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.trace = trace  # --debug: where a crash's traceback goes
        self.masker = Masker()
        self.masker.add(url_secrets(settings.repo))
        self.emit = lambda line: emit(self.masker(line))
        self.runner = Runner(self.masker, log=debug or self.emit, verbose=verbose)
        self.git = Git(self.runner, settings.git_timeout, git_auth(settings))
        self.sops = Sops(self.runner)
        self.compose = Compose(self.runner, settings.compose_timeout)
        # the stages before the plan, each in its room
        self.source = Source(settings, self.git, self.masker, self.emit, self._warn)
        self.secrets = Secrets(settings, self.sops, self.masker, self.emit, self._warn)
        self.resolver = Resolver(settings, self.compose, self.masker, self._progress, self.emit)
        self.fail_codes: dict[str, str] = {}  # stack -> the named reason the plan fails it for
        self.asked: Listing | None = None  # the engine's container list, asked at the lock

    # -- the two entry points ---------------------------------------------------------------

    def apply(self, options: Options = Options()) -> Report:
        s = self.settings
        report = Report("apply", s.host)
        t0 = time.monotonic()
        with RunLock(s.state / "lock"):
            # The engine lists the containers while the state loads, git fetches and the tree
            # renders: one question, asked under the lock (no other run changes them), read
            # by _observe (or dropped, in the finally below).
            self.asked = engines.ask(self.compose, s.project_prefix)
            try:
                st, warning = state.load(s.state)
            except BaseException:
                self._drop_asked()
                raise
            if warning:
                self._warn(report, warning)
            st.begin(report.started)
            handled = False
            try:
                self._run_apply(report, st, options)
                handled = True
            except Exception as exc:  # any input that crashes a run is a recorded failure
                self._crashed(report, exc)
                handled = True
            finally:
                self._drop_asked()
                if not handled:  # Ctrl-C, SIGTERM's SystemExit: never recorded as ok
                    report.reason = reasons.INTERRUPTED if report.ok else report.reason
                    report.error = report.error or "the run was interrupted"
                report.duration = time.monotonic() - t0
                st.finish(state.now(), report.duration, report.exit_code, report.reason,
                          self.masker(report.error))
                from vigo.host import hooks  # the lifecycle's end: never raises

                hooks.finished(hooks.Run(s, self.masker, self.emit, self.compose.containers,
                                         lambda: self._swarm_samples(st)), report, st)
                try:
                    state.save(s.state, st)
                except Exception as exc:  # a full disk: the old file stays whole (atomic write)
                    report.reason = reasons.STATE_UNSAVED if report.ok else report.reason
                    report.error = report.error or f"cannot save {state.path(s.state)}"
                    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else (
                        exc if isinstance(exc, OSError) else crash_line(exc))
                    self.emit(f"state: cannot save {state.path(s.state)}: {why}; the previous "
                              "state file is kept, the next run starts from it")
        return report

    def plan(self, options: Options = Options(), fetch: bool = True) -> Report:
        s = self.settings
        report = Report("plan", s.host)
        t0 = time.monotonic()
        import shutil  # here: an idle apply needs neither (shutil loads zlib, bz2, lzma)
        import tempfile

        shm = Path("/dev/shm")  # the plan's decrypted env files stay off the disk when it can
        tmp = Path(tempfile.mkdtemp(prefix="vigo-plan-", dir=shm if shm.is_dir() else None))
        try:
            os.chmod(tmp, 0o700)
            paths = Paths(tmp / "runtime", tmp / "secrets", tmp / "overrides", tmp / "manifest")
            with RunLock(s.state / "lock"):
                st, warning = state.load(s.state)
                if warning:
                    self._warn(report, warning)
                if self.secrets.key_refused(report):
                    return report
                self.asked = engines.ask(self.compose, s.project_prefix)  # listed meanwhile
                desired = self.source.desired(report, fetch, trust.base(st))
                if desired is None:
                    return report
                result = self._prepare(report, desired, st, paths, options, persist=False)
                if result is not None:
                    report.plan = result[0]
        except (Locked, LockError):
            raise  # nothing was done: the CLI says so (exit 75, 2)
        except Exception as exc:  # the same safety net as apply: one line, no traceback
            self._crashed(report, exc)
        finally:
            self._drop_asked()
            shutil.rmtree(tmp, ignore_errors=True)
            report.duration = time.monotonic() - t0
        return report

    def retry(self, stack: str) -> str:
        """Let the next run try a held (failed, rolled back) revision of a stack again."""
        with RunLock(self.settings.state / "lock"):
            st, _ = state.load(self.settings.state)
            held = st.stack(stack)
            if held is None or not held.retry():
                return f"{stack}: nothing to retry (no failed revision is held)"
            state.save(self.settings.state, st)
        return f"{stack}: the next run tries {held.failed_revision[:12]} again"

    # -- steps --------------------------------------------------------------------------------

    def _progress(self, text: str) -> None:
        """Long steps inside one stack's deploy (pulls, health waits, rollouts): shown on a
        terminal and with -v; under systemd (no terminal) only the result lines."""
        if (self.runner.verbose or sys.stderr.isatty()) and self.runner.log:
            self.runner.log(self.masker(text))

    def _crashed(self, report: Report, exc: Exception) -> None:
        """An exception escaped a step: the run failed. One masked line naming where it
        happened; the traceback only with --debug."""
        report.fail(reasons.CRASHED, self.masker(crash_line(exc)))
        self.emit(f"error: {report.error}; the run stopped there, the next run tries again")
        if self.trace is not None:
            import traceback  # only with --debug (it loads textwrap)

            self.trace(self.masker("".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__))))

    def _warn(self, report: Report, text: str) -> None:
        report.warnings.append(self.masker(text))
        self.emit(f"warning: {text}")

    def _run_apply(self, report: Report, st: state.RunRecord, options: Options) -> None:
        s = self.settings
        if not s.secrets_on_disk and fs.filesystem_type(s.secrets) not in ("tmpfs", "ramfs"):
            report.reason = reasons.SETTINGS_INVALID
            report.error = (f"secrets folder {s.secrets} is not on a tmpfs: decrypted env files "
                            "must never reach the disk. Mount one (`mount -t tmpfs -o "
                            f"mode=0700,size=16m tmpfs {s.secrets}`), point `secrets` at one "
                            "(/dev/shm/vigo), or set secrets_on_disk = true")
            self.emit(f"settings: {report.error}")
            return
        if self.secrets.key_refused(report):
            return
        paths = Paths(s.runtime, s.secrets, s.state / "overrides", s.state / "rendered.json")
        desired = self.source.desired(report, accepted=trust.base(st),
                                      allow_rewind=options.allow_rewind, keep=True)
        if desired is None:
            return
        if desired.env_files and not s.age_key_file.exists():  # lost: not one stack can change
            report.reason = reasons.SETTINGS_INVALID
            report.error = (f"the age key {s.age_key_file} does not exist and the repo has "
                            f"{len(desired.env_files)} encrypted env file(s); fix: restore this "
                            "host's age key there (root's, mode 0600) or set age_key_file; "
                            "nothing changed, the running containers stay")
            self.emit(f"settings: {report.error}")
            return
        st.attempt(desired.revision)
        self.source.accept(report, st, desired.revision)
        result = self._prepare(report, desired, st, paths, options, persist=True)
        if result is None:
            return
        the_plan, observed, resolved = result
        report.plan = the_plan
        if not the_plan.refusal:  # what guard_overlay compares the next run with
            st.remember_overlay(overlay_record(desired))
        self._execute(report, the_plan, desired, observed, resolved, st, paths)

    def _prepare(self, report: Report, desired: DesiredState, st: state.RunRecord, paths: Paths,
                 options: Options, *, persist: bool
                 ) -> tuple[Plan, Observed, dict[str, Resolved]] | None:
        """Secrets, runtime tree, observe, resolve, plan. Only vigo's own folders change."""
        records = st.stacks
        try:
            observed = self._observe(records)
        except (DockerError, CommandTimeout) as exc:
            report.fail(reasons.ENGINE_UNAVAILABLE, str(exc))
            self.emit(f"docker: {exc}")
            return None
        candidates = needs_resolve(desired, observed, records, options.force)
        failures = self.secrets.decrypt(desired, candidates, st, paths,
                                        persist=persist and not options.force)
        codes = dict.fromkeys(failures, reasons.DECRYPT_FAILED)  # stack -> why it fails, named
        # YAML over the caps (an alias bomb): failed before it reaches the runtime or compose
        failures.update(render.yaml_problems(desired, [n for n in candidates
                                                       if n not in failures]))
        runtime.write(desired, paths, failures, lambda text: self._warn(report, text))
        if any(s.name == PROXY for s in desired.stacks):
            err = fs.ensure_private_file(paths.runtime / ACME_JSON, paths.runtime)
            if err:
                failures[PROXY] = err
        _coded(codes, failures, reasons.RENDER_FAILED)
        names = [n for n in candidates if n not in failures]
        failures.update(self.resolver.policy(desired, names, paths))
        resolved = self.resolver.resolve_all(desired, names, paths, failures)
        failures.update(self.resolver.links(resolved, paths, set(desired.env_files)))
        _coded(codes, failures, reasons.POLICY_REFUSED)
        after = stack_order(desired, records, resolved)
        for name, why in xvigo.order_problems(after, [s.name for s in desired.stacks]).items():
            if name in resolved:
                failures.setdefault(name, why)
                resolved.pop(name)
        _coded(codes, failures, reasons.RESOLVE_FAILED)
        self.fail_codes = codes  # the reasons of the plan's FAIL actions (_fail_reason)
        the_plan = guard_overlay(plan(desired, observed, records, resolved, failures, options),
                                 desired, st.overlay, options)
        return the_plan, observed, resolved

    def _drop_asked(self) -> None:
        if self.asked is not None:
            self.asked.close()
            self.asked = None

    def _observe(self, records: dict[str, state.StackRecord] | None = None) -> Observed:
        asked, self.asked = self.asked, None  # asked at the lock: read once
        if asked is not None and time.monotonic() - asked.at > ASKED_FOR_S:
            asked.close()  # a long fetch: what runs now, not what ran before it
            asked = None
        observed = engines.observe(self.compose, self.settings.project_prefix, asked=asked)
        if engines.swarm_in_use(self.settings, records or {}):  # Compose-only hosts: never
            from vigo.host.engines import swarm

            swarm_engine = swarm.engine(self.settings, self.compose, self._progress)
            observed = Observed(observed.containers + swarm_engine.observe().containers)
        return observed

    def _swarm_samples(self, st: state.RunRecord) -> tuple:
        """The swarm services' metrics; a Compose-only host asks (and imports) nothing."""
        if not engines.swarm_shown(self.settings, st.stacks):
            return ()
        from vigo.host.engines import swarm

        return swarm.samples(self.settings, self.compose, st.stacks)

    def _parallel(self, stacks: int) -> int:
        """How many stacks deploy at once: parallelism(), from the engine's CPUs, ours and the
        memory available now."""
        try:
            engine_cpus = self.compose.engine_cpus()
        except (DockerError, CommandTimeout):
            engine_cpus = 0
        n = parallelism(stacks, engine_cpus, *local_capacity())
        if self.runner.verbose:
            self.emit(f"deploying {stacks} stack(s), {n} at a time")
        return n

    # -- apply ----------------------------------------------------------------------------

    def _execute(self, report: Report, the_plan: Plan, desired: DesiredState,
                 observed: Observed, resolved: dict[str, Resolved], st: state.RunRecord,
                 paths: Paths) -> None:
        records = st.stacks
        results: dict[str, StackResult] = {}
        work = the_plan.by_kind(CREATE, UPDATE)
        engine = engines.Engines(engines.Run(  # an idle run starts none: no deployer, no pool
            self.settings, self.compose, paths, self._progress, self.emit, self.masker,
            pulls=self.secrets.pulls(report, desired, paths) if work else None))
        after = apply_order(desired, records, resolved, self.settings.project)
        failed = {a.stack for a in the_plan.by_kind(FAIL, HOLD)}
        converged: dict[str, bool] = {}  # stack -> ok, of the creates and updates so far

        def up(action: Action, again: bool = False) -> StackResult:
            try:
                stack = desired.stack(action.stack)
                assert stack is not None
                res = resolved[stack.name]
                record = st.record(stack.name)  # record.write() makes it anyway
                on = engine(res, record)  # its x-vigo.engine, the host's, or where it ran
                before = (on.observe(stack.name).stack(stack.name) if again
                          else observed.stack(stack.name))  # a retry starts from what runs now
                return on.deploy(stack, action, res, before, record, desired.revision)
            except Exception as exc:  # whatever one deploy raises fails that stack only
                return StackResult(action.stack, action.kind, False,
                                   self.masker(f"{action.stack}: failed ({crash_line(exc)})"),
                                   reason=reasons.CRASHED)

        def publish(result: StackResult) -> None:
            results[result.stack] = result
            converged[result.stack] = result.ok
            self.emit(result.message)

        conflicted: list[Action] = []

        def publish_or_retry(result: StackResult, action: Action) -> None:
            if not result.ok and conflict(result.message):
                conflicted.append(action)  # another stack may release it in this run
                converged[action.stack] = False  # the stacks after it wait for the next run
                self._progress(f"{result.message}; tried again after the other stacks")
            else:
                publish(result)

        for phase in phases(the_plan, after):  # frees before it takes, in x-vigo.after order
            if phase[0].kind == REMOVE:
                for action in phase:
                    publish(engine(None, records.get(action.stack)).remove(action.stack))
                continue
            skipped = [a for a in phase if blocked(a.stack, after, converged, failed)]
            for action in skipped:  # not attempted: nothing of it changes, nothing is held
                publish(StackResult(action.stack, action.kind, False,
                                    blocked(action.stack, after, converged, failed),
                                    reason=reasons.BLOCKED))
            phase = tuple(a for a in phase if a not in skipped)
            if not phase:
                continue
            if len(phase) == 1:
                publish_or_retry(up(phase[0]), phase[0])
            else:  # at once, as many as the host takes
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(max_workers=self._parallel(len(phase))) as pool:
                    for action, result in zip(phase, pool.map(up, phase), strict=True):
                        publish_or_retry(result, action)
        # Once more, from what runs now; a stack that still conflicts and was not rolled back
        # (nothing of it served before) is not held: the next run tries again.
        for action in conflicted:
            result = up(action, again=True)
            publish(replace(result, hold=False)
                    if conflict(result.message) and not result.rolled_back_to else result)
        for action in the_plan.actions:
            if action.kind == FAIL:
                publish(StackResult(action.stack, FAIL, False, action.line(),
                                    reason=self._fail_reason(desired, action.stack)))
            elif action.kind == KEEP:
                publish(StackResult(action.stack, KEEP, True, action.line()))
            elif action.kind == HOLD:
                publish(StackResult(action.stack, HOLD, False, action.line()))
            elif action.kind == UNCHANGED:
                results[action.stack] = StackResult(action.stack, UNCHANGED, True,
                                                    action.line())
        if the_plan.refusal:
            self.emit(f"prune refused: {the_plan.refusal}")
        dropped = record.write(desired, results, st, resolved, self.settings.keep_images,
                               self.masker)
        if dropped:  # images no stack keeps for a rollback any more
            engine(None).remove_images(dropped - record.kept_images(records))
        report.results = [results[a.stack] for a in the_plan.actions if a.stack in results]
        if the_plan.refusal or any(not r.ok for r in report.results):
            report.reason = reasons.PRUNE_REFUSED if the_plan.refusal else reasons.STACK_FAILED
            report.error = the_plan.refusal or "; ".join(
                r.message for r in report.results if not r.ok)
        elif skipped := [r.stack for r in report.results if r.reason in reasons.NOT_APPLIED]:
            report.reason = reasons.NOT_LEADER  # exit 0; this revision is not applied here
            report.error = (f"not applied on this node: {', '.join(skipped)} (the swarm's "
                            "leader applies)")
        else:
            st.mark_applied(desired.revision)
        if not work and not the_plan.by_kind(REMOVE, FAIL, HOLD):
            self.emit(f"{desired.revision[:12]}: nothing to do, {len(desired.stacks)} "
                      "stack(s) unchanged")

    def _fail_reason(self, desired: DesiredState, name: str) -> str:
        """The named reason of a stack the plan fails (in plan()'s order of its problems)."""
        stack = desired.stack(name)
        if stack is not None and stack.problems:
            return reasons.RENDER_FAILED
        return self.fail_codes.get(name, reasons.RESOLVE_FAILED)


def _coded(codes: dict[str, str], failures: dict[str, str], code: str) -> None:
    """Name the reason of the failures found since the last call."""
    codes.update(dict.fromkeys(failures.keys() - codes.keys(), code))


def parallelism(stacks: int, engine_cpus: int, local_cpus: int, mem_mb: int | None) -> int:
    """Stacks deployed at once: PARALLEL_PER_CPU per CPU of the smaller side (compose runs
    here, the containers start on the engine's host, which may be another), at most
    PARALLEL_MAX, no more than the memory available (COMPOSE_MB each) and the stacks."""
    cpus = min([c for c in (engine_cpus, local_cpus) if c > 0] or [1])
    n = min(stacks, PARALLEL_PER_CPU * cpus, PARALLEL_MAX)
    if mem_mb is not None:
        n = min(n, mem_mb // COMPOSE_MB)
    return max(1, n)

