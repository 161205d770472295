"""One reconcile: lock -> source -> render -> secrets -> observe -> plan -> apply -> record.

`vigo plan` runs the same steps up to the plan in a private temp dir and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigo import config
from vigo.adapters import fs
from vigo.adapters.compose import Compose, DockerError
from vigo.adapters.engine import local_capacity
from vigo.adapters.git import (
    Git,
    SignatureSetupError,
    SourceError,
    git_auth,
    signature_pins,
    url_secrets,
)
from vigo.adapters.lock import Locked, LockError, RunLock
from vigo.adapters.run import CommandTimeout, Masker, Runner
from vigo.adapters.sops import DecryptError, Sops, credential_problem, key_problem
from vigo.config import Settings
from vigo.core import dotenv, reasons, render, trust, xvigo
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
    Stack,
    StackResult,
)
from vigo.core.plan import (
    blocked,
    completed,
    conflict,
    guard_overlay,
    needs_resolve,
    overlay_record,
    phases,
    plan,
)
from vigo.host import state

if TYPE_CHECKING:  # imported where a stack may change, never by an idle run
    from vigo.core import policy, registries

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_SOURCE, EXIT_LOCKED = (reasons.exit_code(r) for r in (
    reasons.CONVERGED, reasons.STACK_FAILED, reasons.SETTINGS_INVALID, reasons.SOURCE_FAILED,
    reasons.LOCKED))  # the table: core/reasons.py
PARALLEL_PER_CPU = 4  # a deploy mostly waits (engine, health polls): more than one per core
PARALLEL_MAX = 16  # the engine serialises network attaches; compose is ~40 MB a process
COMPOSE_MB = 100  # memory one concurrent deploy may take (compose, docker CLI, vigo thread)
ACME_JSON = "proxy/acme/acme.json"


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
        self.fail_codes: dict[str, str] = {}  # stack -> the named reason the plan fails it for

    # -- the two entry points ---------------------------------------------------------------

    def apply(self, options: Options = Options()) -> Report:
        s = self.settings
        report = Report("apply", s.host)
        t0 = time.monotonic()
        with RunLock(s.state / "lock"):
            st, warning = state.load(s.state)
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
                if not handled:  # Ctrl-C, SIGTERM's SystemExit: never recorded as ok
                    report.reason = reasons.INTERRUPTED if report.ok else report.reason
                    report.error = report.error or "the run was interrupted"
                report.duration = time.monotonic() - t0
                st.finish(state.now(), report.duration, report.exit_code, report.reason,
                          self.masker(report.error))
                from vigo.host import hooks  # the lifecycle's end: never raises

                hooks.finished(hooks.Run(s, self.masker, self.emit, self.compose.containers),
                               report, st)
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
        shm = Path("/dev/shm")  # the plan's decrypted env files stay off the disk when it can
        tmp = Path(tempfile.mkdtemp(prefix="vigo-plan-", dir=shm if shm.is_dir() else None))
        try:
            os.chmod(tmp, 0o700)
            paths = Paths(tmp / "runtime", tmp / "secrets", tmp / "overrides", tmp / "manifest")
            with RunLock(s.state / "lock"):
                st, warning = state.load(s.state)
                if warning:
                    self._warn(report, warning)
                if self._key_refused(report):
                    return report
                desired = self._source(report, fetch, trust.base(st))
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
            shutil.rmtree(tmp, ignore_errors=True)
            report.duration = time.monotonic() - t0
        return report

    def retry(self, stack: str) -> str:
        """Let the next run try a held (failed, rolled back) revision of a stack again."""
        with RunLock(self.settings.state / "lock"):
            st, _ = state.load(self.settings.state)
            record = st.stack(stack)
            if record is None or not record.retry():
                return f"{stack}: nothing to retry (no failed revision is held)"
            state.save(self.settings.state, st)
        return f"{stack}: the next run tries {record.failed_revision[:12]} again"

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
            self.trace(self.masker("".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__))))

    def _warn(self, report: Report, text: str) -> None:
        report.warnings.append(self.masker(text))
        self.emit(f"warning: {text}")

    def _key_refused(self, report: Report) -> bool:
        """Every run, before anything is touched: one stat of the age key (docs/security.md)."""
        why = key_problem(self.settings.age_key_file) or credential_problem(self.settings)
        if why:
            report.fail(reasons.SETTINGS_INVALID, why)
            self.emit(f"settings: {why}; nothing changed")
        return bool(why)

    def _source(self, report: Report, fetch: bool = True, accepted: str = "",
                allow_rewind: bool = False) -> DesiredState | None:
        s = self.settings
        try:
            if fetch:
                fetched = self.git.fetch(s.repo, s.branch, s.checkout)
                if not self._trusted(report, fetched, accepted, allow_rewind):
                    return None  # before the checkout moves: nothing changed
                rev = self.git.checkout(s.repo, s.branch, s.checkout, fetched)
                if self.git.recovered:
                    self._warn(report, self.git.recovered)
            else:
                rev = self.git.head(s.checkout)
                if not rev:
                    raise SourceError(f"{s.checkout} has no checkout yet: run without --no-fetch")
        except (SourceError, CommandTimeout) as exc:
            report.fail(reasons.SOURCE_FAILED, self.masker(str(exc)))
            self.emit(f"source: {report.error}; nothing changed, the next run tries again")
            return None
        report.revision = rev
        desired = render.render(s.checkout, s.host, rev)
        for w in desired.warnings:
            self._warn(report, w)
        if desired.error:  # stacks may be hidden: nothing is pruned, nothing changes
            report.fail(reasons.RENDER_FAILED, self.masker(desired.error))
            self.emit(f"render: {report.error}; nothing changed")
            return None
        return desired

    def _trusted(self, report: Report, fetched: str, accepted: str,
                 allow_rewind: bool) -> bool:
        """Signed commits (trust.py), when a key setting is on: the fetched commit must descend
        from the last accepted one, and every commit in between be signed by a trusted key."""
        s = self.settings
        if s.allowed_signers is None and s.gpg_keyring is None:
            return True
        try:
            pins = signature_pins(s.allowed_signers, s.gpg_keyring)
        except SignatureSetupError as exc:
            report.fail(reasons.SETTINGS_INVALID, f"signed commits: {exc}")
            self.emit(f"settings: {report.error}; nothing changed")
            return False
        if fetched == accepted:  # an idle run asks git nothing more
            return True
        decision = trust.verify(
            accepted or self.git.read_ref(s.checkout, trust.REF), fetched,
            trust.SSH if s.allowed_signers else trust.GPG, allow_rewind,
            is_ancestor=lambda a, b: self.git.is_ancestor(s.checkout, a, b),
            log=lambda revisions: self.git.signatures(s.checkout, revisions, pins))
        if not decision.ok:
            report.fail(reasons.SIGNATURE_REFUSED, decision.line)
            report.revision = fetched
            self.emit(f"source: {decision.line}; nothing changed")  # an error in the journal
        elif decision.line:
            self.emit(f"signatures: {decision.line}")
        return decision.ok

    def _accept(self, report: Report, st: state.RunRecord, rev: str) -> None:
        """Remember the commit apply checked out: the base of the next signature check. Saved
        at once, then pinned as refs/vigo/applied (gc keeps it): the state is never older."""
        s = self.settings
        if not st.accept(rev):  # trust.STATE_KEY
            return
        if s.allowed_signers is None and s.gpg_keyring is None:
            return
        try:
            state.save(s.state, st)
        except OSError as exc:
            self._warn(report, f"cannot save the state file: {exc}")
        error = self.git.update_ref(s.checkout, trust.REF, rev)
        if error:
            self._warn(report, f"cannot pin {rev[:12]} as {trust.REF}: {error}")

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
        if self._key_refused(report):
            return
        paths = Paths(s.runtime, s.secrets, s.state / "overrides", s.state / "rendered.json")
        desired = self._source(report, accepted=trust.base(st),
                               allow_rewind=options.allow_rewind)
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
        self._accept(report, st, desired.revision)
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
            observed = self._observe()
        except (DockerError, CommandTimeout) as exc:
            report.fail(reasons.ENGINE_UNAVAILABLE, str(exc))
            self.emit(f"docker: {exc}")
            return None
        candidates = needs_resolve(desired, observed, records, options.force)
        failures = self._secrets(desired, candidates, st, paths,
                                 persist=persist and not options.force)
        codes = dict.fromkeys(failures, reasons.DECRYPT_FAILED)  # stack -> why it fails, named
        # YAML over the caps (an alias bomb): failed before it reaches the runtime or compose
        failures.update(render.yaml_problems(desired, [n for n in candidates
                                                       if n not in failures]))
        self._render_runtime(report, desired, paths, failures)
        if any(s.name == PROXY for s in desired.stacks):
            err = fs.ensure_private_file(paths.runtime / ACME_JSON, paths.runtime)
            if err:
                failures[PROXY] = err
        _coded(codes, failures, reasons.RENDER_FAILED)
        names = [n for n in candidates if n not in failures]
        failures.update(self._policy(desired, names, paths))
        resolved = {}
        if names:  # resolve first, then judge what Docker would run (policy.py)
            from vigo.core import lint  # ruamel.yaml: imported only when a stack may change

            proxy_network = lint._proxy_network(paths.runtime)
            for name in names:
                if name in failures:
                    continue
                stack = desired.stack(name)
                assert stack is not None
                keys = set().union(*(lint.env_key_names(desired.env_files[rel])
                                     for rel in stack.interpolation_env))
                res = self._resolve(stack, paths, set(desired.files), proxy_network, keys)
                if res.policy:
                    failures[name] = "; ".join(res.policy)
                else:
                    resolved[name] = res
        failures.update(self._links(resolved, paths, set(desired.env_files)))
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

    def _policy(self, desired: DesiredState, names: list[str], paths: Paths) -> dict[str, str]:
        """The text rules of `vigo check` that need no resolved model (pinned images, Traefik
        names, env files, includes), stack by stack: a stack with an error is not applied."""
        if not names:
            return {}
        from vigo.core import lint  # ruamel.yaml: imported only when a stack may change

        policy = config.policy_of(self.settings)
        failures = {}
        for name in names:
            stack = desired.stack(name)
            assert stack is not None
            keys = set().union(*(lint.env_key_names(desired.env_files[rel])
                                 for rel in stack.interpolation_env))
            errors = [f for f in lint.lint_stack(paths.runtime, name, stack.compose_file, keys,
                                                 policy, resolved=True)
                      if f.severity == lint.ERROR]
            if errors:
                failures[name] = "; ".join(
                    f"policy [{f.rule}] {f.path}" + (f":{f.line}" if f.line else "")
                    + f": {f.message}; fix: {f.fix[:1].lower()}{f.fix[1:].rstrip('.')}"
                    for f in errors)
        return failures

    def _observe(self) -> Observed:
        prefix = self.settings.project_prefix
        return Observed(tuple(c for c in self.compose.containers(instance=prefix)
                              if c.instance == prefix and c.project == prefix + c.stack))

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

    def _secrets(self, desired: DesiredState, candidates: list[str], st: state.RunRecord,
                 paths: Paths, *, persist: bool) -> dict[str, str]:
        """Decrypt the env files the candidate stacks use (when their ciphertext changed or
        the tmpfs lost them). Returns failures per stack."""
        s = self.settings
        env_dir = fs.private_dir(paths.secrets / "env", root=fs.private_dir(paths.secrets))
        known: dict[str, str] = st.env if persist else {}
        wanted = {rel for name in candidates for rel in desired.stack(name).env_files}  # type: ignore[union-attr]
        failed: dict[str, str] = {}
        for rel in sorted(wanted):
            src = desired.env_files[rel]
            dst = paths.secrets / rel
            digest = render.digest(src)
            if known.get(rel) == digest and dst.is_file():
                self.masker.add(v for _, v in dotenv.parse_written(dst.read_text()))
                continue
            try:
                pairs = dotenv.parse_sops(self.sops.decrypt_dotenv(src, s.age_key_file))
            except (DecryptError, dotenv.DotenvError, CommandTimeout) as exc:
                failed[rel] = f"{rel}: {exc}"
                fs.remove(dst, root=paths.secrets)
                known.pop(rel, None)
                continue
            self.masker.add(v for _, v in pairs)
            try:
                fs.write_secret(dst, dotenv.format_for_compose(pairs), root=paths.secrets)
            except OSError as exc:  # a full tmpfs: the stacks that use it fail, not the run
                failed[rel] = f"{rel}: cannot write {dst}: {exc.strerror or exc}"
                fs.remove(dst, root=paths.secrets)
                known.pop(rel, None)
                continue
            known[rel] = digest
        for stale in sorted(env_dir.glob("*.env")):
            rel = f"env/{stale.name}"
            if rel not in desired.env_files:
                fs.remove(stale, root=paths.secrets)
                known.pop(rel, None)
        failures: dict[str, str] = {}
        for name in candidates:
            why = [failed[rel] for rel in desired.stack(name).env_files if rel in failed]  # type: ignore[union-attr]
            if why:
                failures[name] = "; ".join(why)
        return failures

    def _render_runtime(self, report: Report, desired: DesiredState, paths: Paths,
                        failures: dict[str, str]) -> None:
        # A stack that cannot be applied keeps the files it last ran with.
        broken = {s.name for s in desired.stacks if s.problems} | set(failures)
        keep = {rel for s in desired.stacks if s.name in broken for rel in s.files}
        keep |= set(desired.blocked)
        # ... all of them, also those render cannot see now (an unreadable or odd-named folder,
        # a compose file turned into a folder): every path vigo wrote under a broken folder.
        folders = tuple(s.folder + "/" for s in desired.stacks if s.name in broken)
        try:
            written = fs.read_json(paths.manifest) if folders else None
        except (OSError, ValueError):  # sync_tree says so
            written = None
        keep |= {rel for rel in (written if isinstance(written, dict) else {})
                 if rel.startswith(folders)}
        links = {rel: paths.secrets / rel for rel in desired.env_files}
        synced = fs.sync_tree(paths.runtime, desired.files, links, keep, paths.manifest)
        if synced.warning:
            self._warn(report, synced.warning)
        for rel, why in synced.errors.items():
            name = render.owner(rel)
            if name is not None:
                failures.setdefault(name, why)
            for stack in desired.stacks:  # an env file link: every stack that reads it
                if rel in stack.env_files:
                    failures.setdefault(stack.name, why)

    def _resolve(self, stack: Stack, paths: Paths, rendered: set[str],
                 proxy_network: str = "",
                 keys: set[str] | None = None) -> Resolved:
        from vigo.core import policy  # only a stack that may change is resolved

        proxy_network = proxy_network or policy.DEFAULT_PROXY_NETWORK
        project = self.settings.project(stack.name)
        try:
            res = self.compose.config(project, [paths.runtime / stack.compose_file],
                                      [paths.secrets / rel for rel in stack.interpolation_env])
        except CommandTimeout as exc:  # fails this stack, not the run
            return Resolved({}, error=str(exc))
        if not res.ok:
            return Resolved({}, error=f"{stack.compose_file} is not valid: {res.error(4)}")
        try:
            model = json.loads(res.stdout)
        except (json.JSONDecodeError, RecursionError) as exc:
            return Resolved({}, error=f"docker compose config gave no JSON: {exc}")
        scope = policy.Scope(stack.name, project, str(paths.runtime / stack.folder),
                             proxy_network)
        rules = config.policy_of(self.settings)
        found = policy.judge(model, scope, rules)
        found += self._unresolved(stack, paths, scope, rules, keys or set())
        if found:
            from vigo.core import lint

            return Resolved({}, policy=tuple(dict.fromkeys(
                v.line(_where(*lint.locate(paths.runtime, stack.compose_file, v.service, v.key)))
                for v in found)))
        from vigo.core import health, rollout  # only a stack that may change is resolved
        services = model.get("services") or {}
        images = {name: str(svc.get("image") or "") for name, svc in services.items()}
        mounts = {name: h for name, svc in services.items()
                  if (h := _mounts_hash(svc, paths.runtime, rendered, model))}
        options, problems = xvigo.parse(model.get(xvigo.KEY), services, stack.name)
        if problems:
            return Resolved({}, error="; ".join(f"{stack.compose_file}: {p.line()}"
                                                for p in problems))
        jobs = options.job_services()
        res = Resolved(images, mounts, model=model,
                       rollouts={name: rollout.spec(svc) for name, svc in services.items()},
                       health_timeout=options.health_timeout,
                       finishes=frozenset(n for n in services
                                          if n in jobs or health.meant_to_finish(n, services)),
                       replicas={name: n for name, svc in services.items()
                                 if (n := health.replicas(svc)) != 1},
                       after=options.after, jobs=options.jobs)
        return self._job_hashes(stack, paths, res) if jobs else res

    def _job_hashes(self, stack: Stack, paths: Paths, res: Resolved) -> Resolved:
        """The config hash each release job gets with vigo's override: what `vigo plan` and the
        deploy compare with the job's completed container (a job runs once per change)."""
        from vigo.host.engines.compose import Deployer

        project = self.settings.project(stack.name)
        try:
            override = Deployer(self.compose, self.settings.project_prefix, paths,
                                self.settings.health_timeout, self._progress
                                )._override(project, stack, res)
            hashes = self.compose.config_hashes(
                project, [paths.runtime / stack.compose_file, override],
                [paths.secrets / rel for rel in stack.interpolation_env])
        except (OSError, DockerError, CommandTimeout):
            return res  # the deploy asks compose again
        return replace(res, job_hashes={j.service: hashes.get(j.service, "") for j in res.jobs})

    def _links(self, resolved: dict[str, Resolved], paths: Paths,
                env_files: set[str]) -> dict[str, str]:
        """Stacks whose bind sources (or env files, config and secret files) cross a symbolic
        link below the runtime tree or an allowed host path: refused before compose sees them,
        since the engine follows links (docs/security.md). vigo's own env file links are fine."""
        allowed = [Path(p) for p in self.settings.allow_host_paths]
        own = {paths.runtime / rel for rel in env_files}
        failures = {}
        for name, res in resolved.items():
            if res.error:
                continue
            for source in mount_sources(res.model):
                link = fs.crossed_link(Path(source), paths.runtime, allowed)
                if link is not None and link not in own:
                    failures[name] = (f"mount source {source} crosses the symbolic link "
                                      f"{link}; vigo never lets a stack mount through a link "
                                      "(a container may have planted it): remove the link")
                    break
        return failures

    def _unresolved(self, stack: Stack, paths: Paths, scope: policy.Scope, rules: policy.Policy,
                    keys: set[str]) -> list[policy.Violation]:
        """`vigo check`'s view, at apply: the model resolved with placeholders for the
        variables of encrypted env files. A security-relevant value that depends on one is
        refused here as it is offline (policy rule `unresolved`)."""
        from vigo.core import policy

        if not keys:
            return []
        reason = ""
        for numeric in (False, True):
            stand_ins = policy.placeholders(keys, numeric)
            env = paths.secrets / "placeholders" / f"{scope.project}.env"
            try:
                fs.write_secret(env, policy.env_text(stand_ins))
                res = self.compose.config(scope.project, [paths.runtime / stack.compose_file],
                                          [env])
            except (OSError, CommandTimeout) as exc:
                reason = str(exc)
                break
            finally:
                fs.remove(env)
            if res.ok:
                try:
                    model = json.loads(res.stdout)
                except (json.JSONDecodeError, RecursionError):
                    reason = "docker compose config gave no JSON"
                    break
                return [v for v in policy.judge(model, scope, rules, stand_ins)
                        if v.rule == policy.UNRESOLVED]
            reason = res.error(2)
        return [policy.unresolved_failure(scope, keys, reason)]

    # -- apply ----------------------------------------------------------------------------

    def _execute(self, report: Report, the_plan: Plan, desired: DesiredState,
                 observed: Observed, resolved: dict[str, Resolved], st: state.RunRecord,
                 paths: Paths) -> None:
        records = st.stacks
        results: dict[str, StackResult] = {}
        work = the_plan.by_kind(CREATE, UPDATE)
        if work:  # an idle run imports no deployer, no pool
            from vigo.host.engines.compose import Deployer

            deployer = Deployer(self.compose, self.settings.project_prefix, paths,
                                self.settings.health_timeout, self._progress,
                                pulls=self._pulls(report, desired, paths), journal=self.emit)
        after = stack_order(desired, records, resolved)
        shares = {n: xvigo.shared(r.model, n, self.settings.project(n))
                  for n, r in resolved.items()}
        for name, owners in xvigo.implicit_after(shares, (PROXY,))[0].items():
            after[name] = tuple(sorted(set(after.get(name, ())) | owners))  # it uses theirs
        failed = {a.stack for a in the_plan.by_kind(FAIL, HOLD)}
        converged: dict[str, bool] = {}  # stack -> ok, of the creates and updates so far

        def up(action: Action, again: bool = False) -> StackResult:
            try:
                stack = desired.stack(action.stack)
                assert stack is not None
                before = (self.compose.containers(self.settings.project(stack.name)) if again
                          else observed.stack(stack.name))  # a retry starts from what runs now
                return deployer.deploy(stack, action, resolved[stack.name], before,
                                       records.get(stack.name) or state.StackRecord(),
                                       desired.revision)
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
                    publish(self._down(action.stack, paths))
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
        dropped = self._record(desired, results, st, resolved)
        if dropped:
            self._clean_images(records, dropped)
        report.results = [results[a.stack] for a in the_plan.actions if a.stack in results]
        if the_plan.refusal or any(not r.ok for r in report.results):
            report.reason = reasons.PRUNE_REFUSED if the_plan.refusal else reasons.STACK_FAILED
            report.error = the_plan.refusal or "; ".join(
                r.message for r in report.results if not r.ok)
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

    def _pulls(self, report: Report, desired: DesiredState, paths: Paths) -> registries.Pulls:
        """The registry credentials of this run (docs/private-images.md): env/registries.env
        (sops) over root's docker login, merged into a docker config.json on the secrets tmpfs
        (0600). Every form of every credential goes to the masker first."""
        from vigo.core import registries

        folder = paths.secrets / "docker"
        repo: dict[str, registries.Credential] = {}
        problem = ""
        src = desired.env_files.get(registries.FILE)
        if src is not None:
            try:
                pairs = dotenv.parse_sops(self.sops.decrypt_dotenv(src, self.settings.age_key_file))
                self.masker.add(v for k, v in pairs if k.endswith("_PASSWORD"))
                repo = registries.parse(pairs)
            except (DecryptError, dotenv.DotenvError, registries.RegistriesError,
                    CommandTimeout) as exc:
                problem = f"{registries.FILE} cannot be used: {exc}"
                self._warn(report, problem)
            for cred in repo.values():
                self.masker.add(cred.secrets())
        host, where = self._host_docker_config(report)
        self.masker.add(registries.host_secrets(host))
        if not repo and not host:
            fs.remove(folder / "config.json")
            return registries.Pulls(problem=problem)
        try:
            fs.write_secret(folder / "config.json",
                            json.dumps(registries.config(host, repo), indent=1))
        except OSError as exc:
            problem = (f"cannot write {folder / 'config.json'}: {exc.strerror or exc}; pulls "
                       "run without the registry credentials")
            self._warn(report, problem)
            return registries.Pulls(problem=problem)
        sources = {r: where for r in registries.host_registries(host)}
        sources.update({r: registries.FILE for r in repo})
        return registries.Pulls(folder, sources, everything=bool(host.get("credsStore")),
                                problem=problem)

    def _host_docker_config(self, report: Report) -> tuple[dict[str, Any], str]:
        """Root's `docker login` ($DOCKER_CONFIG or ~/.docker): its config.json, {} if none."""
        base = os.environ.get("DOCKER_CONFIG")
        path = Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"
        where = f"root's docker login ({path})"
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return {}, where
        except (OSError, ValueError) as exc:
            self._warn(report, f"{path}: cannot be read as a docker config ({exc}); pulls run "
                       "without the host's registry logins")
            return {}, where
        return (doc if isinstance(doc, dict) else {}), where

    def _down(self, name: str, paths: Paths) -> StackResult:
        try:
            out = self.compose.down(self.settings.project(name))
            if not out.ok:
                return StackResult(name, REMOVE, False, f"{name}: failed to remove "
                                   f"(docker compose down: {out.error(3)})")
            fs.remove(paths.good_model(self.settings.project(name)))
        except CommandTimeout as exc:
            return StackResult(name, REMOVE, False, f"{name}: failed to remove ({exc})")
        except Exception as exc:  # fails this removal only
            return StackResult(name, REMOVE, False,
                               self.masker(f"{name}: failed to remove ({crash_line(exc)})"))
        return StackResult(name, REMOVE, True, f"{name}: removed (no longer in the repo)")

    def _record(self, desired: DesiredState, results: dict[str, StackResult],
                st: state.RunRecord, resolved: dict[str, Resolved] | None = None) -> set[str]:
        """Update the per-stack records (state.py's transitions); returns the images that
        fell out of some stack's last `keep_images` revisions."""
        now = state.now()
        dropped: set[str] = set()
        for name, result in results.items():
            record = st.record(name)
            stack = desired.stack(name)
            if result.action == REMOVE and result.ok:
                st.forget(name)
                continue
            if result.action in (CREATE, UPDATE) and result.ok and stack is not None:
                res = (resolved or {}).get(name)
                record.mark_applied(stack.hash, stack.digests, desired.revision, now,
                                    {c.name: c.config_hash for c in result.containers},
                                    completed(result.containers,
                                              res.finishes if res is not None else ()),
                                    res.after if res is not None else ())
                dropped |= record.remember_images(desired.revision,
                                                  (c.image for c in result.containers),
                                                  self.settings.keep_images)
            elif result.rolled_back_to:
                record.mark_rolled_back({c.name: c.config_hash for c in result.containers},
                                        result.rolled_back_to)
            if result.jobs:  # status and metrics: the last run of each release job
                record.ran_jobs(result.jobs, now, desired.revision)
            if result.hold and stack is not None:
                record.hold(stack.hash)
            if result.action == HOLD:
                continue  # keep the reason of the deploy that failed
            record.mark_checked(result.ok, self.masker(result.message), result.reason, now,
                                desired.revision)
        for name in list(st.stacks):
            if name not in results and desired.stack(name) is None:
                st.forget(name)
        return dropped

    def _clean_images(self, records: dict[str, state.StackRecord], dropped: set[str]) -> None:
        """Remove images vigo deployed that no stack keeps for a rollback any more; docker
        refuses to remove one a container still uses, and that is fine."""
        kept = {image for record in records.values() for image in record.kept_images()}
        for image in sorted(dropped - kept):
            try:
                removed = self.compose.remove_image(image).ok
            except Exception as exc:  # an image that stays is no failure of the run
                self.emit(f"warning: image {image}: not removed ({crash_line(exc)})")
                continue
            if removed:
                self.emit(f"image {image}: removed (older than the last "
                          f"{self.settings.keep_images} revisions)")


