"""`vigo check`: validate an infra repo offline, as every host would render it.

Renders the base tree and each hosts/<name>/ overlay into a temp dir, runs the lint rules over
each, validates every compose file (`docker compose config` where it is installed, a check of
the known Compose keys otherwise), judges each stack's resolved model with the policy of apply
(policy.py; placeholders stand in for the values of encrypted env files), and maps each finding
back to the file and line in the repo. Without docker compose the text rules of core/lint stand
in for the policy, with a warning that says so.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vigo.adapters import fs
from vigo.core import lint, policy, render
from vigo.core.lint import ERROR, WARNING, Finding
from vigo.core.model import DesiredState
from vigo.core.policy import Policy

# Validates one compose file; returns '' when valid, the reason otherwise, None when no validator
# is installed.
Validator = Callable[[Path], str | None]
# (project, compose file, placeholder env file) -> `docker compose config --format json` (a
# Result: .ok, .stdout, .error(n)), None when docker compose is not installed.
Resolver = Callable[[str, Path, Path], Any]

# The Compose Specification's service and top-level keys, for the fallback check when
# `docker compose` is not installed (a workstation, a CI image without Docker).
SERVICE_KEYS = frozenset("""
annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command configs
container_name cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period cpu_rt_runtime cpu_shares
cpus cpuset credential_spec depends_on deploy develop device_cgroup_rules devices dns dns_opt
dns_search domainname entrypoint env_file environment expose extends external_links extra_hosts
gpus group_add healthcheck hostname image init ipc isolation label_file labels links logging
mac_address mem_limit mem_reservation mem_swappiness memswap_limit models network_mode networks
oom_kill_disable oom_score_adj pid pids_limit platform ports post_start pre_stop privileged
profiles provider pull_policy pull_refresh_after read_only restart runtime scale secrets
security_opt shm_size stdin_open stop_grace_period stop_signal storage_opt sysctls tmpfs tty
ulimits use_api_socket user userns_mode uts volumes volumes_from working_dir
""".split())


def hosts_of(repo: Path) -> list[str]:
    folder = repo / "hosts"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.is_symlink())


def check(repo: Path, policy: Policy, validate: Validator,
          hosts: list[str] | None = None, resolve: Resolver | None = None) -> list[Finding]:
    """Every finding of the repo, for the base tree and every host overlay, deduplicated.
    With `resolve`, the privilege rules judge each stack's resolved model (policy.py)."""
    findings: dict[tuple, Finding] = {}
    for f in lint.lint_repo_files(repo):
        findings[_key(f)] = f
    for host in ["", *hosts_of(repo)] if hosts is None else hosts:
        for f in check_rendered(repo, host, policy, validate, resolve):
            findings.setdefault(_key(f), f)
    return lint.sort_findings(findings.values())


NO_COMPOSE = Finding(
    "policy-resolved", WARNING, ".", None,
    "docker compose is not installed: the privilege rules read the compose text only (YAML "
    "casting, interpolation, extends and include are not judged as the host judges them)",
    "Run vigo check where docker compose v2 is installed (the host, or CI with Docker).")


def check_rendered(repo: Path, host: str, policy: Policy, validate: Validator,
                   resolve: Resolver | None = None) -> list[Finding]:
    """The lint rules and compose validation over the tree one host would render."""
    desired = render.render(repo, host, "")
    scratch = Path(tempfile.mkdtemp(prefix="vigo-check-"))
    tmp = scratch / "tree"
    try:
        # The same materialisation apply uses for the runtime tree (adapters/fs.py).
        fs.sync_tree(tmp, {**desired.files, **desired.env_files}, {}, (),
                     scratch / "manifest.json")
        judged: list[Finding] | None = [] if resolve is not None else None
        proxy_network = lint.proxy_network_of(tmp)
        rules = lint.lint_tree(tmp, policy, resolved=judged is not None)
        out: list[Finding] = []
        said = [_origin(f, desired, repo, host) for f in rules]
        out += render_findings(desired, said, host)
        for stack in desired.stacks:
            compose = tmp / stack.compose_file
            if not compose.is_file() or not yaml_capped(compose) or any(
                    f.rule == "yaml-caps" and f.message.startswith(lint.who(stack.name) + ":")
                    for f in rules):
                continue  # over a YAML cap (also an included file): never handed to compose
            found = None
            if judged is not None and resolve is not None:
                found = judge_offline(tmp, scratch, stack, desired, policy, proxy_network,
                                      resolve)
                if found is None:  # docker compose is not installed: the text rules stand in
                    judged = None
                    out.append(NO_COMPOSE)
                elif found[1]:  # compose resolved it: it is valid Compose
                    judged += found[0]
                    continue
            reason = validate(compose)
            if reason is None:
                reason = schema_reason(compose)
            if reason:
                out.append(_origin(Finding(
                    "compose-valid", ERROR, stack.compose_file, None,
                    f"stack {stack.name}: not valid Compose: {reason.replace(str(tmp) + '/', '')}",
                    "fix the file until `docker compose config` accepts it"), desired, repo, host))
            elif found is not None and judged is not None:
                judged += found[0]
        if judged is None and resolve is not None:  # compose missing: the text rules stand in
            rules = lint.lint_tree(tmp, policy, resolved=False)
        # A bind that climbs out of the tree is already a text error (path-escape, with its
        # item's line): the resolved host-path of the same service says nothing more.
        escapes = {(f.path, f.message.split(": ", 1)[0]) for f in rules
                   if f.rule == "path-escape" and f.severity == ERROR}
        judged = [f for f in judged or [] if not (
            f.rule == "host-path" and (f.path, f.message.split(": ", 1)[0]) in escapes)]
        out += [_origin(f, desired, repo, host) for f in [*rules, *judged]]
        return out
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def judge_offline(tmp: Path, scratch: Path, stack: Any, desired: DesiredState, rules: Policy,
                  proxy_network: str, resolve: Resolver) -> tuple[list[Finding], bool] | None:
    """policy.judge over the model `docker compose config` resolves with placeholder values for
    the variables of encrypted env files (only their names are known offline): (findings,
    whether compose resolved it). None when docker compose is not installed."""
    keys: set[str] = set().union(*(lint.env_key_names(desired.env_files[rel])
                                   for rel in stack.interpolation_env
                                   if rel in desired.env_files))
    scope = policy.Scope(stack.name, stack.name, str(tmp / stack.folder), proxy_network)
    env = scratch / f"{stack.name}.placeholders.env"
    reason = ""
    violations: list[policy.Violation] | None = None
    for numeric in (False, True) if keys else (False,):
        stand_ins = policy.placeholders(keys, numeric)
        env.write_text(policy.env_text(stand_ins))
        res = resolve(stack.name, tmp / stack.compose_file, env)
        if res is None:
            return None
        if res.ok:
            try:
                violations = policy.judge(json.loads(res.stdout), scope, rules, stand_ins)
            except (json.JSONDecodeError, RecursionError) as exc:
                reason = f"docker compose config gave no JSON: {exc}"
                continue
            break
        reason = res.error(2)
    if violations is None:
        if not keys:
            return [Finding("compose-valid", ERROR, stack.compose_file, None,
                            f"stack {stack.name}: not valid Compose: "
                            f"{reason.replace(str(tmp) + '/', '')}",
                            "fix the file until `docker compose config` accepts it")], False
        violations = [policy.unresolved_failure(scope, keys, reason.replace(str(tmp) + "/", ""))]
        resolved = False
    else:
        resolved = True
    out = []
    for v in violations:
        rel, line = lint.locate(tmp, stack.compose_file, v.service, v.key)
        out.append(Finding(v.rule, ERROR, rel, line, v.what.replace(str(tmp) + "/", ""), v.fix))
    return out, resolved


