"""Rules of `vigo check`: an offline validator of an infra repo.

Pure: this module reads files and returns findings; it never starts a process, talks to Docker or
opens a socket. Three entry points:

- `lint_tree`: every rule over one rendered tree (proxy/, stacks/, env/; overlays applied);
- `lint_stack`: the per-stack rules, which apply re-runs stack by stack;

What a stack may ask of the host is judged on the resolved model by policy.py; with
`resolved=True` the text rules for it (RESOLVED_RULES, absolute bind sources) stand aside. They
remain the fallback where `docker compose` is not installed.
- `lint_repo_files`: rules on the checkout itself (env encryption, .sops.yaml, hosts/, symlinks).

Env files are read for key NAMES only. No finding ever carries a value from an env file; for a
plaintext file not even key names are printed (a pasted secret can look like `KEY=...`).

Each rule is a small function over a parsed compose file (`ComposeFile`), over all of them
(`TREE_RULES`) or over the repo folder (`REPO_RULES`); `RULES` lists every rule id.
"""

import os
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vigo.core import render, rollout, xvigo, yamlsafe
from vigo.core.model import COMPOSE_NAMES, PROXY
from vigo.core.policy import Policy

ERROR = "error"
# Text rules that policy.judge replaces when the resolved model is at hand (the fallback when
# `docker compose` is not installed).
RESOLVED_RULES = frozenset({"privileged", "host-namespace", "devices", "cap-add", "docker-sock",
                            "build"})
WARNING = "warning"
DEFAULT_PROXY_NETWORK = "proxy_default"


@dataclass(frozen=True)
class Finding:
    rule: str  # stable id, e.g. "image-pinned"
    severity: str  # "error" or "warning"
    path: str  # repo-relative POSIX path of the file
    line: int | None  # 1-based where known
    message: str  # what is wrong, naming the stack/service
    fix: str  # how to fix it, one sentence


_STRICT = Policy()


RULES: dict[str, str] = {
    "compose-parse": "a compose file is YAML with a top-level `services` mapping of mappings",
    "yaml-caps": "YAML aliases expand to at most 100,000 nodes, nest at most 64 levels, a file "
    "is at most 256 KiB (never handed to `docker compose` otherwise)",
    "compose-key": "a compose file has no unknown top-level key (x-* extensions are fine)",
    "service-image": "every service names an image",
    "image-pinned": "images are pinned to a sha-<hex> tag or an @sha256 digest",
    "env-encrypted": "env files are SOPS-encrypted, every value of them",
    "sops-coverage": ".sops.yaml exists and one of its creation rules matches every env file",
    "docker-sock": "only the proxy mounts docker.sock, and only read-only",
    "privileged": "no privileged container",
    "host-namespace": "no host pid, ipc, network, userns or uts namespace",
    "devices": "no host devices",
    "cap-add": "added capabilities stay within the allowlist, never ALL",
    "path-escape": "relative paths stay inside the tree",
    "host-path": "no absolute host path outside the allowlist",
    "remote-include": "no remote include or extends (git, oci, http)",
    "build": "no build: images come from a registry",
    "project-name": "no top-level name: vigo owns the project name",
    "container-name": "no container_name: vigo owns container identity",
    "traefik-router-unique": "Traefik router names are unique across stacks",
    "traefik-service-unique": "Traefik service names are unique across stacks",
    "traefik-host-unique": "Traefik Host(...) rules are unique across stacks",
    "traefik-network": "every routed service is on the proxy network",
    "label-env": "every ${VAR} in a label is defined in the env files or has a default",
    "traefik-dashboard": "the Traefik API is not insecure and the dashboard sits behind a router",
    "overlay-shape": "hosts/<name>/ overlays hold only proxy/, stacks/ and env/",
    "symlink": "no symbolic links anywhere in the repo",
    "stack-layout": "each stack folder has exactly one compose file (any name compose accepts), "
    "no override file",
    "stack-name": "stack names are valid compose project names and not `proxy`",
    "render": "every path renders: no odd, unreadable or looping name, no file over 16 MiB, "
    "no file that an overlay turns into a folder (or the reverse)",
    "env-file": "a stack's env files are env/global.env, env/<stack>.env or files in its own "
    "folder; include/extends files are in its own folder",
    "rollout": "routed services with a healthcheck can run two containers at once (warning)",
    "registries": "env/registries.env holds complete NAME_REGISTRY/_USERNAME/_PASSWORD groups",
    "x-vigo": "a compose file's x-vigo block holds only health_timeout, after and jobs, of "
    "the right types; every job is a service of it that nothing depends on",
    "x-vigo-order": "x-vigo.after names stacks of the host and makes no cycle",
    "shared-resource": "an external network or volume is created by a stack of the host; "
    "that stack then comes first (warning)",
    "stack-dotenv": "no .env in a stack folder (vigo never reads it for ${VAR}), unless a "
    "service names it in env_file; then it holds no secret-looking keys (warning)",
}


@dataclass(frozen=True)
class ComposeFile:
    """One parsed compose file of a stack: the model the stack rules read."""

    stack: str  # "proxy" for the proxy
    rel: str  # repo-relative POSIX path
    doc: Any = field(compare=False, repr=False)  # ruamel mapping; `.lc` has line numbers
    env_keys: frozenset[str] = frozenset()
    policy: Policy = _STRICT
    proxy_network: str = DEFAULT_PROXY_NETWORK
    fragment: bool = False  # an `extends:` base file: its services may be partial
    # the privilege rules judge the resolved model (policy.py): the text rules stand aside
    resolved: bool = False
    stack_keys: frozenset[str] = frozenset()  # of env_keys, those env/<stack>.env defines

    @property
    def folder(self) -> str:
        return posixpath.dirname(self.rel)

    @property
    def is_proxy(self) -> bool:
        return self.stack == PROXY


StackRule = Callable[[ComposeFile], Iterable[Finding]]
TreeRule = Callable[[list[ComposeFile]], Iterable[Finding]]
RepoRule = Callable[[Path], Iterable[Finding]]
STACK_RULES: list[StackRule] = []
TREE_RULES: list[TreeRule] = []
REPO_RULES: list[RepoRule] = []


def _register(registry: list) -> Callable:
    def add(fn: Callable) -> Callable:
        registry.append(fn)
        return fn

    return add


stack_rule = _register(STACK_RULES)
tree_rule = _register(TREE_RULES)
repo_rule = _register(REPO_RULES)


# --- entry points -----------------------------------------------------------------------------


def lint_tree(root: Path, policy: Policy = _STRICT, resolved: bool = False) -> list[Finding]:
    """All rules over one rendered tree (a directory laid out like the infra repo, overlays
    already applied, no hosts/ folder needed). `resolved`: the privilege rules of the text
    (RESOLVED_RULES) stand aside because policy.judge runs over the resolved model."""
    root = Path(root)
    targets, findings = _discover(root)
    proxy_network = _proxy_network(root)
    files: list[ComposeFile] = []
    for stack, rel in targets:
        keys = frozenset(_stack_env_keys(root, stack))
        loaded, problems = _load(root, stack, rel, keys, policy, proxy_network, resolved)
        own = frozenset(env_key_names(root / "env" / f"{stack}.env"))
        files += [replace(cf, stack_keys=own) for cf in loaded]
        findings += problems
    for cf in files:
        for rule in STACK_RULES:
            findings.extend(rule(cf))
    findings.extend(_stack_dotenv(root, files))
    for tree_check in TREE_RULES:
        findings.extend(tree_check(files))
    return _sorted(findings)