def _coded(codes: dict[str, str], failures: dict[str, str], code: str) -> None:
    """Name the reason of the failures found since the last call."""
    codes.update(dict.fromkeys(failures.keys() - codes.keys(), code))


def stack_order(desired: DesiredState, records: dict[str, state.StackRecord],
                resolved: dict[str, Resolved]) -> dict[str, tuple[str, ...]]:
    """stack -> the stacks it comes after (x-vigo.after): from the resolved model of a stack
    that may change, else from the record of its last apply (a removed stack's, for the
    reverse order of removals)."""
    out: dict[str, tuple[str, ...]] = {}
    for name, record in records.items():
        if record.has_after:
            out[name] = record.after
    for name, res in resolved.items():
        out[name] = tuple(res.after)
    return {name: deps for name, deps in out.items() if deps}


def crash_line(exc: BaseException) -> str:
    """One line for an exception vigo did not expect: its type, message and the innermost
    vigo function it came from (`render.py:_walk`), e.g. for an input render cannot handle."""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if path.suffix == ".py" and "vigo" in path.parts[:-1]:
            parts = path.parts[:-1]
            rel = path.parts[len(parts) - parts[::-1].index("vigo"):]
            where = f"{'/'.join(rel)}:{frame.name}"
    text = " ".join(str(exc).split()).encode("utf-8", "backslashreplace").decode()
    if len(text) > 300:
        text = text[:300] + "..."
    if isinstance(exc, CommandTimeout) and text:
        return text  # names the command already
    return type(exc).__name__ + (f" in {where}" if where else "") + (f": {text}" if text else "")


