"""Resolve the stacks that may change: `docker compose config` of each, judged by the policy
(core/policy.py, and the text rules of `vigo check` that need no model), the hash of the files
that reach each service, the mounts that cross a link, the release jobs' config hashes."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigo import config
from vigo.adapters import fs
from vigo.adapters.compose import Compose
from vigo.adapters.run import CommandTimeout, Masker
from vigo.config import Settings
from vigo.core import render, xvigo
from vigo.core.model import PROXY, DesiredState, Paths, Resolved, Stack, located
from vigo.core.records import record
from vigo.host import engines, state

if TYPE_CHECKING:  # imported where a stack may change, never by an idle run
    from vigo.core import policy


@record
class Resolver:
    settings: Settings
    compose: Compose
    masker: Masker
    progress: Callable[[str], None]
    emit: Callable[[str], None]

    def resolve_all(self, desired: DesiredState, names: list[str], paths: Paths,
                    failures: dict[str, str]) -> dict[str, Resolved]:
        """The resolved model of each stack that may change and has not failed yet; a stack
        whose model breaks a policy rule goes to `failures`."""
        resolved: dict[str, Resolved] = {}
        if names:  # resolve first, then judge what Docker would run (policy.py)
            from vigo.core import lint  # ruamel.yaml: imported only when a stack may change

            proxy_network = lint.proxy_network_of(paths.runtime)
            for name in names:
                if name in failures:
                    continue
                stack = desired.stack(name)
                assert stack is not None
                keys = set().union(*(lint.env_key_names(desired.env_files[rel])
                                     for rel in stack.interpolation_env))
                res = self.resolve(stack, paths, set(desired.files), proxy_network, keys)
                if res.policy:
                    failures[name] = "; ".join(res.policy)
                else:
                    resolved[name] = res
        return resolved

    def policy(self, desired: DesiredState, names: list[str], paths: Paths) -> dict[str, str]:
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

    def resolve(self, stack: Stack, paths: Paths, rendered: set[str],
                proxy_network: str = "",
                keys: set[str] | None = None) -> Resolved:
        """The stack's model from `docker compose config`, judged. Compose processes that do not
        need each other's answer run at once: the placeholder `compose config` of
        `_unresolved` (when the stack interpolates encrypted env files) runs beside the real
        one and beside the `compose config --hash` the rollout compares with (`_job_hashes`),
        which is asked with the last deploy's override beside the real one too (`_guess`)."""
        from vigo.core import policy  # only a stack that may change is resolved

        proxy_network = proxy_network or policy.DEFAULT_PROXY_NETWORK
        project = self.settings.project(stack.name)
        scope = policy.Scope(stack.name, project, str(paths.runtime / stack.folder),
                             proxy_network)
        rules = config.policy_of(self.settings)
        beside = Beside(self._unresolved, stack, paths, scope, rules, keys or set())
        guess = self._guess(stack, paths, project)
        try:
            res, found, modelled = self._resolve(stack, paths, rendered, project, scope, rules,
                                                 guess)
            if modelled:  # compose gave a model: the placeholders' violations count too
                found += beside.result()
        finally:
            beside.join()  # every way out: no compose process of this stack left running
            if guess is not None:
                guess[1].join()
        if not found:
            return res
        from vigo.core import lint

        return Resolved({}, policy=tuple(dict.fromkeys(
            v.line(located(*lint.locate(paths.runtime, stack.compose_file, v.service, v.key)))
            for v in found)))

    def _guess(self, stack: Stack, paths: Paths, project: str) -> Guess | None:
        """`compose config --hash` with the override of the stack's last deploy, beside the
        `compose config` whose model the new override is made of: when the new one is the same
        file (a new image tag, say), its answer is the rollout's, one compose process sooner
        (`ComposeEngine.job_hashes` compares). Only for a stack whose last override asked for
        them (a drain-aware healthcheck, a release job); None otherwise."""
        override = engines.override_file(paths, project)
        try:
            text = override.read_bytes()
        except OSError:
            return None
        if b'"healthcheck"' not in text and b'"restart"' not in text:
            return None
        return text, Beside(self.compose.config_hashes, project,
                            [paths.runtime / stack.compose_file, override],
                            [paths.secrets / rel for rel in stack.interpolation_env])

    def _resolve(self, stack: Stack, paths: Paths, rendered: set[str], project: str,
                 scope: policy.Scope, rules: policy.Policy, guess: Guess | None = None
                 ) -> tuple[Resolved, list[policy.Violation], bool]:
        """The model (with the rollout's config hashes), or the policy's violations of it; and
        whether compose gave a model at all."""
        from vigo.core import policy

        try:
            res = self.compose.config(project, [paths.runtime / stack.compose_file],
                                      [paths.secrets / rel for rel in stack.interpolation_env])
        except CommandTimeout as exc:  # fails this stack, not the run
            return Resolved({}, error=str(exc)), [], False
        if not res.ok:
            why = f"{stack.compose_file} is not valid: {res.error(4)}"
            return Resolved({}, error=why), [], False
        try:
            model = json.loads(res.stdout)
        except (json.JSONDecodeError, RecursionError) as exc:
            return Resolved({}, error=f"docker compose config gave no JSON: {exc}"), [], False
        found = policy.judge(model, scope, rules)
        if found:  # refused: the model goes no further
            return Resolved({}), found, True
        from vigo.core import health, rollout  # only a stack that may change is resolved
        services = model.get("services") or {}
        images = {name: str(svc.get("image") or "") for name, svc in services.items()}
        mounts = {name: h for name, svc in services.items()
                  if (h := _mounts_hash(svc, paths.runtime, rendered, model))}
        options, problems = xvigo.parse(model.get(xvigo.KEY), services, stack.name)
        if problems:
            return Resolved({}, error="; ".join(f"{stack.compose_file}: {p.line()}"
                                                for p in problems)), [], True
        jobs = options.job_services()
        res = Resolved(images, mounts, model=model,
                       rollouts={name: rollout.spec(svc) for name, svc in services.items()},
                       health_timeout=options.health_timeout,
                       finishes=frozenset(n for n in services
                                          if n in jobs or health.meant_to_finish(n, services)),
                       replicas={name: n for name, svc in services.items()
                                 if (n := health.replicas(svc)) != 1},
                       after=options.after, jobs=options.jobs)
        rolls = any(spec.zero_downtime for spec in res.rollouts.values())
        if jobs or (rolls and engines.of(res, self.settings).name == engines.COMPOSE):
            return self._job_hashes(stack, paths, res, guess), [], True
        return res, [], True

    def _job_hashes(self, stack: Stack, paths: Paths, res: Resolved,
                    guess: Guess | None = None) -> Resolved:
        """The config hash each release job gets with vigo's override: what `vigo plan` and the
        deploy compare with the job's completed container (a job runs once per change)."""
        from vigo.host.engines.compose import ComposeEngine

        return ComposeEngine(engines.Run(self.settings, self.compose, paths, self.progress,
                                         self.emit, self.masker)).job_hashes(stack, res, guess)

    def links(self, resolved: dict[str, Resolved], paths: Paths,
              env_files: set[str]) -> dict[str, str]:
        """Stacks whose bind sources (or env files, config and secret files) cross a symbolic
        link below the runtime tree or an allowed host path: refused before compose sees them,
        since the engine follows links (docs/security.md). vigo's own env file links are fine."""
        if not resolved:  # an idle run resolves nothing
            return {}
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


