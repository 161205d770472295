"""Loading: which stacks a tree has (their names and compose files: render's decision), and each
compose file parsed with the local files it includes or extends. The findings of loading
are rules of their own (compose-parse, yaml-caps, stack-layout, stack-name); `render` is
workstation/check.py's (a path that does not render)."""

from pathlib import Path
from typing import Any

from vigo.core import render, yamlsafe
from vigo.core.lint.base import ERROR, WARNING, ComposeFile, Finding, describe, who
from vigo.core.lint.doc import as_mapping, env_key_names, key_line, local_target, path_fields
from vigo.core.model import COMPOSE_NAMES, PROXY, STACK_NAME_RULE, is_stack_name
from vigo.core.policy import DEFAULT_PROXY_NETWORK, Policy

IDS = describe({
    "compose-parse": "a compose file is YAML with a top-level `services` mapping of mappings",
    "yaml-caps": "YAML aliases expand to at most 100,000 nodes, nest at most 64 levels, a file "
    "is at most 256 KiB (never handed to `docker compose` otherwise)",
    "stack-layout": "each stack folder has exactly one compose file (any name compose accepts), "
    "no override file",
    "stack-name": "stack names are valid compose project names and not `proxy`",
    "render": "every path renders: no odd, unreadable or looping name, no file over 16 MiB, "
    "no file that an overlay turns into a folder (or the reverse)",
})


def discover(root: Path) -> tuple[list[tuple[str, str]], list[Finding]]:
    """(stack, compose file) of the proxy and of every stacks/<name>/, plus layout findings.
    Which compose file a folder has is render.compose_problems' decision (one home for it)."""
    folders = [(PROXY, "proxy")]
    stacks = root / "stacks"
    if stacks.is_dir():
        folders += [
            (d.name, f"stacks/{d.name}")
            for d in sorted(stacks.iterdir())
            if d.is_dir() and not d.is_symlink()
        ]
    targets: list[tuple[str, str]] = []
    findings: list[Finding] = []
    for name, folder in folders:
        where = who(name)
        if folder != "proxy" and not is_stack_name(name):
            what = f"{where}: '{name}' is not a valid stack name ({STACK_NAME_RULE})"
            fix = f"Rename the folder {folder}/ (and env/{name}.env) to a valid name."
            findings.append(Finding("stack-name", ERROR, folder, None, what, fix))
        if folder == "proxy" and not (root / folder).is_dir():
            what = f"{where}: there is no proxy/ folder with a compose file; skipped"
            fix = f"Add proxy/{COMPOSE_NAMES[0]} (the Traefik proxy) or ignore this warning."
            findings.append(Finding("stack-layout", WARNING, folder, None, what, fix))
            continue
        try:
            entries = {f"{folder}/{e.name}" + ("/" if e.is_dir() else "")
                       for e in (root / folder).iterdir()}
        except OSError as exc:
            what = f"{where}: {folder}/ cannot be read ({exc.strerror or exc})"
            fix = f"Fix the owner and permissions of {folder}/."
            findings.append(Finding("stack-layout", ERROR, folder, None, what, fix))
            continue
        problems = render.compose_problems(folder, entries)
        for what in problems:
            fix = ("Keep exactly one compose file per stack, named as compose names it "
                   f"({', '.join(COMPOSE_NAMES)}); no override file.")
            findings.append(Finding("stack-layout", ERROR, folder, None, f"{where}: {what}", fix))
        present = render.compose_files(folder, entries.__contains__)
        if len(present) == 1:
            targets.append((name, present[0]))
    return targets, findings


def stack_env_keys(root: Path, stack: str) -> set[str]:
    return env_key_names(root / "env" / "global.env") | env_key_names(
        root / "env" / f"{stack}.env")


def proxy_network_of(root: Path) -> str:
    """The proxy's default network name: proxy compose `networks.default.name`."""
    for rel in render.compose_files(PROXY, lambda rel: (root / rel).is_file())[:1]:
        try:
            doc = yamlsafe.load_bytes((root / rel).read_bytes())
        except (OSError, yamlsafe.YamlRefused):
            break
        default = as_mapping(as_mapping(as_mapping(doc).get("networks")).get("default"))
        return str(default.get("name") or DEFAULT_PROXY_NETWORK)
    return DEFAULT_PROXY_NETWORK


def load(
    root: Path,
    stack: str,
    rel: str,
    env_keys: frozenset[str],
    policy: Policy,
    proxy_network: str,
    resolved: bool = False,
    looked: set[str] | None = None,
) -> tuple[list[ComposeFile], list[Finding]]:
    """Parse a stack's compose file and the local files it includes or extends. `looked` is
    given every path of the tree read or looked for."""
    looked = set() if looked is None else looked
    files: list[ComposeFile] = []
    findings: list[Finding] = []
    queue, seen = [(rel, False)], set()
    while queue:
        rel, fragment = queue.pop(0)
        if rel in seen:
            continue
        seen.add(rel)
        looked.add(rel)
        doc, problem = parse(root, rel, stack)
        if problem:
            findings.append(problem)
            continue
        cf = ComposeFile(stack, rel, doc, env_keys, policy, proxy_network, fragment, resolved)
        files.append(cf)
        for _service, _what, raw, _line, follow in path_fields(doc):
            target = local_target(cf, raw) if follow else None
            if target:
                looked.add(target)
            if target and (root / target).is_file():
                queue.append((target, follow == "extends"))
    return files, findings


def parse(root: Path, rel: str, stack: str) -> tuple[Any, Finding | None]:
    def problem(line: int | None, what: str) -> tuple[Any, Finding]:
        fix = "Fix the file so that `docker compose config` accepts it."
        return None, Finding("compose-parse", ERROR, rel, line, f"{who(stack)}: {what}", fix)

    try:
        doc = yamlsafe.load_bytes((root / rel).read_bytes())
    except OSError as exc:
        return problem(None, f"cannot read {rel}: {exc.strerror or exc}")
    except yamlsafe.YamlRefused as exc:  # invalid YAML, or over a cap: an alias bomb, 64 levels
        found = problem(exc.line, f"{rel} {exc.what}")
        if exc.cap:  # check.py: such a file never reaches `docker compose`
            fix = ("Remove the alias bomb or flatten the file: it is over a cap of vigo's YAML "
                   "loader (aliases, nesting, size).")
            found = (None, Finding("yaml-caps", ERROR, rel, exc.line, found[1].message, fix))
        return found
    if not isinstance(doc, dict):
        return problem(1, f"{rel} is not a YAML mapping")
    if not isinstance(doc.get("services"), dict):
        line = key_line(doc, "services") if "services" in doc else 1
        return problem(line, f"{rel} has no top-level `services` mapping")
    return doc, None
