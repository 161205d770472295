"""`vigo check`: validate an infra repo offline, as every host would render it.

Renders the base tree and each hosts/<name>/ overlay into a temp dir, runs the lint rules over
each, validates every compose file (`docker compose config` where it is installed, a check of
the known Compose keys otherwise), judges each stack's resolved model with the policy of apply
(policy.py; placeholders stand in for the values of encrypted env files), and maps each finding
back to the file and line in the repo. Without docker compose the text rules of core/lint stand
in for the policy, with a warning that says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vigo.adapters import fs
from vigo.adapters.run import PASS_ENV
from vigo.core import lint, policy, render, yamlsafe
from vigo.core.lint import ERROR, WARNING, Finding
from vigo.core.model import DesiredState
from vigo.core.policy import Policy
from vigo.core.records import asdict, field, fields, record
from vigo.workstation import cache as _cache
from vigo.workstation.cache import Cache

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
          hosts: list[str] | None = None, resolve: Resolver | None = None,
          cache: Cache | None = None, jobs: int = 1) -> list[Finding]:
    """Every finding of the repo, for the base tree and every host overlay, deduplicated.
    With `resolve`, the privilege rules judge each stack's resolved model (policy.py). With
    `cache`, work whose inputs did not change is taken from it (workstation/cache.py); `jobs`
    compose processes run at once."""
    findings: dict[tuple, Finding] = {}
    for f in lint.lint_repo_files(repo):
        findings[_key(f)] = f
    trees = ["", *hosts_of(repo)] if hosts is None else hosts
    for found in check_trees(repo, trees, policy, validate, resolve, cache, jobs):
        for f in found:
            findings.setdefault(_key(f), f)
    return lint.sort_findings(findings.values())


NO_COMPOSE = Finding(
    "policy-resolved", WARNING, ".", None,
    "docker compose is not installed: the privilege rules read the compose text only (YAML "
    "casting, interpolation, extends and include are not judged as the host judges them)",
    "Run vigo check where docker compose v2 is installed (the host, or CI with Docker).")


def check_rendered(repo: Path, host: str, policy: Policy, validate: Validator,
                   resolve: Resolver | None = None, cache: Cache | None = None,
                   jobs: int = 1) -> list[Finding]:
    """The lint rules and compose validation over the tree one host would render."""
    return check_trees(repo, [host], policy, validate, resolve, cache, jobs)[0]


def default_jobs() -> int:
    """How many `docker compose config` processes run at once: one per CPU vigo may use (each
    is a short CPU-bound Go process; more than the CPUs only queue)."""
    from vigo.adapters.engine import local_cpus

    return local_cpus()


@record
class _Outcome:
    """What compose said about one stack: the resolved model's findings, or why the file is
    not valid Compose; `nocompose` when docker compose is not installed (never cached)."""

    found: list[Finding]
    invalid: Finding | None
    nocompose: bool = False


@record
class _Tree:
    """One rendered tree (the base or a host's), materialised in a temp folder when some of
    its work is not in the cache."""

    host: str
    desired: DesiredState
    digests: dict[str, str]
    scratch: Path | None = None
    rules: list[Finding] = field(default_factory=list)
    proxy_network: str = ""
    # per stack, in order: None (never handed to compose) or (job key, cache key or '')
    stacks: list[tuple[Any, str, str] | None] = field(default_factory=list)
    folders: dict[str, list[tuple[str, str]]] | None = field(default=None, repr=False)

    def own(self, folder: str) -> list[tuple[str, str]]:
        """(path, digest) of every file under `folder` ('proxy/', 'stacks/<name>/'), sorted;
        grouped once per tree (a lookup per stack, not a scan of the tree)."""
        if _top(folder + "-") != folder:
            return sorted((rel, sha) for rel, sha in self.digests.items()
                          if rel.startswith(folder))
        if self.folders is None:
            groups: dict[str, list[tuple[str, str]]] = {}
            for rel, sha in self.digests.items():
                groups.setdefault(_top(rel), []).append((rel, sha))
            self.folders = {top: sorted(items) for top, items in groups.items()}
        return self.folders.get(folder, [])

    @property
    def tmp(self) -> Path:
        assert self.scratch is not None
        return self.scratch / "tree"

    def materialise(self) -> Path:
        if self.scratch is None:
            self.scratch = Path(tempfile.mkdtemp(prefix="vigo-check-"))
            # The materialisation apply uses for the runtime tree (adapters/fs.py), without
            # the fsyncs: a scratch tree.
            fs.sync_tree(self.tmp, {**self.desired.files, **self.desired.env_files}, {}, (),
                         self.scratch / "manifest.json", sync=False)
        return self.tmp


def _top(rel: str) -> str:
    """The folder a path of a rendered tree belongs to: 'stacks/<name>/' or its first part."""
    parts = rel.split("/", 2)
    return f"{parts[0]}/{parts[1]}/" if parts[0] == "stacks" and len(parts) > 2 else (
        parts[0] + "/")


def check_trees(repo: Path, hosts: list[str], policy: Policy, validate: Validator,
                resolve: Resolver | None = None, cache: Cache | None = None,
                jobs: int = 1) -> list[list[Finding]]:
    """check_rendered for each host ('' : the base tree), in order. A stack whose inputs are
    the same on several hosts (the overlay does not touch it) is handed to compose once; with
    `cache`, not at all when a run before saw the same inputs (the key: _stack_key)."""
    trees: list[_Tree] = []
    sums: dict[Path, str] = {}
    cache = cache if cache is not None else Cache(None)  # in memory: shared by the trees
    salt = cache.salt
    rules_key = _policy_json(policy)
    try:
        with yamlsafe.remembered():  # the trees share most files: each is parsed once
            for host in hosts:
                _add_tree(trees, repo, host, policy, resolve is not None, cache, rules_key,
                          sums)
        outcomes = _run_jobs(trees, policy, validate, resolve, cache, jobs)
        return [_assemble(repo, tree, policy, resolve, cache, salt, rules_key,
                          [outcomes[s[1]] if s else None for s in tree.stacks])
                for tree in trees]
    finally:
        for tree in trees:
            if tree.scratch is not None:
                shutil.rmtree(tree.scratch, ignore_errors=True)


def _add_tree(trees: list[_Tree], repo: Path, host: str, policy: Policy, judge: bool,
              cache: Cache, rules_key: str, sums: dict[Path, str]) -> None:
    """Render one host's tree, lint it and key its stacks' compose work."""
    desired = render.render(repo, host, "")
    tree = _Tree(host, desired, _digests(desired, sums))
    trees.append(tree)  # before anything is materialised: removed at the end whatever happens
    tree.rules, tree.proxy_network = _lint(tree, policy, judge, cache, cache.salt, rules_key)
    for stack in desired.stacks:
        tree.stacks.append(_stack_job(tree, stack, cache, cache.salt, rules_key, judge))


def _lint(tree: _Tree, policy: Policy, resolved: bool, cache: Cache, salt: str,
          rules_key: str) -> tuple[list[Finding], str]:
    """lint.lint_tree over the tree and the proxy's network name. From the cache when the
    whole tree (every file's digest) is the same as in a run before; else made of parts, each
    from the cache when its inputs are: the layout (_layout) and each stack's lint
    (_stack_lint). The tree is materialised only for a part that is not."""
    key = _cache.digest("lint", salt, rules_key, resolved, sorted(tree.digests.items()))
    got = cache.get(key)
    if isinstance(got, dict) and isinstance(got.get("proxy"), str):
        rules = _findings(got.get("rules"))
        if rules is not None:
            return rules, got["proxy"]
    targets, found, proxy_network = _layout(tree, cache, salt)
    parts = [_stack_lint(tree, stack, rel, policy, proxy_network, resolved, cache, salt,
                         rules_key) for stack, rel in targets]
    rules = lint.combine(found, parts)
    cache.put(key, {"rules": [asdict(f) for f in rules], "proxy": proxy_network})
    return rules, proxy_network


def _layout(tree: _Tree, cache: Cache, salt: str
            ) -> tuple[list[tuple[str, str]], list[Finding], str]:
    """lint.discover (which stacks the tree has) and the proxy's network name. Both read only
    the tree's names (a materialised tree holds the readable files: digest not '') and the
    proxy's files."""
    names = sorted((rel, sha == "") for rel, sha in tree.digests.items())
    proxy = sorted((rel, sha) for rel, sha in tree.digests.items() if rel.startswith("proxy/"))
    key = _cache.digest("layout", salt, names, proxy)
    got = cache.get(key)
    if isinstance(got, dict) and isinstance(got.get("proxy"), str) and isinstance(
            got.get("targets"), list) and all(
            isinstance(t, list) and len(t) == 2 and all(isinstance(x, str) for x in t)
            for t in got["targets"]):
        found = _findings(got.get("findings"))
        if found is not None:
            return [(t[0], t[1]) for t in got["targets"]], found, got["proxy"]
    tmp = tree.materialise()
    targets, found = lint.discover(tmp)
    proxy_network = lint.proxy_network_of(tmp)
    cache.put(key, {"targets": [list(t) for t in targets],
                    "findings": [asdict(f) for f in found], "proxy": proxy_network})
    return targets, found, proxy_network


def _stack_lint(tree: _Tree, stack: str, rel: str, policy: Policy, proxy_network: str,
                resolved: bool, cache: Cache, salt: str, rules_key: str) -> lint.StackLint:
    """lint.lint_one of one stack, from the cache when every file it read is the same. The key
    holds the files it may read whatever they say: its folder's (every name and digest),
    env/global.env and env/<stack>.env (key names). Any other path it read or looked for (an
    include from common/ or from another stack's folder) is kept with the entry, with the
    digest it had ('' unreadable, None no file): the entry stands only while each is the same.
    A lint reads the same files in the same order as long as what it read says the same."""
    folder = posixpath.dirname(rel) + "/"
    envs = ("env/global.env", f"env/{stack}.env")
    key = _cache.digest("lint-stack", salt, rules_key, resolved, stack, rel, proxy_network,
                        tree.own(folder), [(e, tree.digests.get(e)) for e in envs])
    got = cache.get(key)
    if isinstance(got, dict) and isinstance(got.get("facts"), list) and len(
            got["facts"]) == len(lint.TREE_RULES) and isinstance(got.get("extra"), list) and all(
            isinstance(x, list) and len(x) == 2 and isinstance(x[0], str)
            and tree.digests.get(x[0]) == x[1] for x in got["extra"]):
        found = _findings(got.get("findings"))
        if found is not None:
            return lint.StackLint(found, got["facts"], [])
    part = lint.lint_one(tree.materialise(), stack, rel, policy, proxy_network, resolved)
    extra = [[p, tree.digests.get(p)] for p in part.reads
             if not (p.startswith(folder) or p in envs)]
    cache.put(key, {"findings": [asdict(f) for f in part.findings], "facts": part.facts,
                    "extra": extra})
    return part


def _stack_job(tree: _Tree, stack: Any, cache: Cache, salt: str, rules_key: str,
               judge: bool) -> tuple[Any, str, str] | None:
    """(stack, job key, cache key) of the compose work for one stack, None when the stack is
    never handed to compose (no compose file, over a YAML cap). Stacks with the same cache key
    share one job; a stack that cannot be keyed (_stack_key) gets a job of its own."""
    src = tree.desired.files.get(stack.compose_file)
    if src is None or not _capped(src, tree.digests.get(stack.compose_file, ""), cache):
        return None
    if any(f.rule == "yaml-caps" and f.message.startswith(lint.who(stack.name) + ":")
           for f in tree.rules):
        return None  # an included file over a cap: never handed to compose
    key = _stack_key(tree, stack, cache, salt, rules_key, judge)
    return stack, key or f"{tree.host}/{stack.name} (not keyed)", key


def _run_jobs(trees: list[_Tree], policy: Policy, validate: Validator,
              resolve: Resolver | None, cache: Cache,
              jobs: int) -> dict[str, _Outcome]:
    """The outcome of every job: from the cache, or compose run for it, `jobs` at a time."""
    outcomes: dict[str, _Outcome] = {}
    todo: dict[str, tuple[_Tree, Any, str]] = {}
    for tree in trees:
        for item in tree.stacks:
            if item is None or item[1] in outcomes or item[1] in todo:
                continue
            stack, job, key = item
            got = _outcome(cache.get(key)) if key else None
            if got is not None:
                outcomes[job] = got
            else:
                todo[job] = (tree, stack, key)
    for tree, _stack, _key in todo.values():
        tree.materialise()  # before any thread starts

    def one(job: str) -> tuple[str, _Outcome]:
        tree, stack, _key = todo[job]
        return job, _compose_stack(tree, stack, policy, validate, resolve)

    if jobs > 1 and len(todo) > 1:
        with ThreadPoolExecutor(max_workers=min(jobs, len(todo))) as pool:
            done = list(pool.map(one, todo))
    else:
        done = [one(job) for job in todo]
    for job, outcome in done:
        outcomes[job] = outcome
        if todo[job][2] and not outcome.nocompose:
            cache.put(job, {"found": [asdict(f) for f in outcome.found],
                            "invalid": asdict(outcome.invalid) if outcome.invalid else None})
    return outcomes


def _compose_stack(tree: _Tree, stack: Any, policy: Policy, validate: Validator,
                   resolve: Resolver | None) -> _Outcome:
    """judge_offline, and compose's validation when compose did not resolve the model."""
    tmp, scratch = tree.tmp, tree.scratch
    assert scratch is not None
    compose = tmp / stack.compose_file
    found = None
    if resolve is not None:
        found = judge_offline(tmp, scratch, stack, tree.desired, policy, tree.proxy_network,
                              resolve)
        if found is not None and found[1]:  # compose resolved it: it is valid Compose
            return _Outcome(found[0], None)
    reason = validate(compose)
    if reason is None:
        reason = schema_reason(compose)
    invalid = Finding(
        "compose-valid", ERROR, stack.compose_file, None,
        f"stack {stack.name}: not valid Compose: {reason.replace(str(tmp) + '/', '')}",
        "fix the file until `docker compose config` accepts it") if reason else None
    return _Outcome(found[0] if found else [], invalid, resolve is not None and found is None)


def _assemble(repo: Path, tree: _Tree, policy: Policy, resolve: Resolver | None,
              cache: Cache, salt: str, rules_key: str,
              outcomes: list[_Outcome | None]) -> list[Finding]:
    """The findings of one tree, as the sequential check made them."""
    desired, host, rules = tree.desired, tree.host, tree.rules
    judged: list[Finding] | None = [] if resolve is not None else None
    out: list[Finding] = []
    said = [_origin(f, desired, repo, host) for f in rules]
    out += render_findings(desired, said, host)
    for outcome in outcomes:
        if outcome is None:
            continue
        if judged is not None and outcome.nocompose:  # the text rules stand in
            judged = None
            out.append(NO_COMPOSE)
        if outcome.invalid is not None:
            out.append(_origin(outcome.invalid, desired, repo, host))
        elif judged is not None:
            judged += outcome.found
    if judged is None and resolve is not None:  # compose missing: the text rules stand in
        rules, _ = _lint(tree, policy, False, cache, salt, rules_key)
    # A bind that climbs out of the tree is already a text error (path-escape, with its
    # item's line): the resolved host-path of the same service says nothing more.
    escapes = {(f.path, f.message.split(": ", 1)[0]) for f in rules
               if f.rule == "path-escape" and f.severity == ERROR}
    judged = [f for f in judged or [] if not (
        f.rule == "host-path" and (f.path, f.message.split(": ", 1)[0]) in escapes)]
    out += [_origin(f, desired, repo, host) for f in [*rules, *judged]]
    return out


# --- keys: what a piece of work read ----------------------------------------------------------


def _policy_json(policy: Policy) -> str:
    return _cache.digest("policy", asdict(policy))


def _digests(desired: DesiredState, sums: dict[Path, str]) -> dict[str, str]:
    """rendered path -> sha256 of its bytes ('' when unreadable: materialising skips it too)."""
    out = {}
    for rel, src in {**desired.files, **desired.env_files}.items():
        if src not in sums:
            try:
                sums[src] = hashlib.sha256(src.read_bytes()).hexdigest()
            except OSError:
                sums[src] = ""
        out[rel] = sums[src]
    return out


def _capped(src: Path, sha: str, cache: Cache) -> bool:
    """yaml_capped, remembered by the file's digest."""
    key = _cache.digest("capped", sha)
    if sha:
        got = cache.get(key)
        if isinstance(got, bool):
            return got
    ok = yaml_capped(src)
    if sha:
        cache.put(key, ok)
    return ok


# The kinds of reference (_refs) whose file becomes part of the model: followed in turn.
_INCLUDE = ("include", "extends")


def _refs(data: bytes, sha: str, cache: Cache) -> list[list[str]] | None:
    """[kind, raw path] of every path compose may read while resolving this compose file
    (kind 'include' or 'extends': a file that becomes part of the model; 'read': an env,
    label, secret or config file), None when the file cannot be read that way (then the stack
    is never cached). Remembered by the file's digest."""
    key = _cache.digest("refs", sha)
    got = cache.get(key) if sha else None
    if isinstance(got, dict) and set(got) == {"refs"}:
        refs = got["refs"]
        if refs is None or (isinstance(refs, list) and all(
                isinstance(r, list) and len(r) == 2 and r[0] in ("include", "extends", "read")
                and isinstance(r[1], str) for r in refs)):
            return refs
    try:
        refs = _path_refs(yamlsafe.load_bytes(data))
    except (yamlsafe.YamlRefused, _Unkeyable, RecursionError):
        refs = None
    if sha:
        cache.put(key, {"refs": refs})
    return refs


class _Unkeyable(Exception):
    """A path compose reads that vigo does not understand: the stack is not cached."""


def _strings(value: object, *, dict_key: str = "") -> list[str]:
    """The path strings of a value that is a string, a list of them, or (dict_key) mappings
    holding them; anything else is _Unkeyable."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif dict_key and isinstance(item, dict):
            out += _strings(item.get(dict_key, []))
        elif item is not None:
            raise _Unkeyable()
    return out


def _path_refs(doc: object) -> list[list[str]]:
    if not isinstance(doc, dict):
        return []
    refs: list[list[str]] = []
    include = doc.get("include")
    for item in include if isinstance(include, list) else [] if include is None else [include]:
        if isinstance(item, dict):
            if "project_directory" in item:
                raise _Unkeyable()
            refs += [["include", p] for p in _strings(item.get("path", []))]
            refs += [["read", p] for p in _strings(item.get("env_file", []))]
        else:
            refs += [["include", p] for p in _strings(item)]
    for section in ("secrets", "configs"):
        for spec in (doc.get(section) or {}).values() if isinstance(
                doc.get(section), dict) else []:
            if isinstance(spec, dict) and "file" in spec:
                refs += [["read", p] for p in _strings(spec["file"])]
    services = doc.get("services")
    for svc in services.values() if isinstance(services, dict) else []:
        if not isinstance(svc, dict):
            continue
        for key in ("env_file", "label_file"):
            if key in svc:
                refs += [["read", p] for p in _strings(svc[key], dict_key="path")]
        extends = svc.get("extends")
        if isinstance(extends, dict) and "file" in extends:
            refs += [["extends", p] for p in _strings(extends["file"])]
    return refs


_ENV_NAMES = tuple(dict.fromkeys((*PASS_ENV, "LC_ALL")))


def _stack_key(tree: _Tree, stack: Any, cache: Cache, salt: str, rules_key: str,
               judge: bool) -> str:
    """The cache key of one stack's compose work: a digest of everything it reads. The files
    of the stack's folder, the env files given to interpolation, every file its compose files
    include, extend or name as env, label, secret or config files (followed through includes),
    the values of the environment variables compose would see whose names the files mention,
    the proxy network, the policy, vigo's and compose's versions (the cache's salt). '' when a
    path cannot be followed (absolute, outside the tree, a variable, a remote, a project
    directory): that stack is resolved every run."""
    digests, files = tree.digests, tree.desired.files
    own = tree.own(stack.folder + "/")
    read: dict[str, str] = {}
    queue, seen = [stack.compose_file], set()
    while queue:
        rel = queue.pop()
        if rel in seen:
            continue
        seen.add(rel)
        src = files.get(rel)
        try:
            data = src.read_bytes() if src is not None else b""
        except OSError:
            return ""
        read[rel] = digests.get(rel, "")
        refs = _refs(data, read[rel], cache)
        if refs is None:
            return ""
        base = posixpath.dirname(rel)
        for kind, raw in refs:
            if not raw or "$" in raw or ":" in raw or raw.startswith(("/", "~")):
                return ""
            target = posixpath.normpath(posixpath.join(base, raw))
            if target == ".." or target.startswith("../"):
                return ""
            if target in digests:
                read[target] = digests[target]
                if kind in _INCLUDE and target in files:
                    queue.append(target)
            else:  # compose sees a folder or nothing there
                is_dir = any(r.startswith(target + "/") for r in digests)
                read[target] = "folder" if is_dir else "absent"
    interpolation = [(rel, digests.get(rel, "")) for rel in stack.interpolation_env]
    texts = b"".join(Path(files[rel]).read_bytes() for rel in read if digests.get(rel)
                     and rel in files)
    env = sorted((name, os.environ.get(name)) for name in _ENV_NAMES
                 if name.encode() in texts)
    return _cache.digest("stack", salt, rules_key, judge, stack.name, stack.compose_file,
                         list(stack.interpolation_env), tree.proxy_network, own,
                         sorted(read.items()), interpolation, env)


def _findings(value: object) -> list[Finding] | None:
    """Findings read back from the cache, None when any is not one."""
    if not isinstance(value, list):
        return None
    out = []
    for item in value:
        f = _finding(item)
        if f is None:
            return None
        out.append(f)
    return out


def _finding(item: object) -> Finding | None:
    if not isinstance(item, dict) or set(item) != _FIELDS:
        return None
    if not all(isinstance(item[k], str) for k in _FIELDS - {"line"}):
        return None
    line = item["line"]
    if line is not None and (not isinstance(line, int) or isinstance(line, bool)):
        return None
    return Finding(**item)


_FIELDS = frozenset(f.name for f in fields(Finding))


def _outcome(value: object) -> _Outcome | None:
    if not isinstance(value, dict) or set(value) != {"found", "invalid"}:
        return None
    found = _findings(value["found"])
    invalid = None if value["invalid"] is None else _finding(value["invalid"])
    if found is None or (value["invalid"] is not None and invalid is None):
        return None
    return _Outcome(found, invalid)


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