def _where(rel: str, line: int | None) -> str:
    return rel + (f":{line}" if line else "")


def mount_sources(model: Any) -> list[str]:
    """The host paths the engine (or compose) opens for a resolved model: bind sources, env
    files, and the files of top-level configs and secrets."""
    out: list[str] = []
    if not isinstance(model, dict):
        return out
    services = model.get("services")
    for svc in services.values() if isinstance(services, dict) else ():
        if not isinstance(svc, dict):
            continue
        for volume in svc.get("volumes") or []:
            if isinstance(volume, dict) and volume.get("type") == "bind" and volume.get("source"):
                out.append(str(volume["source"]))
        env_file = svc.get("env_file") or []
        for entry in [env_file] if isinstance(env_file, str | dict) else env_file:
            path = entry.get("path") if isinstance(entry, dict) else entry
            if isinstance(path, str) and path:
                out.append(path)
    for kind in ("configs", "secrets"):
        items = model.get(kind)
        for item in items.values() if isinstance(items, dict) else ():
            if isinstance(item, dict) and isinstance(item.get("file"), str) and item["file"]:
                out.append(item["file"])
    return out


def parallelism(stacks: int, engine_cpus: int, local_cpus: int, mem_mb: int | None) -> int:
    """Stacks deployed at once: PARALLEL_PER_CPU per CPU of the smaller side (compose runs
    here, the containers start on the engine's host, which may be another), at most
    PARALLEL_MAX, no more than the memory available (COMPOSE_MB each) and the stacks."""
    cpus = min([c for c in (engine_cpus, local_cpus) if c > 0] or [1])
    n = min(stacks, PARALLEL_PER_CPU * cpus, PARALLEL_MAX)
    if mem_mb is not None:
        n = min(n, mem_mb // COMPOSE_MB)
    return max(1, n)


def _mounts_hash(service: dict[str, Any], runtime: Path, rendered: set[str],
                 model: dict[str, Any] | None = None) -> str:
    """Digest of the rendered files that reach a service's container from the tree: its bind
    mounts and the `file:` of the `configs` and `secrets` it uses (compose mounts those too),
    and the text of inline `content:` configs. Compose's config hash covers none of their
    content, so a changed file must change a label, of exactly the services that use it.
    Files the host wrote (data folders) do not count. `env_file`, `include` and `extends` need
    nothing here: they change the resolved service itself, which compose's hash covers."""
    h = hashlib.sha256()
    found = False
    sources: list[str] = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict) and volume.get("type") == "bind":
            sources.append(str(volume.get("source", "")))
    for kind in ("configs", "secrets"):
        declared = (model or {}).get(kind) or {}
        for entry in service.get(kind) or []:
            name = entry.get("source") if isinstance(entry, dict) else entry
            decl = declared.get(str(name)) if isinstance(declared, dict) else None
            if not isinstance(decl, dict):
                continue
            if decl.get("file"):
                sources.append(str(decl["file"]))
            elif isinstance(decl.get("content"), str):
                h.update(f"{kind}:{name}\0{decl['content']}\n".encode())
                found = True
    for text in sources:
        source = Path(text)
        if not source.is_relative_to(runtime):
            continue
        rel = source.relative_to(runtime).as_posix()
        for path in sorted(p for p in rendered if p == rel or p.startswith(rel + "/")):
            h.update(f"{path}\0{render.digest(runtime / path)}\n".encode())
            found = True
    return h.hexdigest()[:16] if found else ""