def lint_stack(
    root: Path, stack: str, compose_file: Path, env_keys: set[str], policy: Policy,
    resolved: bool = False,
) -> list[Finding]:
    """Per-stack rules (the ones apply re-runs stack by stack); stack "proxy" is the proxy.

    `compose_file` may be absolute or relative to `root`; local `include:` and `extends:` files
    inside the tree are linted with it."""
    root = Path(root)
    path = compose_file if Path(compose_file).is_absolute() else root / compose_file
    files, findings = _load(
        root, stack, _rel(root, path), frozenset(env_keys), policy, _proxy_network(root),
        resolved,
    )
    for cf in files:
        for rule in STACK_RULES:
            findings.extend(rule(cf))
    findings.extend(_stack_dotenv(root, files))
    return _sorted(findings)


def lint_repo_files(repo: Path) -> list[Finding]:
    """Repo-level rules that are not per rendered tree: env encryption + .sops.yaml coverage
    for env/*.env and hosts/*/env/*.env, hosts/ overlay shape, and no symlinks."""
    repo = Path(repo)
    return _sorted(f for rule in REPO_RULES for f in rule(repo))


def locate(root: Path, compose_file: str, service: str, key: str) -> tuple[str, int | None]:
    """Best effort: the file and line where a service's key (or a top-level `volumes.x`-style
    key) is written, in the compose file or the local files it includes or extends."""
    files, _ = _load(Path(root), "", compose_file, frozenset(), _STRICT, DEFAULT_PROXY_NETWORK)
    fallback: tuple[str, int | None] | None = None
    for cf in files:
        if service:
            svc = _mapping(_mapping(cf.doc.get("services")).get(service))
            if key.split(".")[0] in svc:
                return cf.rel, _key_line(svc, key.split(".")[0])
            if svc and fallback is None:
                fallback = (cf.rel, _key_line(cf.doc["services"], service))
        elif "." in key:
            kind, name = key.split(".", 1)
            section = _mapping(cf.doc.get(kind))
            if name in section:
                return cf.rel, _key_line(section, name)
    return fallback or (compose_file, None)


def env_key_names(path: Path) -> set[str]:
    """Variable NAMES defined in a dotenv file, plain or sops-encrypted (sops keeps the names in
    clear: `KEY=ENC[...]`), without the `sops_*` metadata keys. A missing file has none."""
    return {key for _, key, _ in _dotenv(Path(path)) if not key.startswith("sops_")}


# --- loading ----------------------------------------------------------------------------------

_STACK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def _discover(root: Path) -> tuple[list[tuple[str, str]], list[Finding]]:
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
        where = _who(name)
        if folder != "proxy" and (name == PROXY or not _STACK_NAME.fullmatch(name)):
            what = (
                f"{where}: '{name}' is not a valid stack name (lowercase letters, digits, "
                "'-' and '_', starting with a letter or digit; 'proxy' is reserved)"
            )
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
        present = [n for n in COMPOSE_NAMES if f"{folder}/{n}" in entries]
        if len(present) == 1:
            targets.append((name, f"{folder}/{present[0]}"))
    return targets, findings


def _stack_env_keys(root: Path, stack: str) -> set[str]:
    return env_key_names(root / "env" / "global.env") | env_key_names(root / "env" / f"{stack}.env")


def _proxy_network(root: Path) -> str:
    """The proxy's default network name: proxy compose `networks.default.name`."""
    for name in COMPOSE_NAMES:
        path = root / "proxy" / name
        if path.is_file():
            try:
                doc = yamlsafe.load_bytes(path.read_bytes())
            except (OSError, yamlsafe.YamlRefused):
                break
            default = _mapping(_mapping(_mapping(doc).get("networks")).get("default"))
            return str(default.get("name") or DEFAULT_PROXY_NETWORK)
    return DEFAULT_PROXY_NETWORK


def _load(
    root: Path,
    stack: str,
    rel: str,
    env_keys: frozenset[str],
    policy: Policy,
    proxy_network: str,
    resolved: bool = False,
) -> tuple[list[ComposeFile], list[Finding]]:
    """Parse a stack's compose file and the local files it includes or extends."""
    files: list[ComposeFile] = []
    findings: list[Finding] = []
    queue, seen = [(rel, False)], set()
    while queue:
        rel, fragment = queue.pop(0)
        if rel in seen:
            continue
        seen.add(rel)
        doc, problem = _parse(root, rel, stack)
        if problem:
            findings.append(problem)
            continue
        cf = ComposeFile(stack, rel, doc, env_keys, policy, proxy_network, fragment, resolved)
        files.append(cf)
        for _service, _what, raw, _line, follow in _path_fields(doc):
            target = _local_target(cf, raw) if follow else None
            if target and (root / target).is_file():
                queue.append((target, follow == "extends"))
    return files, findings


def _parse(root: Path, rel: str, stack: str) -> tuple[Any, Finding | None]:
    def problem(line: int | None, what: str) -> tuple[Any, Finding]:
        fix = "Fix the file so that `docker compose config` accepts it."
        return None, Finding("compose-parse", ERROR, rel, line, f"{_who(stack)}: {what}", fix)

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
        line = _key_line(doc, "services") if "services" in doc else 1
        return problem(line, f"{rel} has no top-level `services` mapping")
    return doc, None


# --- rule 1: structure ------------------------------------------------------------------------

_TOP_KEYS = frozenset(
    {"version", "name", "services", "networks", "volumes", "secrets", "configs", "include"}
)


@stack_rule
def _structure(cf: ComposeFile) -> Iterator[Finding]:
    for key in cf.doc:
        if str(key) not in _TOP_KEYS and not str(key).startswith("x-"):
            fix = "Remove it, or rename it to an x-* extension if it holds YAML anchors."
            what = f"unknown top-level key '{key}'"
            yield _finding(cf, "compose-key", _key_line(cf.doc, key), None, what, fix)
    services = cf.doc["services"]
    for name, svc in services.items():
        line = _key_line(services, name)
        if not isinstance(svc, dict):
            fix = "Write the service as a mapping with at least `image:`."
            yield _finding(cf, "compose-parse", line, name, "the service is not a mapping", fix)
        elif not svc.get("image") and not cf.fragment and "extends" not in svc:
            fix = "Name a pinned registry image, e.g. `image: ghcr.io/org/app:sha-<commit>`."
            yield _finding(cf, "service-image", line, name, "the service has no `image:`", fix)


