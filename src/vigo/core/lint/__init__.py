"""Rules of `vigo check`: an offline validator of an infra repo, one module a rule family.

Pure: this package reads files and returns findings; it never starts a process, talks to Docker
or opens a socket. Three entry points:

- `lint_tree`: every rule over one rendered tree (proxy/, stacks/, env/; overlays applied);
- `lint_stack`: the per-stack rules, which apply re-runs stack by stack;
- `lint_repo_files`: rules on the checkout itself (env encryption, .sops.yaml, hosts/, symlinks).

What a stack may ask of the host is judged on the resolved model by policy.py; with
`resolved=True` the text rules for it (RESOLVED_RULES, absolute bind sources) stand aside. They
remain the fallback where `docker compose` is not installed.

Env files are read for key NAMES only. No finding ever carries a value from an env file; for a
plaintext file not even key names are printed (a pasted secret can look like `KEY=...`).

The rooms: `base` (Finding, ComposeFile, the registry), `doc` (reading a compose document),
`layout` (which stacks a tree has, parsing), and one module per family listed in FAMILIES.
A new rule goes into its family's module: its id and text in that module's `describe({...})`,
its function under `@stack_rule` (one compose file), `@files_rule` (a stack's files with the
tree), `@tree_rule` (every compose file of a host) or `@repo_rule` (the checkout). A new family
(e.g. an engine's own rules, which read `cf.x_vigo`, the one x-vigo parser's options) is a new
module here plus its name in FAMILIES.
"""

import importlib
from pathlib import Path

from vigo.core.lint.base import (
    ERROR,
    FILES_RULES,
    REPO_RULES,
    RESOLVED_RULES,
    RULES,
    STACK_RULES,
    STRICT,
    TREE_RULES,
    WARNING,
    ComposeFile,
    Finding,
    rel_path,
    sort_findings,
    who,
)
from vigo.core.lint.doc import as_mapping, env_key_names, key_line, resolve
from vigo.core.lint.layout import discover, load, proxy_network_of, stack_env_keys
from vigo.core.policy import DEFAULT_PROXY_NETWORK, Policy
from vigo.core.records import replace

# The rule families, each a module of this package; importing one registers its rules.
FAMILIES = ("layout", "compose", "images", "privileges", "paths", "proxy", "env", "repo", "xvigo",
            "swarm")
for _family in FAMILIES:
    importlib.import_module(f"{__name__}.{_family}")

__all__ = ["ERROR", "RESOLVED_RULES", "RULES", "WARNING", "ComposeFile", "Finding", "Policy",
           "env_key_names", "lint_repo_files", "lint_stack", "lint_tree", "locate",
           "proxy_network_of", "resolve", "sort_findings", "who"]


def lint_tree(root: Path, policy: Policy = STRICT, resolved: bool = False) -> list[Finding]:
    """All rules over one rendered tree (a directory laid out like the infra repo, overlays
    already applied, no hosts/ folder needed). `resolved`: the privilege rules of the text
    (RESOLVED_RULES) stand aside because policy.judge runs over the resolved model."""
    root = Path(root)
    targets, findings = discover(root)
    proxy_network = proxy_network_of(root)
    files: list[ComposeFile] = []
    for stack, rel in targets:
        keys = frozenset(stack_env_keys(root, stack))
        loaded, problems = load(root, stack, rel, keys, policy, proxy_network, resolved)
        own = frozenset(env_key_names(root / "env" / f"{stack}.env"))
        files += [replace(cf, stack_keys=own) for cf in loaded]
        findings += problems
    findings += _stack_findings(root, files)
    for tree_check in TREE_RULES:
        findings.extend(tree_check(files))
    return sort_findings(findings)


def lint_stack(
    root: Path, stack: str, compose_file: Path, env_keys: set[str], policy: Policy,
    resolved: bool = False,
) -> list[Finding]:
    """Per-stack rules (the ones apply re-runs stack by stack); stack "proxy" is the proxy.

    `compose_file` may be absolute or relative to `root`; local `include:` and `extends:` files
    inside the tree are linted with it."""
    root = Path(root)
    path = compose_file if Path(compose_file).is_absolute() else root / compose_file
    files, findings = load(
        root, stack, rel_path(root, path), frozenset(env_keys), policy, proxy_network_of(root),
        resolved,
    )
    return sort_findings(findings + _stack_findings(root, files))


def _stack_findings(root: Path, files: list[ComposeFile]) -> list[Finding]:
    """The rules of one compose file at a time, and of a stack's files with the tree at hand."""
    found = [f for cf in files for rule in STACK_RULES for f in rule(cf)]
    return found + [f for rule in FILES_RULES for f in rule(root, files)]


def lint_repo_files(repo: Path) -> list[Finding]:
    """Repo-level rules that are not per rendered tree: env encryption + .sops.yaml coverage
    for env/*.env and hosts/*/env/*.env, hosts/ overlay shape, and no symlinks."""
    repo = Path(repo)
    return sort_findings(f for rule in REPO_RULES for f in rule(repo))


def locate(root: Path, compose_file: str, service: str, key: str) -> tuple[str, int | None]:
    """Best effort: the file and line where a service's key (or a top-level `volumes.x`-style
    key) is written, in the compose file or the local files it includes or extends."""
    files, _ = load(Path(root), "", compose_file, frozenset(), STRICT, DEFAULT_PROXY_NETWORK)
    fallback: tuple[str, int | None] | None = None
    for cf in files:
        if service:
            svc = as_mapping(as_mapping(cf.doc.get("services")).get(service))
            if key.split(".")[0] in svc:
                return cf.rel, key_line(svc, key.split(".")[0])
            if svc and fallback is None:
                fallback = (cf.rel, key_line(cf.doc["services"], service))
        elif "." in key:
            kind, name = key.split(".", 1)
            section = as_mapping(cf.doc.get(kind))
            if name in section:
                return cf.rel, key_line(section, name)
    return fallback or (compose_file, None)
