"""Rules of `vigo check`: an offline validator of an infra repo, one module a rule family.

Pure: this package reads files and returns findings; it never starts a process, talks to Docker
or opens a socket. Three entry points:

- `lint_tree`: every rule over one rendered tree (proxy/, stacks/, env/; overlays applied), made
  of `discover`, one `lint_one` per stack and `combine` (vigo check keeps each stack's part);
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
tree), `@tree_rule(facts)` (every stack of a host, from each stack's facts: plain data) or
`@repo_rule` (the checkout). A rule that reads a path of the tree other than the stack's own
folder and its env files names it in `lint_one`'s reads. A new family
(e.g. an engine's own rules, which read `cf.x_vigo`, the one x-vigo parser's options) is a new
module here plus its name in FAMILIES.
"""

import importlib
import json
import posixpath
from pathlib import Path
from typing import Any

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
from vigo.core.records import record, replace

# The rule families, each a module of this package; importing one registers its rules.
FAMILIES = ("layout", "compose", "images", "privileges", "paths", "proxy", "env", "repo", "xvigo",
            "swarm")
for _family in FAMILIES:
    importlib.import_module(f"{__name__}.{_family}")

__all__ = ["ERROR", "RESOLVED_RULES", "RULES", "WARNING", "ComposeFile", "Finding", "Policy",
           "StackLint", "combine", "discover", "env_key_names", "lint_one", "lint_repo_files",
           "lint_stack", "lint_tree", "locate", "proxy_network_of", "resolve", "sort_findings",
           "who"]


def lint_tree(root: Path, policy: Policy = STRICT, resolved: bool = False) -> list[Finding]:
    """All rules over one rendered tree (a directory laid out like the infra repo, overlays
    already applied, no hosts/ folder needed). `resolved`: the privilege rules of the text
    (RESOLVED_RULES) stand aside because policy.judge runs over the resolved model."""
    root = Path(root)
    targets, findings = discover(root)
    proxy_network = proxy_network_of(root)
    return combine(findings, [lint_one(root, stack, rel, policy, proxy_network, resolved)
                              for stack, rel in targets])


@record
class StackLint:
    """One stack's part of lint_tree: its findings, the facts of each tree rule (JSON data, in
    TREE_RULES order) and every path of the tree it read or looked for (what vigo check keys a
    kept part by)."""

    findings: list[Finding]
    facts: list[Any]
    reads: list[str]


def lint_one(root: Path, stack: str, rel: str, policy: Policy, proxy_network: str,
             resolved: bool = False) -> StackLint:
    """The rules of one stack of a tree (`rel`: its compose file, as discover found it)."""
    looked: set[str] = set()
    keys = frozenset(stack_env_keys(root, stack))
    loaded, problems = load(root, stack, rel, keys, policy, proxy_network, resolved, looked)
    own = frozenset(env_key_names(root / "env" / f"{stack}.env"))
    files = [replace(cf, stack_keys=own) for cf in loaded]
    # The facts go through JSON here too, so that a kept part and a fresh one are the same.
    facts = json.loads(json.dumps([facts_of(files) for facts_of, _ in TREE_RULES],
                                  default=str))
    looked |= {"env/global.env", f"env/{stack}.env"}  # stack_env_keys
    looked |= {posixpath.join(cf.folder, ".env") for cf in files}  # _stack_dotenv
    return StackLint(problems + _stack_findings(root, files), facts, sorted(looked))


def combine(findings: list[Finding], parts: list[StackLint]) -> list[Finding]:
    """lint_tree's findings: the tree's own (discover's), each stack's, and the tree rules over
    every stack's facts (`parts` in discover's order)."""
    out = list(findings)
    for part in parts:
        out += part.findings
    for i, (_facts, rule) in enumerate(TREE_RULES):
        out.extend(rule([part.facts[i] for part in parts]))
    return sort_findings(out)


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