@stack_rule
def _xvigo(cf: ComposeFile) -> Iterator[Finding]:
    """The x-vigo block (xvigo.py): apply refuses a stack whose block this rule rejects."""
    if xvigo.KEY not in cf.doc:
        return
    services = cf.doc.get("services") if not cf.fragment else None
    _, problems = xvigo.parse(cf.doc[xvigo.KEY], services, cf.stack)
    if cf.is_proxy and _mapping(cf.doc[xvigo.KEY]).get("after"):
        problems.append(xvigo.Problem(f"{xvigo.KEY}.after", "is set on the proxy, which always "
                                      "runs first", "drop it"))
    for p in problems:
        fix = p.fix[:1].upper() + p.fix[1:] + "."
        yield _finding(cf, "x-vigo", _path_line(cf.doc, p.key), None, f"{p.key} {p.message}",
                       fix)


def _path_line(doc: Any, dotted: str) -> int | None:
    """The line of the deepest key of `a.b.c` that the document has."""
    node, line = doc, None
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            break
        line = _key_line(node, part) or line
        node = node[part]
    return line


@tree_rule
def _xvigo_order(files: list[ComposeFile]) -> Iterator[Finding]:
    """x-vigo.after across the stacks of a host: names that are no stack, and cycles (the
    chain is named at every stack of it)."""
    after: dict[str, list[str]] = {}
    where: dict[str, ComposeFile] = {}
    for cf in files:
        block = _mapping(cf.doc.get(xvigo.KEY))
        if "after" not in block or cf.fragment:
            continue
        options, _ = xvigo.parse({"after": block["after"]}, None, cf.stack)
        after.setdefault(cf.stack, []).extend(options.after)
        where.setdefault(cf.stack, cf)
    stacks = {cf.stack for cf in files}
    shares: dict[str, xvigo.Shared] = {}
    for cf in files:
        if cf.fragment:
            continue
        got = xvigo.shared(cf.doc, cf.stack)
        had = shares.get(cf.stack, xvigo.Shared())
        shares[cf.stack] = xvigo.Shared(had.creates | got.creates, had.uses | got.uses)
        where.setdefault(cf.stack, cf)
    for stack, kind, name in xvigo.implicit_after(shares, (PROXY,))[1]:
        cf = where[stack]
        decls = _mapping(cf.doc.get(kind))
        key = next((k for k, d in decls.items() if name in (str(k), str(_mapping(d).get(
            "name"))) or name == str(_mapping(_mapping(d).get("external")).get("name"))), None)
        line = _key_line(decls, key) if key is not None else _key_line(cf.doc, kind)
        what = (f"the external {kind[:-1]} '{name}' is created by no stack of this host: the "
                "stack fails to start unless it exists on the host")
        fix = (f"Let a stack create it (that stack is then applied first), or create it on "
               f"the host once (`docker {kind[:-1]} create {name}`).")
        yield Finding("shared-resource", WARNING, cf.rel, line, f"{_who(stack)}: {what}", fix)
    for name, why in sorted(xvigo.order_problems(after, stacks).items()):
        cf = where[name]
        what, _, fix = why.partition("; fix: ")
        yield _finding(cf, "x-vigo-order", _path_line(cf.doc, f"{xvigo.KEY}.after"), None,
                       what, fix[:1].upper() + fix[1:] + ".")


# --- rule 2: pinned images --------------------------------------------------------------------