def render_findings(desired: DesiredState, found: list[Finding], host: str) -> list[Finding]:
    """What fails a stack at render on the host (a link, an odd or unreadable name, a file
    over 16 MiB, a file in one tree and a folder in the other, no usable compose file), and a
    tree that cannot be rendered at all: errors, each naming the path. Lines the lint rules
    already say (stack-layout, stack-name) are not repeated."""
    said = [f.message for f in found]
    on = f" (as host {host} renders it)" if host else ""
    fix = "Fix the path named: the stack is not applied (and keeps running) until then."
    out = []
    if desired.error:
        out.append(Finding("render", ERROR, ".", None, f"{desired.error}{on}", fix))
    for stack in desired.stacks:
        for problem in stack.problems:
            if problem.startswith(("stack name ", "a stack may not be called")) or (
                    " symlink" in problem) or any(  # rule `symlink` names every link
                    m.endswith(problem) or f"{problem} (as host" in m for m in said):
                continue
            out.append(Finding("render", ERROR, stack.folder, None,
                               f"stack {stack.name}: {problem}{on}", fix))
    return out


def yaml_capped(path: Path) -> bool:
    """True when a file is within the YAML caps (yamlsafe: size, nesting, alias expansion), so
    `docker compose config` may read it."""
    from vigo.core import yamlsafe

    try:
        yamlsafe.scan(path.read_bytes().decode("utf-8", "replace"))
    except (OSError, yamlsafe.YamlRefused):
        return False
    return True


def schema_reason(compose: Path) -> str:
    """Unknown service keys, for when `docker compose` is not there to validate."""
    from vigo.core import yamlsafe

    try:
        doc = yamlsafe.load_bytes(compose.read_bytes())
    except (OSError, yamlsafe.YamlRefused):
        return ""  # the compose-parse rule reports it, with its line
    services = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(services, dict):
        return ""
    bad = [f"services.{name}.{key}" for name, svc in services.items() if isinstance(svc, dict)
           for key in svc if key not in SERVICE_KEYS and not str(key).startswith("x-")]
    return f"unknown key(s) {', '.join(bad)}" if bad else ""


def _origin(f: Finding, desired: DesiredState, repo: Path, host: str) -> Finding:
    """The finding, naming the repo file the rendered file came from (an overlay or the base)."""
    src = desired.files.get(f.path) or desired.env_files.get(f.path)
    if src is None:
        return f
    try:
        rel = src.relative_to(repo).as_posix()
    except ValueError:
        rel = f.path
    if rel == f.path:
        return f
    return Finding(f.rule, f.severity, rel, f.line, f"{f.message} (as host {host} renders it)",
                   f.fix)


def _key(f: Finding) -> tuple:
    return (f.rule, f.path, f.line, f.message.split(" (as host ")[0])


def format_text(findings: list[Finding], repo: Path) -> list[str]:
    lines = []
    for f in findings:
        lines.append(f"{f.where}: {f.severity} [{f.rule}] {f.message}")
        lines.append(f"    fix: {f.fix}")
    errors = sum(f.severity == ERROR for f in findings)
    warnings = sum(f.severity == WARNING for f in findings)
    lines.append(f"{repo}: {errors} error(s), {warnings} warning(s)")
    return lines


def to_json(findings: list[Finding]) -> list[dict[str, object]]:
    return [asdict(f) for f in findings]
