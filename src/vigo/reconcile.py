"""One reconcile: lock -> source -> render -> secrets -> observe -> plan -> apply -> record.

`vigo plan` runs the same steps up to the plan in a private temp dir and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigo import dotenv, render, state
from vigo.adapters import fs
from vigo.adapters.compose import Compose, DockerError
from vigo.adapters.git import Git, SourceError, url_secrets
from vigo.adapters.lock import RunLock
from vigo.adapters.run import CommandTimeout, Masker, Runner
from vigo.adapters.sops import DecryptError, Sops
from vigo.config import Settings
from vigo.model import (
    CREATE,
    FAIL,
    KEEP,
    LABEL_INSTANCE,
    LABEL_MOUNTS,
    LABEL_STACK,
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
    StackResult,
)
from vigo.plan import needs_resolve, plan

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_SOURCE, EXIT_LOCKED = 0, 1, 2, 3, 75
PARALLEL = 4
ACME_JSON = "proxy/acme/acme.json"


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


@dataclass(frozen=True)
class Paths:
    """Where a run renders: the real runtime for apply, a private temp dir for plan."""

    runtime: Path
    secrets: Path
    overrides: Path
    manifest: Path


class Reconciler:
    def __init__(self, settings: Settings, *, verbose: bool = False,
                 emit: Callable[[str], None] = print,
                 debug: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.masker = Masker()
        self.masker.add(url_secrets(settings.repo))
        self.emit = lambda line: emit(self.masker(line))
        self.runner = Runner(self.masker, log=debug or self.emit, verbose=verbose)
        self.git = Git(self.runner, settings.git_timeout)
        self.sops = Sops(self.runner)
        self.compose = Compose(self.runner, settings.compose_timeout)

    # -- the two entry points ---------------------------------------------------------------

    def apply(self, options: Options = Options()) -> Report:
        s = self.settings
        report = Report("apply", s.host)
        t0 = time.monotonic()
        with RunLock(s.state / "lock"):
            st, warning = state.load(s.state)
            if warning:
                self._warn(report, warning)
            st["started"] = report.started
            try:
                self._run_apply(report, st, options)
            finally:
                report.duration = time.monotonic() - t0
                st.update(finished=state.now(), duration=round(report.duration, 3),
                          exit_code=report.exit_code, error=report.error)
                state.save(s.state, st)
        return report

    def plan(self, options: Options = Options(), fetch: bool = True) -> Report:
        s = self.settings
        report = Report("plan", s.host)
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix="vigo-plan-"))
        try:
            os.chmod(tmp, 0o700)
            paths = Paths(tmp / "runtime", tmp / "secrets", tmp / "overrides", tmp / "manifest")
            with RunLock(s.state / "lock"):
                st, warning = state.load(s.state)
                if warning:
                    self._warn(report, warning)
                desired = self._source(report, fetch)
                if desired is None:
                    return report
                result = self._prepare(report, desired, st, paths, options, persist=False)
                if result is not None:
                    report.plan = result[0]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            report.duration = time.monotonic() - t0
        return report

    # -- steps --------------------------------------------------------------------------------

    def _warn(self, report: Report, text: str) -> None:
        report.warnings.append(self.masker(text))
        self.emit(f"warning: {text}")

    def _source(self, report: Report, fetch: bool = True) -> DesiredState | None:
        s = self.settings
        try:
            if fetch:
                rev = self.git.sync(s.repo, s.branch, s.checkout)
            else:
                rev = self.git.head(s.checkout)
                if not rev:
                    raise SourceError(f"{s.checkout} has no checkout yet: run without --no-fetch")
        except (SourceError, CommandTimeout) as exc:
            report.exit_code, report.error = EXIT_SOURCE, self.masker(str(exc))
            self.emit(f"source: {report.error}; nothing changed, the next run tries again")
            return None
        report.revision = rev
        desired = render.render(s.checkout, s.host, rev)
        for w in desired.warnings:
            self._warn(report, w)
        return desired

    def _run_apply(self, report: Report, st: dict[str, Any], options: Options) -> None:
        s = self.settings
        paths = Paths(s.runtime, s.secrets, s.state / "overrides", s.state / "rendered.json")
        desired = self._source(report)
        if desired is None:
            return
        st["revision_attempted"] = desired.revision
        result = self._prepare(report, desired, st, paths, options, persist=True)
        if result is None:
            return
        the_plan, observed, resolved = result
        report.plan = the_plan
        self._execute(report, the_plan, desired, observed, resolved, st, paths)

    def _prepare(self, report: Report, desired: DesiredState, st: dict[str, Any], paths: Paths,
                 options: Options, *, persist: bool
                 ) -> tuple[Plan, Observed, dict[str, Resolved]] | None:
        """Secrets, runtime tree, observe, resolve, plan. Only vigo's own folders change."""
        records = st["stacks"]
        try:
            observed = self._observe()
        except (DockerError, CommandTimeout) as exc:
            report.exit_code, report.error = EXIT_FAILED, str(exc)
            self.emit(f"docker: {exc}")
            return None
        candidates = needs_resolve(desired, observed, records, options.force)
        failures = self._secrets(desired, candidates, st, paths,
                                 persist=persist and not options.force)
        self._render_runtime(desired, paths, failures)
        if any(s.name == PROXY for s in desired.stacks):
            err = fs.ensure_private_file(paths.runtime / ACME_JSON)
            if err:
                failures[PROXY] = err
        failures.update(self._policy(desired, [n for n in candidates if n not in failures],
                                     paths))
        resolved = {}
        for name in candidates:
            if name not in failures:
                resolved[name] = self._resolve(desired.stack(name), paths,  # type: ignore[arg-type]
                                               set(desired.files))
        return (plan(desired, observed, records, resolved, failures, options),
                observed, resolved)

    def _policy(self, desired: DesiredState, names: list[str], paths: Paths) -> dict[str, str]:
        """The rules of `vigo check`, stack by stack: a stack with an error is not applied."""
        if not names:
            return {}
        from vigo import lint  # ruamel.yaml: imported only when a stack may change
        from vigo.check import policy_of

        policy = policy_of(self.settings)
        failures = {}
        for name in names:
            stack = desired.stack(name)
            assert stack is not None
            keys = set().union(*(lint.env_key_names(desired.env_files[rel])
                                 for rel in stack.interpolation_env))
            errors = [f for f in lint.lint_stack(paths.runtime, name, stack.compose_file, keys,
                                                 policy) if f.severity == lint.ERROR]
            if errors:
                failures[name] = "; ".join(
                    f"policy [{f.rule}] {f.path}" + (f":{f.line}" if f.line else "")
                    + f": {f.message}" for f in errors)
        return failures

    def _observe(self) -> Observed:
        prefix = self.settings.project_prefix
        return Observed(tuple(c for c in self.compose.containers()
                              if c.instance == prefix and c.project == prefix + c.stack))

    def _secrets(self, desired: DesiredState, candidates: list[str], st: dict[str, Any],
                 paths: Paths, *, persist: bool) -> dict[str, str]:
        """Decrypt the env files the candidate stacks use (when their ciphertext changed or
        the tmpfs lost them). Returns failures per stack."""
        s = self.settings
        env_dir = fs.private_dir(paths.secrets) / "env"
        fs.private_dir(env_dir)
        known: dict[str, str] = st["env"] if persist else {}
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
                fs.remove(dst)
                known.pop(rel, None)
                continue
            self.masker.add(v for _, v in pairs)
            fs.write_secret(dst, dotenv.format_for_compose(pairs))
            known[rel] = digest
        for stale in sorted(env_dir.glob("*.env")):
            rel = f"env/{stale.name}"
            if rel not in desired.env_files:
                fs.remove(stale)
                known.pop(rel, None)
        failures: dict[str, str] = {}
        for name in candidates:
            why = [failed[rel] for rel in desired.stack(name).env_files if rel in failed]  # type: ignore[union-attr]
            if why:
                failures[name] = "; ".join(why)
        return failures

    def _render_runtime(self, desired: DesiredState, paths: Paths,
                        failures: dict[str, str]) -> None:
        # A stack that cannot be applied keeps the files it last ran with.
        broken = {s.name for s in desired.stacks if s.problems} | set(failures)
        keep = {rel for s in desired.stacks if s.name in broken for rel in s.files}
        keep |= set(desired.blocked)
        links = {rel: paths.secrets / rel for rel in desired.env_files}
        synced = fs.sync_tree(paths.runtime, desired.files, links, keep, paths.manifest)
        for rel, why in synced.errors.items():
            name = render.owner(rel)
            if name is not None:
                failures.setdefault(name, why)

    def _resolve(self, stack: Stack, paths: Paths, rendered: set[str]) -> Resolved:
        res = self.compose.config(self.settings.project(stack.name),
                                  [paths.runtime / stack.compose_file],
                                  [paths.secrets / rel for rel in stack.interpolation_env])
        if not res.ok:
            return Resolved({}, error=f"{stack.compose_file} is not valid: {res.error(4)}")
        try:
            model = json.loads(res.stdout)
        except json.JSONDecodeError as exc:
            return Resolved({}, error=f"docker compose config gave no JSON: {exc}")
        services = model.get("services") or {}
        images = {name: str(svc.get("image") or "") for name, svc in services.items()}
        mounts = {name: h for name, svc in services.items()
                  if (h := _mounts_hash(svc, paths.runtime, rendered))}
        return Resolved(images, mounts)

    # -- apply ----------------------------------------------------------------------------

    def _execute(self, report: Report, the_plan: Plan, desired: DesiredState,
                 observed: Observed, resolved: dict[str, Resolved], st: dict[str, Any],
                 paths: Paths) -> None:
        records: dict[str, Any] = st["stacks"]
        results: dict[str, StackResult] = {}

        def up(action) -> StackResult:
            stack = desired.stack(action.stack)
            assert stack is not None
            return self._up(stack, action, resolved[stack.name], paths,
                            observed.stack(stack.name))

        def publish(result: StackResult) -> None:
            results[result.stack] = result
            self.emit(result.message)

        work = the_plan.by_kind(CREATE, UPDATE)
        first = [a for a in work if a.stack == PROXY]
        rest = [a for a in work if a.stack != PROXY]
        for action in first:
            publish(up(action))
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            for result in pool.map(up, rest):
                publish(result)
        for action in the_plan.actions:
            if action.kind == FAIL:
                publish(StackResult(action.stack, FAIL, False, action.line()))
            elif action.kind == REMOVE:
                publish(self._down(action.stack))
            elif action.kind == KEEP:
                publish(StackResult(action.stack, KEEP, True, action.line()))
            elif action.kind == UNCHANGED:
                results[action.stack] = StackResult(action.stack, UNCHANGED, True,
                                                    action.line())
        if the_plan.refusal:
            self.emit(f"prune refused: {the_plan.refusal}")
        self._record(desired, results, records)
        report.results = [results[a.stack] for a in the_plan.actions if a.stack in results]
        if the_plan.refusal or any(not r.ok for r in report.results):
            report.exit_code = EXIT_FAILED
            report.error = the_plan.refusal or "; ".join(
                r.message for r in report.results if not r.ok)
        else:
            st["revision_applied"] = desired.revision
        if not work and not the_plan.by_kind(REMOVE, FAIL):
            self.emit(f"{desired.revision[:12]}: nothing to do, {len(desired.stacks)} "
                      "stack(s) unchanged")

    def _up(self, stack: Stack, action: Action, res: Resolved, paths: Paths,
            before: tuple[Container, ...]) -> StackResult:
        project = self.settings.project(stack.name)
        override = paths.overrides / f"{project}.json"
        labels = {LABEL_STACK: stack.name, LABEL_INSTANCE: self.settings.project_prefix}
        body = {"services": {svc: {"labels": labels | (
            {LABEL_MOUNTS: res.mounts_hash[svc]} if svc in res.mounts_hash else {})}
            for svc in res.services}}
        fs.write_json(override, body, mode=0o600)
        try:
            out = self.compose.up(project, [paths.runtime / stack.compose_file, override],
                                  [paths.secrets / rel for rel in stack.interpolation_env])
        except CommandTimeout as exc:
            return StackResult(stack.name, action.kind, False, f"{stack.name}: failed ({exc})")
        if not out.ok:
            return StackResult(stack.name, action.kind, False,
                               f"{stack.name}: failed (docker compose up: {out.error(4)})")
        try:
            after = self.compose.containers(project)
        except (DockerError, CommandTimeout) as exc:
            return StackResult(stack.name, action.kind, False,
                               f"{stack.name}: failed (compose up succeeded, but {exc})")
        why = list(action.reasons)
        verb = "created" if action.kind == CREATE else "updated"
        if before and {(c.id, c.config_hash) for c in after} == {
                (c.id, c.config_hash) for c in before} and all(
                c.state == "running" for c in (*before, *after)):
            verb = "unchanged"
            why.append("no container needed a change")
        why_text = "; ".join(why)
        return StackResult(stack.name, action.kind, True,
                           f"{stack.name}: {verb}" + (f" ({why_text})" if why_text else ""),
                           containers=after)

    def _down(self, name: str) -> StackResult:
        try:
            out = self.compose.down(self.settings.project(name))
        except CommandTimeout as exc:
            return StackResult(name, REMOVE, False, f"{name}: failed to remove ({exc})")
        if not out.ok:
            return StackResult(name, REMOVE, False,
                               f"{name}: failed to remove (docker compose down: {out.error(3)})")
        return StackResult(name, REMOVE, True, f"{name}: removed (no longer in the repo)")

    def _record(self, desired: DesiredState, results: dict[str, StackResult],
                records: dict[str, Any]) -> None:
        now = state.now()
        for name, result in results.items():
            record = records.setdefault(name, {})
            stack = desired.stack(name)
            if result.action == REMOVE and result.ok:
                records.pop(name, None)
                continue
            if result.action in (CREATE, UPDATE) and result.ok and stack is not None:
                record.update(hash=stack.hash, digests=dict(stack.digests),
                              revision=desired.revision, applied_at=now,
                              containers={c.name: c.config_hash for c in result.containers})
            record.update(outcome="ok" if result.ok else "failed",
                          reason="" if result.ok else result.message, checked_at=now)
            if not result.ok:
                record["failed_revision"] = desired.revision
        for name in list(records):
            if name not in results and desired.stack(name) is None:
                records.pop(name)


def _mounts_hash(service: dict[str, Any], runtime: Path, rendered: set[str]) -> str:
    """Digest of the rendered files a service bind-mounts from the tree: compose's config
    hash does not cover their content, so a changed file must change a label. Files the host
    wrote (data folders) do not count."""
    h = hashlib.sha256()
    found = False
    for volume in service.get("volumes") or []:
        if not isinstance(volume, dict) or volume.get("type") != "bind":
            continue
        source = Path(str(volume.get("source", "")))
        if not source.is_relative_to(runtime):
            continue
        rel = source.relative_to(runtime).as_posix()
        for path in sorted(p for p in rendered if p == rel or p.startswith(rel + "/")):
            h.update(f"{path}\0{render.digest(runtime / path)}\n".encode())
            found = True
    return h.hexdigest()[:16] if found else ""
