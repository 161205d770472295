"""`vigo check`: validate an infra repo offline, as every host would render it.

Renders the base tree and each hosts/<name>/ overlay into a temp dir, runs the lint rules over
each, validates every compose file (`docker compose config` where it is installed, a check of
the known Compose keys otherwise), and maps each finding back to the file in the repo.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from vigo import lint, render
from vigo.adapters import fs
from vigo.config import Settings
from vigo.lint import ERROR, WARNING, Finding, Policy
from vigo.model import DesiredState

# Validates one compose file; returns '' when valid, the reason otherwise, None when no validator
# is installed.
Validator = Callable[[Path], str | None]

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


def policy_of(settings: Settings | None) -> Policy:
    if settings is None:
        return Policy()
    return Policy(allow_unpinned=frozenset(settings.allow_unpinned),
                  allow_caps=frozenset(settings.allow_caps),
                  allow_host_paths=frozenset(settings.allow_host_paths))


def hosts_of(repo: Path) -> list[str]:
    folder = repo / "hosts"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.is_symlink())


def check(repo: Path, policy: Policy, validate: Validator,
          hosts: list[str] | None = None) -> list[Finding]:
    """Every finding of the repo, for the base tree and every host overlay, deduplicated."""
    findings: dict[tuple, Finding] = {}
    for f in lint.lint_repo_files(repo):
        findings[_key(f)] = f
    for host in ["", *hosts_of(repo)] if hosts is None else hosts:
        for f in check_rendered(repo, host, policy, validate):
            findings.setdefault(_key(f), f)
    return sorted(findings.values(), key=lambda f: (f.path, f.line or 0, f.rule, f.message))


def check_rendered(repo: Path, host: str, policy: Policy, validate: Validator) -> list[Finding]:
    """The lint rules and compose validation over the tree one host would render."""
    desired = render.render(repo, host, "")
    scratch = Path(tempfile.mkdtemp(prefix="vigo-check-"))
    tmp = scratch / "tree"
    try:
        # The same materialisation apply uses for the runtime tree (adapters/fs.py).
        fs.sync_tree(tmp, {**desired.files, **desired.env_files}, {}, (),
                     scratch / "manifest.json")
        out = [_origin(f, desired, repo, host) for f in lint.lint_tree(tmp, policy)]
        out += render_findings(desired, out, host)
        for stack in desired.stacks:
            compose = tmp / stack.compose_file
            if not compose.is_file() or not yaml_capped(compose) or any(
                    f.rule == "yaml-caps" and f.message.startswith(lint._who(stack.name) + ":")
                    for f in out):
                continue  # over a YAML cap (also an included file): never handed to compose
            reason = validate(compose)
            if reason is None:
                reason = schema_reason(compose)
            if reason:
                out.append(_origin(Finding(
                    "compose-valid", ERROR, stack.compose_file, None,
                    f"stack {stack.name}: not valid Compose: {reason.replace(str(tmp) + '/', '')}",
                    "fix the file until `docker compose config` accepts it"), desired, repo, host))
        return out
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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
    from vigo import yamlsafe

    try:
        yamlsafe.scan(path.read_bytes().decode("utf-8", "replace"))
    except (OSError, yamlsafe.YamlRefused):
        return False
    return True


def schema_reason(compose: Path) -> str:
    """Unknown service keys, for when `docker compose` is not there to validate."""
    from vigo import yamlsafe

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
        where = f.path + (f":{f.line}" if f.line else "")
        lines.append(f"{where}: {f.severity} [{f.rule}] {f.message}")
        lines.append(f"    fix: {f.fix}")
    errors = sum(f.severity == ERROR for f in findings)
    warnings = sum(f.severity == WARNING for f in findings)
    lines.append(f"{repo}: {errors} error(s), {warnings} warning(s)")
    return lines


def to_json(findings: list[Finding]) -> list[dict[str, object]]:
    return [asdict(f) for f in findings]