_SHA_TAG = re.compile(r"sha-[0-9a-fA-F]{7,40}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _classify_image(ref: str) -> tuple[str, str]:
    """("pinned" | "tag" | "floating", why) for an image reference."""
    if "@" in ref:
        if _DIGEST.fullmatch(ref.rsplit("@", 1)[1]):
            return "pinned", "pinned by digest"
        return "floating", "has a malformed digest (expected @sha256:<64 hex>)"
    last = ref.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else None
    if tag is None:
        return "floating", "has no tag (Docker pulls 'latest')"
    if tag == "latest":
        return "floating", "uses the moving tag 'latest'"
    if tag.startswith("branch-"):
        return "floating", f"uses the moving branch tag '{tag}'"
    if _SHA_TAG.fullmatch(tag):
        return "pinned", "pinned by sha tag"
    return "tag", f"uses the tag '{tag}', which is not an immutable sha-<commit> tag or digest"


@stack_rule
def _image_pinned(cf: ComposeFile) -> Iterator[Finding]:
    if cf.stack in cf.policy.allow_unpinned:
        return
    fix = (
        "Pin the image to `:sha-<commit>` or `@sha256:<digest>`, "
        f"or add '{cf.stack}' to the allow_unpinned setting."
    )
    for name, svc, _ in _services(cf.doc):
        image = svc.get("image")
        if not isinstance(image, str) or not image:
            continue
        line = _key_line(svc, "image")
        resolved = _resolve(image, cf.env_keys)
        if resolved is None:
            names = ", ".join(f"${{{v}}}" for v in _var_names(image))
            what = (
                f"image '{image}' depends on {names}, whose value cannot be known offline; "
                "cannot check that it is pinned"
            )
            fix_var = "Write the image literally with a sha-<commit> tag or a digest."
            yield _finding(cf, "image-pinned", line, name, what, fix_var, WARNING)
            continue
        level, why = _classify_image(resolved)
        shown = f"image '{image}'" + ("" if resolved == image else f" (= '{resolved}')")
        if level == "floating":
            severity = WARNING if cf.is_proxy else ERROR
            yield _finding(cf, "image-pinned", line, name, f"{shown} {why}", fix, severity)
        elif level == "tag" and not cf.is_proxy:
            yield _finding(cf, "image-pinned", line, name, f"{shown} {why}", fix, WARNING)


# --- rule 4: privileges -----------------------------------------------------------------------

_SOCKS = frozenset({"/var/run/docker.sock", "/run/docker.sock"})
_HOST_NAMESPACES = ("pid", "ipc", "network_mode", "userns_mode", "uts")


@stack_rule
def _privileges(cf: ComposeFile) -> Iterator[Finding]:
    if cf.resolved:
        return
    allowed = {_cap(c) for c in cf.policy.allow_caps}
    for name, svc, _ in _services(cf.doc):
        if _truthy(svc.get("privileged")):
            what = "`privileged: true` gives the container full control of the host"
            fix = "Remove `privileged` and add only the capabilities the service needs."
            yield _finding(cf, "privileged", _key_line(svc, "privileged"), name, what, fix)
        for key in _HOST_NAMESPACES:
            if str(svc.get(key, "")).strip().lower() == "host":
                what = f"`{key}: host` shares the host's namespace with the container"
                fix = f"Remove `{key}: host`; publish ports or use a compose network instead."
                yield _finding(cf, "host-namespace", _key_line(svc, key), name, what, fix)
        if svc.get("devices"):
            what = "`devices` passes host devices into the container"
            fix = "Remove `devices`; a device is a decision for the host, not for a stack."
            yield _finding(cf, "devices", _key_line(svc, "devices"), name, what, fix)
        caps = svc.get("cap_add")
        for i, cap in enumerate(caps if isinstance(caps, list) else []):
            if _cap(cap) == "ALL" or _cap(cap) not in allowed:
                what = f"`cap_add: {cap}` is outside the allowed capabilities"
                what += " (ALL never is)" if _cap(cap) == "ALL" else ""
                fix = "Drop the capability, or add it to the allow_caps setting if it is needed."
                yield _finding(cf, "cap-add", _item_line(caps, i), name, what, fix)
        for raw, resolved, read_only, mline in _mounts(cf, svc):
            if resolved is None or posixpath.normpath(resolved) not in _SOCKS:
                continue
            if not cf.is_proxy:
                what = f"mounts the Docker socket '{raw}', which is root on the host"
                fix = "Remove the mount; only the proxy may read the Docker socket."
                yield _finding(cf, "docker-sock", mline, name, what, fix)
            elif not read_only:
                what = f"mounts the Docker socket '{raw}' writable"
                fix = "Mount it read-only: append `:ro` or set `read_only: true`."
                yield _finding(cf, "docker-sock", mline, name, what, fix)


def _cap(cap: object) -> str:
    return str(cap).strip().upper().removeprefix("CAP_")


# --- rule 5: paths stay inside the repo -------------------------------------------------------

_REMOTE = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*://|git@|github\.com/)")


@stack_rule
def _paths(cf: ComposeFile) -> Iterator[Finding]:
    for service, what, raw, line, _follow in _path_fields(cf.doc):
        if what.endswith(("env_file", "label_file")) and isinstance(raw, str) and "$" in raw:
            continue  # a variable file name: rule env-file (_env_file_scope) refuses it
        yield from _check_path(cf, service, what, raw, line)
    for name, svc, _ in _services(cf.doc):
        if "build" in svc and not cf.resolved:
            what = "`build:` builds the image on the host"
            fix = "Build and push the image in the app repo's CI and reference it with `image:`."
            yield _finding(cf, "build", _key_line(svc, "build"), name, what, fix)
        for raw, resolved, _ro, mline in _mounts(cf, svc):
            if resolved is not None and posixpath.normpath(resolved) in _SOCKS:
                continue  # the Docker socket is rule docker-sock's business
            if cf.resolved and (resolved is None or resolved.startswith(("/", "~"))):
                continue  # policy.judge reads the source from the resolved model
            yield from _check_path(cf, name, "bind mount source", raw, mline)


def _check_path(
    cf: ComposeFile, service: str | None, what: str, raw: object, line: int | None
) -> Iterator[Finding]:
    if not isinstance(raw, str) or not raw:
        return
    value = _resolve(raw, cf.env_keys)
    inside = "Keep the file inside the infra repo and refer to it by a relative path."
    if value is None:
        problem = "depends on variables unknown offline; cannot check it stays inside the repo"
        fix = "Write the path literally, relative to the compose file."
        yield _finding(cf, "path-escape", line, service, f"{what} '{raw}' {problem}", fix, WARNING)
    elif _REMOTE.match(value):
        problem = "is fetched from a remote (git, OCI or HTTP) at deploy time"
        yield _finding(cf, "remote-include", line, service, f"{what} '{raw}' {problem}", inside)
    elif value.startswith("~") or (
        value.startswith("/")
        and not any(_under(value, prefix) for prefix in cf.policy.allow_host_paths)
    ):
        problem = "is an absolute host path outside the allowed prefixes"
        fix = (
            "Use a path relative to the compose file or a named volume, "
            "or add the prefix to the allow_host_paths setting."
        )
        yield _finding(cf, "host-path", line, service, f"{what} '{raw}' {problem}", fix)
    elif not value.startswith("/") and _escapes(posixpath.join(cf.folder, value)):
        problem = "resolves outside the repo tree"
        yield _finding(cf, "path-escape", line, service, f"{what} '{raw}' {problem}", inside)


def _under(path: str, prefix: str) -> bool:
    path, prefix = posixpath.normpath(path), posixpath.normpath(prefix)
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _escapes(path: str) -> bool:
    path = posixpath.normpath(path)
    return path == ".." or path.startswith("../")


def _local_target(cf: ComposeFile, raw: object) -> str | None:
    """The repo-relative path a local include/extends file resolves to, if inside the tree."""
    if not isinstance(raw, str):
        return None
    value = _resolve(raw, cf.env_keys)
    if value is None or _REMOTE.match(value) or value.startswith(("/", "~")):
        return None
    target = posixpath.normpath(posixpath.join(cf.folder, value))
    return None if _escapes(target) else target


def _path_fields(doc: Any) -> Iterator[tuple[str | None, str, Any, int | None, str | None]]:
    """(service, what, raw path, line, follow) of every path in a compose file except bind mount
    sources; follow is "include" or "extends" for files that become part of the project."""
    include = doc.get("include")
    items = [include] if isinstance(include, str) else include if isinstance(include, list) else []
    for i, item in enumerate(items):
        line = _item_line(include, i) if isinstance(include, list) else _key_line(doc, "include")
        if isinstance(item, str):
            yield None, "include", item, line, "include"
        elif isinstance(item, dict):
            for value, vline in _entries(item, "path"):
                yield None, "include path", value, vline or line, "include"
            for value, vline in _entries(item, "env_file"):
                yield None, "include env_file", value, vline or line, None
            if "project_directory" in item:
                yield None, "include project_directory", item["project_directory"], line, None
    for kind in ("secrets", "configs"):
        for name, spec in _mapping(doc.get(kind)).items():
            if isinstance(spec, dict) and "file" in spec:
                what, line = f"{kind[:-1]} '{name}' file", _key_line(spec, "file")
                yield None, what, spec["file"], line, None
    for name, spec in _mapping(doc.get("volumes")).items():
        opts = _mapping(_mapping(spec).get("driver_opts"))
        if "bind" in str(opts.get("o", "")).split(",") and "device" in opts:
            what = f"volume '{name}' bind device"
            yield None, what, opts["device"], _key_line(opts, "device"), None
    for name, svc, _ in _services(doc):
        for key in ("env_file", "label_file"):
            for value, line in _entries(svc, key):
                yield name, key, value, line, None
        extends = svc.get("extends")
        if isinstance(extends, dict) and "file" in extends:
            yield name, "extends file", extends["file"], _key_line(extends, "file"), "extends"


def _mounts(cf: ComposeFile, svc: dict) -> Iterator[tuple[str, str | None, bool, int | None]]:
    """(raw source, resolved source or None, read-only, line) of each bind mount of a service,
    and of each mount whose source is a variable that may turn out to be a path."""
    volumes = svc.get("volumes")
    for i, item in enumerate(volumes if isinstance(volumes, list) else []):
        if isinstance(item, dict):
            kind, source, read_only = item.get("type"), item.get("source"), item.get("read_only")
            if kind not in ("bind", None) or not isinstance(source, str):
                continue
            read_only = _truthy(read_only)
        elif isinstance(item, str):
            parts = _split_colons(item)
            if len(parts) < 2:
                continue  # anonymous volume
            kind, source = None, parts[0]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            continue
        resolved = _resolve(source, cf.env_keys)
        if kind is None and resolved is not None and not resolved.startswith(("/", ".", "~")):
            continue  # a named volume
        yield source, resolved, read_only, _item_line(volumes, i)


def _split_colons(text: str) -> list[str]:
    """Split a short volume spec on ':' outside ${...}."""
    parts, depth, current = [], 0, []
    for ch in text:
        depth += (ch == "{") - (ch == "}")
        if ch == ":" and depth <= 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    return [*parts, "".join(current)]


# --- rule 6: identity -------------------------------------------------------------------------


@stack_rule
def _identity(cf: ComposeFile) -> Iterator[Finding]:
    if "name" in cf.doc:
        what = "top-level `name:` overrides the project name vigo gives the stack"
        fix = "Remove `name:`; vigo names the project after the stack folder."
        yield _finding(cf, "project-name", _key_line(cf.doc, "name"), None, what, fix)
    for name, svc, _ in _services(cf.doc):
        if "container_name" in svc:
            what = (
                "`container_name` fixes the container's name, which blocks rolling updates "
                "and can collide with other stacks"
            )
            fix = "Remove `container_name`; reach the service by its service name."
            yield _finding(cf, "container-name", _key_line(svc, "container_name"), name, what, fix)


@stack_rule
def _rollout(cf: ComposeFile) -> Iterator[Finding]:
    """Routed services with a healthcheck are promoted without downtime, unless something
    about them makes two containers at once impossible: say so before it surprises anyone."""
    for name, svc, line in _services(cf.doc):
        spec = rollout.spec(svc)
        if not spec.test or not _routed(svc) or spec.zero_downtime:
            continue
        if spec.blocked_by in rollout.CHOSEN:
            continue
        what = (f"cannot be promoted without downtime: it {spec.blocker}; each promotion "
                "recreates it (requests fail while it restarts)")
        fix = ("Let Traefik publish it instead of host ports, drop container_name, or label it "
               f"`{rollout.LABEL_ROLLOUT}=recreate` to accept the downtime.")
        yield _finding(cf, "rollout", line, name, what, fix, severity=WARNING)


# --- rule 7: Traefik --------------------------------------------------------------------------

_TRAEFIK_NAME = re.compile(r"traefik\.(http|tcp|udp)\.(routers|services)\.([^.]+)\.")
_ROUTER_SERVICE = re.compile(r"traefik\.http\.routers\.[^.]+\.service")


@stack_rule
def _traefik_network(cf: ComposeFile) -> Iterator[Finding]:
    if cf.is_proxy or cf.fragment:
        return
    declared = _mapping(cf.doc.get("networks"))
    for name, svc, line in _services(cf.doc):
        if not _routed(svc):
            continue
        networks = svc.get("networks")
        if "network_mode" in svc:
            names = []
        elif isinstance(networks, (list, dict)):
            names = [str(n) for n in networks]
        else:
            names = ["default"]
        if not any(_is_proxy_network(declared.get(n), n, cf.proxy_network) for n in names):
            what = (
                "routed by Traefik (traefik.enable=true) but not on the proxy network "
                f"'{cf.proxy_network}', so Traefik cannot reach it"
            )
            fix = (
                "Declare a top-level network with `external: true` and "
                f"`name: {cf.proxy_network}` and attach the service to it."
            )
            yield _finding(
                cf, "traefik-network", _key_line(svc, "networks") or line, name, what, fix
            )


def _is_proxy_network(decl: object, key: str, proxy_network: str) -> bool:
    if not isinstance(decl, dict):
        return False
    external = decl.get("external")
    if isinstance(external, dict):  # legacy `external: {name: ...}`
        return str(external.get("name", decl.get("name", key))) == proxy_network
    return _truthy(external) and str(decl.get("name", key)) == proxy_network


@stack_rule
def _label_env(cf: ComposeFile) -> Iterator[Finding]:
    for name, svc, _ in _services(cf.doc):
        for key, value, line in _labels(svc):
            for var in _undefined(f"{key}={value}", cf.env_keys):
                if var is None:
                    what = f"label '{key}' has a malformed ${{...}} interpolation"
                    fix = "Write variables as ${NAME} or ${NAME:-default}, and a literal $ as $$."
                else:
                    what = (
                        f"label '{key}' uses ${{{var}}}, which neither env/global.env nor "
                        f"env/{cf.stack}.env defines; compose would substitute an empty string"
                    )
                    fix = f"Define {var} in env/{cf.stack}.env (sops) or write ${{{var}:-default}}."
                yield _finding(cf, "label-env", line, name, what, fix)


@stack_rule
def _traefik_dashboard(cf: ComposeFile) -> Iterator[Finding]:
    if not cf.is_proxy:
        return
    behind_router = any(
        _ROUTER_SERVICE.fullmatch(key) and value.strip() == "api@internal"
        for _, svc, _ in _services(cf.doc)
        if _routed(svc)
        for key, value, _ in _labels(svc)
    )
    for name, svc, line in _services(cf.doc):
        args = _traefik_args(svc)
        on = {k: v.strip().lower() in ("", "true") for k, v in args.items()}
        where = _key_line(svc, "command") or _key_line(svc, "environment") or line
        fix = (
            "Serve the dashboard only through a router (service=api@internal) with "
            "authentication, or disable it with --api.dashboard=false."
        )
        if on.get("api.insecure"):
            what = "`--api.insecure` serves the Traefik API and dashboard without authentication"
            yield _finding(cf, "traefik-dashboard", where, name, what, fix)
        elif on.get("api.dashboard", on.get("api", False)) and not behind_router:
            what = (
                "the Traefik dashboard is enabled but no router serves it "
                "(no label `traefik.http.routers.<name>.service=api@internal`)"
            )
            yield _finding(cf, "traefik-dashboard", where, name, what, fix, WARNING)


def _traefik_args(svc: dict) -> dict[str, str]:
    """Traefik static options from `command` (--a.b=c) and TRAEFIK_A_B environment variables."""
    command = svc.get("command")
    if isinstance(command, str):
        try:
            tokens = shlex.split(command)
        except ValueError:
            tokens = command.split()
    else:
        tokens = [str(t) for t in command] if isinstance(command, list) else []
    args: dict[str, str] = {}
    for token in tokens:
        if token.startswith("--"):
            key, sep, value = token[2:].partition("=")
            args[key.lower()] = value if sep else "true"
    for key, value in _env_pairs(svc.get("environment")):
        if key.startswith("TRAEFIK_API"):
            args.setdefault(key.removeprefix("TRAEFIK_").lower().replace("_", "."), value)
    return args


def _env_pairs(environment: object) -> Iterator[tuple[str, str]]:
    if isinstance(environment, dict):
        for key, value in environment.items():
            yield str(key), _scalar(value)
    elif isinstance(environment, list):
        for item in environment:
            key, _, value = str(item).partition("=")
            yield key.strip(), value


# A key name that says it holds a secret: one of these words between underscores.
_SECRET_WORDS = frozenset({"PASSWORD", "PASSWD", "PASS", "PWD", "TOKEN", "SECRET", "KEY", "APIKEY",
                           "PRIVATE", "CREDENTIAL", "CREDENTIALS", "AUTH", "SALT", "DSN"})


def _stack_dotenv(root: Path, files: list[ComposeFile]) -> Iterator[Finding]:
    """A stack folder's `.env`. Compose reads it for ${VAR} defaults only when it is given no
    --env-file; vigo always gives the stack's env/ files, so such a file would be silently
    ignored: refused, with where its values belong. A service may still name it in
    `env_file:` (plaintext values for its environment): then secret-looking keys are
    reported (by line, never by name or value)."""
    for cf in files:
        if cf.fragment or posixpath.basename(cf.rel) not in COMPOSE_NAMES:
            continue
        rel = posixpath.join(cf.folder, ".env")
        if not (root / rel).is_file():
            continue
        named = any(
            posixpath.normpath(posixpath.join(other.folder, value)) == rel
            for other in files if other.stack == cf.stack
            for _, svc, _ in _services(other.doc)
            for value, _ in _entries(svc, "env_file")
        )
        own = "env/proxy.env" if cf.is_proxy else f"env/{cf.stack}.env"
        if not named:
            what = (
                f"{_who(cf.stack)}: {rel} is never read: compose would take ${{VAR}} values "
                "from it, but vigo gives compose env/global.env and "
                f"{own} instead"
            )
            fix = (
                f"Move its values into {own} (sops-encrypted), and non-secret defaults into "
                f"{cf.rel} as ${{VAR:-default}}; then delete {rel}."
            )
            yield Finding("stack-dotenv", ERROR, rel, None, what, fix)
            continue
        lines = [
            n for n, key, _ in _dotenv(root / rel)
            if _SECRET_WORDS & set(key.upper().replace("-", "_").split("_"))
        ]
        if lines:
            what = (
                f"{_who(cf.stack)}: {rel} is plaintext in the repo and a service reads it as "
                f"env_file, but line(s) {', '.join(map(str, lines))} look like secrets"
            )
            fix = f"Move secret values into {own} (sops-encrypted); keep {rel} for defaults."
            yield Finding("stack-dotenv", WARNING, rel, lines[0], what, fix)


@tree_rule
def _traefik_unique(files: list[ComposeFile]) -> Iterator[Finding]:
    """Router names, service names and Host(...) rules are global on the host. They are
    compared as interpolation will make them, stack by stack: a variable of env/global.env is
    the same in every stack, one of a stack's own env/<stack>.env may differ from the other
    stacks' (its value is encrypted: the clash then waits for the real values, a warning)."""
    first: dict[tuple[str, ...], ComposeFile] = {}
    written: dict[tuple[str, ...], tuple[ComposeFile, tuple[str, ...]]] = {}
    reported: set[tuple[tuple[str, ...], str]] = set()
    for cf in sorted(files, key=lambda f: (not f.is_proxy, f.stack, f.rel)):
        for name, svc, _ in _services(cf.doc):
            if not _routed(svc):
                continue
            for key, value, line in _labels(svc):
                for ident in _traefik_idents(key, value):
                    pairs = [_canonical(part, cf) for part in ident]
                    real = tuple(text for text, _ in pairs)
                    waits = tuple(sorted({v for _, own in pairs for v in own}))
                    owner = first.setdefault(real, cf)
                    if owner.stack != cf.stack and (ident, cf.stack) not in reported:
                        reported.add((ident, cf.stack))
                        yield _duplicate(cf, owner, ident, name, line)
                        continue
                    if any(var is not None for part in ident for var in _undefined(part,
                                                                                 cf.env_keys)):
                        continue  # empty where undefined: label-env says so
                    seen, seen_waits = written.setdefault(ident, (cf, waits))
                    if seen.stack != cf.stack and (waits or seen_waits) and (
                            ident, cf.stack) not in reported:
                        reported.add((ident, cf.stack))
                        yield _duplicate(cf, seen, ident, name, line,
                                         tuple(sorted(set(waits) | set(seen_waits))))


def _canonical(text: str, cf: ComposeFile) -> tuple[str, tuple[str, ...]]:
    """`text` as interpolation makes it, as far as that is certain offline, for comparing
    across stacks: a variable of env/global.env becomes a mark shared by every stack, one of
    the stack's own env file a mark of this stack only (returned: the comparison waits for
    its value), an undefined one its default (or nothing)."""
    out, pos, own = [], 0, []
    for m in _INTERP.finditer(text):
        out.append(text[pos : m.start()])
        pos = m.end()
        if m["esc"] or m["bad"]:
            out.append("$" if m["esc"] else m.group(0))
            continue
        name, op, arg = m["name"] or m["bare"], m["op"] or "", m["arg"] or ""
        if name not in cf.env_keys:
            out.append(arg if op in (":-", "-") else "")
        elif op in (":+", "+"):
            out.append(arg)
        elif name in cf.stack_keys:
            out.append(f"\0{cf.stack}:{name}\0")
            own.append(name)
        else:
            out.append(f"\0global:{name}\0")
    out.append(text[pos:])
    return "".join(out), tuple(own)


def _traefik_idents(key: str, value: str) -> Iterator[tuple[str, ...]]:
    match = _TRAEFIK_NAME.match(key)
    if not match:
        return
    protocol, kind, name = match.groups()
    yield (kind, protocol, name)
    if kind == "routers" and key == f"traefik.{protocol}.routers.{name}.rule" and "Host(" in value:
        yield ("host", value.strip())


def _duplicate(
    cf: ComposeFile,
    owner: ComposeFile,
    ident: tuple[str, ...],
    service: str,
    line: int | None,
    waits: tuple[str, ...] = (),
) -> Finding:
    other = f"{_who(owner.stack)} ({owner.rel})"
    if waits:  # the same text, made of variables each stack defines for itself
        names = ", ".join(waits)
        why = (
            f"{names} come{'s' if len(waits) == 1 else ''} from each stack's own env file "
            "(encrypted), so they clash only if the values are equal; this waits for the real "
            "values"
        )
        fix = "Make sure the values differ, or name the variable after the stack."
        if ident[0] == "host":
            rule, what = "traefik-host-unique", f"the router rule {ident[1]} is also written"
        else:
            kind, protocol, name = ident
            rule = "traefik-router-unique" if kind == "routers" else "traefik-service-unique"
            what = f"the Traefik {protocol} {kind[:-1]} name '{name}' is also written"
        return _finding(cf, rule, line, service, f"{what} by {other}; {why}", fix, WARNING)
    if ident[0] == "host":
        what = f"the router rule {ident[1]} is also used by {other}; Traefik would pick either"
        fix = "Give each stack its own host name (or tell them apart with a path rule)."
        return _finding(cf, "traefik-host-unique", line, service, what, fix)
    kind, protocol, name = ident
    rule = "traefik-router-unique" if kind == "routers" else "traefik-service-unique"
    what = (
        f"the Traefik {protocol} {kind[:-1]} name '{name}' is also defined by {other}; "
        "Traefik names are global across stacks"
    )
    fix = f"Rename the {kind[:-1]} in one stack, e.g. prefix it with the stack name."
    return _finding(cf, rule, line, service, what, fix)


def _labels(svc: dict) -> list[tuple[str, str, int | None]]:
    """(key, value, line) of a service's labels, list form `a=b` or mapping form."""
    labels = svc.get("labels")
    if isinstance(labels, dict):
        return [(str(k), _scalar(v), _key_line(labels, k)) for k, v in labels.items()]
    if isinstance(labels, list):
        pairs = [str(item).partition("=") for item in labels]
        return [(k.strip(), v, _item_line(labels, i)) for i, (k, _, v) in enumerate(pairs)]
    return []


def _routed(svc: dict) -> bool:
    return any(k == "traefik.enable" and _truthy(v) for k, v, _ in _labels(svc))


# --- rule 3: env files are encrypted and covered by .sops.yaml --------------------------------

_SOPS_PARTIAL = (
    "sops_encrypted_regex",
    "sops_unencrypted_regex",
    "sops_encrypted_suffix",
    "sops_encrypted_comment_regex",
    "sops_unencrypted_comment_regex",
    "sops_mac_only_encrypted",
)


@repo_rule
def _env_encrypted(repo: Path) -> Iterator[Finding]:
    for rel in _env_files(repo):
        entries = list(_dotenv(repo / rel))
        meta = {key: value for _, key, value in entries if key.startswith("sops_")}
        variables = [(n, key, value) for n, key, value in entries if not key.startswith("sops_")]
        if not meta.get("sops_mac", "").startswith("ENC["):
            what = (
                f"{rel} is not SOPS-encrypted (no sops_mac=ENC[...] line); "
                f"{len(variables)} variable line(s) are committed in clear"
            )
            fix = f"Encrypt it with `sops -e -i {rel}` and rotate every value that was pushed."
            first = variables[0][0] if variables else None
            yield Finding("env-encrypted", ERROR, rel, first, what, fix)
            continue
        if any(key in meta for key in _SOPS_PARTIAL):
            continue  # partial encryption by config: sops itself enforces it
        suffix = meta.get("sops_unencrypted_suffix", "_unencrypted")
        for n, key, value in variables:
            if value and not value.startswith("ENC[") and not (suffix and key.endswith(suffix)):
                what = (
                    f"{rel} line {n}: a value is in clear inside a SOPS-encrypted file "
                    "(the file was edited without sops; its MAC no longer matches)"
                )
                fix = f"Edit the file only with `sops {rel}` and rotate the exposed value."
                yield Finding("env-encrypted", ERROR, rel, n, what, fix)


@repo_rule
def _sops_coverage(repo: Path) -> Iterator[Finding]:
    env_files = _env_files(repo)
    if not env_files:
        return
    patterns, problems = _creation_rules(repo)
    yield from problems
    if patterns is None:
        return
    for rel in env_files:
        if not any(p is None or p.search(rel) for p in patterns):
            what = (
                f"{rel} is matched by no creation_rules path_regex of .sops.yaml, "
                "so sops does not know which keys encrypt it"
            )
            fix = r"Add or widen a creation rule, e.g. `path_regex: (^|/)env/[^/]+\.env$`."
            yield Finding("sops-coverage", ERROR, rel, None, what, fix)


def _creation_rules(repo: Path) -> tuple[list[re.Pattern | None] | None, list[Finding]]:
    """Compiled path_regex of each creation rule (None: a rule without one matches every file,
    as in sops), or None with findings when .sops.yaml is missing or broken."""

    def problem(line: int | None, what: str) -> tuple[None, list[Finding]]:
        fix = "Add creation_rules with a path_regex matching env/*.env and the age recipients."
        return None, [Finding("sops-coverage", ERROR, ".sops.yaml", line, what, fix)]

    path = repo / ".sops.yaml"
    if not path.is_file():
        return problem(None, "there is no .sops.yaml at the repo root, so no env file is covered")
    try:
        doc = yamlsafe.load_bytes(path.read_bytes())
    except OSError:
        return problem(None, ".sops.yaml cannot be read")
    except yamlsafe.YamlRefused as exc:
        return problem(exc.line, f".sops.yaml cannot be parsed: it {exc.what}")
    rules = _mapping(doc).get("creation_rules")
    if not isinstance(rules, list):
        return problem(1, ".sops.yaml has no creation_rules list")
    patterns: list[re.Pattern | None] = []
    findings: list[Finding] = []
    for i, rule in enumerate(rules):
        regex = _mapping(rule).get("path_regex")
        if regex is None:
            patterns.append(None)
            continue
        try:
            patterns.append(re.compile(str(regex)))
        except re.error as exc:
            what = f"creation rule {i + 1} has an invalid path_regex: {exc}"
            fix = "Fix the regular expression (sops uses Go RE2 syntax)."
            findings.append(
                Finding("sops-coverage", ERROR, ".sops.yaml", _item_line(rules, i), what, fix)
            )
    return patterns, findings


def _env_files(repo: Path) -> list[str]:
    """Repo-relative env/**/*.env and hosts/*/env/**/*.env (symlinks are left to `symlink`)."""
    folders = [repo / "env"]
    hosts = repo / "hosts"
    if hosts.is_dir():
        folders += [h / "env" for h in sorted(hosts.iterdir()) if h.is_dir() and not h.is_symlink()]
    return sorted(
        p.relative_to(repo).as_posix()
        for folder in folders
        if folder.is_dir() and not folder.is_symlink()
        for p in folder.rglob("*.env")
        if p.is_file() and not p.is_symlink()
    )


@repo_rule
def _registries(repo: Path) -> Iterator[Finding]:
    """The registry credentials file (docs/private-images.md): its names are in clear in the
    sops file, so the groups are checked without the key (encryption: env-encrypted)."""
    from vigo.core import registries

    for rel in _env_files(repo):
        if rel.rsplit("/", 2)[-2:] != registries.FILE.split("/"):
            continue
        entries = [(n, key) for n, key, _ in _dotenv(repo / rel) if not key.startswith("sops_")]
        lines = {key: n for n, key in entries}
        for problem in registries.key_problems(key for _, key in entries):
            key = problem.split(":", 1)[0]
            yield Finding("registries", ERROR, rel, lines.get(key), problem,
                          "Edit it with `sops` so each registry has NAME_REGISTRY (host[:port]), "
                          "NAME_USERNAME and NAME_PASSWORD.")


def _dotenv(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, key, raw value) of each assignment of a dotenv file; internal only."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for n, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, _, value = stripped.removeprefix("export ").partition("=")
        if key.strip():
            yield n, key.strip(), value


# --- rule 8: hosts/ overlays and symlinks -----------------------------------------------------

_OVERLAY_DIRS = frozenset({"proxy", "stacks", "env"})


@repo_rule
def _overlay_shape(repo: Path) -> Iterator[Finding]:
    hosts = repo / "hosts"
    if not hosts.is_dir() or hosts.is_symlink():
        return
    for host in sorted(hosts.iterdir()):
        if not host.is_dir() or host.is_symlink():
            continue  # hosts/README.md and the like
        for entry in sorted(host.iterdir()):
            if entry.is_symlink() or (entry.name in _OVERLAY_DIRS and entry.is_dir()):
                continue  # links are reported by `symlink`
            what = (
                f"host overlay '{host.name}': '{entry.name}' is not one of proxy/, stacks/, env/ "
                "and would be laid over the tree as is"
            )
            fix = "Move it under proxy/, stacks/ or env/ of the overlay, or remove it."
            yield Finding("overlay-shape", ERROR, _rel(repo, entry), None, what, fix)


@repo_rule
def _symlinks(repo: Path) -> Iterator[Finding]:
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in [*dirnames, *sorted(filenames)]:
            path = Path(dirpath) / name
            if path.is_symlink():
                rel = _rel(repo, path)
                what = f"{rel} is a symbolic link: it can point outside the repo, overlays copy it"
                fix = "Replace the link with a regular file or folder."
                yield Finding("symlink", ERROR, rel, None, what, fix)


# --- helpers ----------------------------------------------------------------------------------

_INTERP = re.compile(
    r"\$(?:(?P<esc>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<bad>\{))"
)


def _resolve(text: str, env_keys: frozenset[str]) -> str | None:
    """Interpolate `text` where the result is certain without knowing any value: a variable
    that no env file defines takes its default. None when a value would be needed."""
    out, pos = [], 0
    for m in _INTERP.finditer(text):
        out.append(text[pos : m.start()])
        pos = m.end()
        if m["esc"]:
            out.append("$")
            continue
        name, op, arg = m["name"] or m["bare"], m["op"] or "", m["arg"] or ""
        if name is None or name in env_keys or "$" in arg:
            return None
        if op in (":-", "-"):
            out.append(arg)
        elif op not in (":+", "+"):
            return None  # unset and no default: empty string or an error at deploy time
    out.append(text[pos:])
    return "".join(out)


def _undefined(text: str, env_keys: frozenset[str]) -> Iterator[str | None]:
    """Variables of `text` that are neither defined nor defaulted; None for bad syntax."""
    for m in _INTERP.finditer(text):
        if m["bad"]:
            yield None
        elif not m["esc"] and not m["op"] and (m["name"] or m["bare"]) not in env_keys:
            yield m["name"] or m["bare"]
        elif m["op"] in (":?", "?") and m["name"] not in env_keys:
            yield m["name"]


def _var_names(text: str) -> list[str]:
    return [m["name"] or m["bare"] for m in _INTERP.finditer(text) if m["name"] or m["bare"]]


def _services(doc: Any) -> Iterator[tuple[str, dict, int | None]]:
    services = doc.get("services")
    if isinstance(services, dict):
        for name, svc in services.items():
            if isinstance(svc, dict):
                yield str(name), svc, _key_line(services, name)


def _entries(parent: dict, key: str) -> Iterator[tuple[str, int | None]]:
    """(path, line) of a string, list of strings or list of {path: ...} field."""
    value = parent.get(key)
    if isinstance(value, str):
        yield value, _key_line(parent, key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            path = item.get("path") if isinstance(item, dict) else item
            if isinstance(path, str):
                yield path, _item_line(value, i)


def _mapping(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _scalar(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return isinstance(value, int) and bool(value)


def _key_line(node: Any, key: object) -> int | None:
    """1-based line of `key` in a mapping; the mapping's own line for a merged (<<) key."""
    if not isinstance(node, dict) or key not in node:
        return None
    try:
        return node.lc.key(key)[0] + 1
    except (AttributeError, KeyError, TypeError):
        return _node_line(node)


def _item_line(node: Any, index: int) -> int | None:
    try:
        return node.lc.item(index)[0] + 1
    except (AttributeError, KeyError, IndexError, TypeError):
        return _node_line(node)


def _node_line(node: Any) -> int | None:
    line = getattr(getattr(node, "lc", None), "line", None)
    return line + 1 if isinstance(line, int) else None


def _who(stack: str, service: str | None = None) -> str:
    where = "proxy" if stack == PROXY else f"stack '{stack}'"
    return f"{where}, service '{service}'" if service else where


def _finding(
    cf: ComposeFile,
    rule: str,
    line: int | None,
    service: str | None,
    what: str,
    fix: str,
    severity: str = ERROR,
) -> Finding:
    return Finding(rule, severity, cf.rel, line, f"{_who(cf.stack, service)}: {what}", fix)


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _sorted(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.path, f.line or 0, f.rule, f.message))


# --- rule: env files and included files stay the stack's own ---------------------------------


@stack_rule
def _env_file_scope(cf: ComposeFile) -> Iterator[Finding]:
    """`env_file: ../../env/${X:-db}.env` or `../../env/other.env` hands another stack's secrets
    to this one, without registering them for masking or redeploys; an `include:`/`extends:`
    of another stack's file pulls in its env files and changes it without redeploying this one.
    A stack reads env/global.env, env/<stack>.env and files of its own folder only."""
    own = {"env/global.env", f"env/{cf.stack}.env"}
    folder = PROXY if cf.is_proxy else f"stacks/{cf.stack}"
    for service, what, raw, line, follow in _path_fields(cf.doc):
        if not isinstance(raw, str) or not raw or not (
                follow or what in ("env_file", "label_file", "include env_file")):
            continue
        if "$" in raw:
            problem = (f"{what} '{raw}' is chosen by a variable: vigo cannot know which file it "
                       "reads (another stack's secrets?)")
            fix = (f"Write the path literally: ../../env/{cf.stack}.env, ../../env/global.env "
                   "or a file in the stack's folder.")
            yield _finding(cf, "env-file", line, service, problem, fix)
            continue
        if raw.startswith(("/", "~")) or _REMOTE.match(raw):
            continue  # rules host-path and remote-include
        target = posixpath.normpath(posixpath.join(cf.folder, raw))
        if _escapes(target) or target.startswith(folder + "/"):
            continue  # rule path-escape; or the stack's own file
        if follow and not target.startswith(("stacks/", "proxy/", "env/")):
            continue  # a shared fragment outside every stack (common/db.yml)
        if follow:
            problem = (f"{what} '{raw}' is {target}, a file of another stack: the env files and "
                       "paths it names are that stack's, and its changes would not redeploy "
                       "this one")
            fix = f"Copy what is needed into {folder}/ (or into a shared folder such as common/)."
        elif target in own and what != "label_file":
            continue
        elif target in own:
            problem = (f"{what} '{raw}' is {target}: labels are no place for the stack's "
                       "secrets (every `docker inspect` shows them)")
            fix = f"Keep label files in {folder}/, in plain text."
        elif target.startswith("env/"):
            problem = (f"{what} '{raw}' is {target}, another stack's env file: a stack may use "
                       f"env/global.env and env/{cf.stack}.env only")
            fix = (f"Move the variables it needs into env/{cf.stack}.env (or env/global.env "
                   "for every stack).")
        else:
            problem = (f"{what} '{raw}' is {target}, outside the stack's folder: a stack may use "
                       f"env/global.env, env/{cf.stack}.env and files of {folder}/ only")
            fix = f"Move the file into {folder}/ or its variables into env/{cf.stack}.env."
        yield _finding(cf, "env-file", line, service, problem, fix)