class Beside:
    """fn(*args) in a thread beside the caller's work (a compose process that does not need
    the caller's answer); result() waits for it and raises what it raised."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._out: Any = None
        self._exc: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            self._out = fn(*args)
        except BaseException as exc:  # handed to the caller in result()
            self._exc = exc

    def join(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._exc is not None:
            raise self._exc
        return self._out


Guess = tuple[bytes, Beside]  # an override's bytes, and compose's hashes with it (Resolver._guess)


def stack_order(desired: DesiredState, records: dict[str, state.StackRecord],
                resolved: dict[str, Resolved]) -> dict[str, tuple[str, ...]]:
    """stack -> the stacks it comes after (x-vigo.after): from the resolved model of a stack
    that may change, else from the record of its last apply (a removed stack's, for the
    reverse order of removals)."""
    out: dict[str, tuple[str, ...]] = {}
    for name, entry in records.items():
        if entry.has_after:
            out[name] = entry.after
    for name, res in resolved.items():
        out[name] = tuple(res.after)
    return {name: deps for name, deps in out.items() if deps}


def apply_order(desired: DesiredState, records: dict[str, state.StackRecord],
                resolved: dict[str, Resolved],
                project: Callable[[str], str]) -> dict[str, tuple[str, ...]]:
    """stack -> the stacks it deploys after: x-vigo.after (stack_order), and the stacks that
    create an external network or volume it uses (xvigo.implicit_after; the proxy always runs
    first and gives no order)."""
    after = stack_order(desired, records, resolved)
    shares = {n: xvigo.shared(r.model, n, project(n)) for n, r in resolved.items()}
    for name, owners in xvigo.implicit_after(shares, (PROXY,))[0].items():
        after[name] = tuple(sorted(set(after.get(name, ())) | owners))  # it uses theirs
    return after


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


def _mounts_hash(service: dict[str, Any], runtime: Path, rendered: set[str],
                 model: dict[str, Any] | None = None) -> str:
    """Digest of the rendered files that reach a service's container from the tree: its bind
    mounts and the `file:` of the `configs` and `secrets` it uses (compose mounts those too),
    and the text of inline `content:` configs. Compose's config hash covers none of their
    content, so a changed file must change a label, of exactly the services that use it.
    Files the host wrote (data folders) do not count. `env_file`, `include` and `extends` need
    nothing here: they change the resolved service itself, which compose's hash covers."""
    h = render.sha256()
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
