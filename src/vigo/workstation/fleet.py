"""Fleets: many hosts from one infra repo (docs/fleet.md).

Two workstation commands live here, as pure parts plus a thin orchestration each:

- `vigo host add NAME --age-recipient KEY`: the folder hosts/NAME/env/, a `.sops.yaml` creation
  rule for `hosts/NAME/env/*.env` (the host's key first, then the operators' keys) placed before
  the base rule, the host's key added to the base rule (the shared env/*.env files are encrypted
  to every host and the operators), and `sops updatekeys` on the env files those two rules govern.
  `.sops.yaml` is edited as a ruamel.yaml round trip: comments, order and quoting stay.
- `vigo plan --host NAME | --all-hosts --repo DIR`: what a host would run, from a clone, offline:
  no Docker engine, no age key. Env files are shown by key names only.

Which keys are hosts' and which are operators': a host rule is one vigo wrote (its path_regex is
exactly `host_rule_regex(NAME)`), and its FIRST age recipient is that host's key. The operators
are the base rule's recipients that are no host's key.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigo.core import lint, render
from vigo.core.lint import ERROR, WARNING, Finding
from vigo.core.model import HOST_NAME  # the `host` setting's grammar (the cli matches it too)
from vigo.core.policy import Policy
from vigo.core.records import record
from vigo.workstation import check
from vigo.workstation.scaffold import AGE_RECIPIENT  # as vigo init

if TYPE_CHECKING:
    from vigo.adapters.git import Clone, CloneError
    from vigo.adapters.sops import Sops

BASE_PROBE = "env/global.env"  # the rule sops uses for this path is "the base rule"
KEEP_FILE = ".gitkeep"
_RULE_HEAD, _RULE_TAIL = "(^|/)hosts/", r"/env/[^/]+\.env$"
_RECIPIENT_LINE = re.compile(r"^sops_age__list_\d+__map_recipient=(age1[0-9a-z]+)\s*$", re.M)


class FleetError(Exception):
    """A refusal with the reason; `code` is the exit code (2: bad input, nothing changed)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# --- .sops.yaml: host rules (pure) -------------------------------------------------------------


def host_rule_regex(name: str) -> str:
    """The path_regex of host NAME's rule. `(^|/)` and not `^`: sops before 3.8 matched the
    path as given on its command line, which may be absolute."""
    return _RULE_HEAD + name.replace(".", r"\.") + _RULE_TAIL


def rule_host(regex: object) -> str | None:
    """The host a path_regex is the vigo host rule of, or None."""
    if not isinstance(regex, str) or not (regex.startswith(_RULE_HEAD)
                                          and regex.endswith(_RULE_TAIL)):
        return None
    name = regex[len(_RULE_HEAD):-len(_RULE_TAIL)].replace(r"\.", ".")
    return name if HOST_NAME.match(name) and host_rule_regex(name) == regex else None


def recipients(value: object) -> list[str]:
    """age recipients of a creation rule: a YAML list, or sops' comma-separated string."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return []


def first_rule(patterns: Sequence[str | None], rel: str) -> int | None:
    """Index of the creation rule sops uses for the repo path `rel`: the first whose path_regex
    matches (a rule without one matches every file), like sops."""
    for i, regex in enumerate(patterns):
        try:
            if regex is None or re.search(regex, rel):
                return i
        except re.error:
            continue
    return None


def probe(name: str) -> str:
    return f"hosts/{name}/env/probe.env"


@record(frozen=True)
class SopsEdit:
    """The outcome of adding (or re-keying) a host in .sops.yaml."""

    text: str  # the new .sops.yaml
    changed: bool  # text differs from the input
    lines: tuple[str, ...]  # what changed, for people
    patterns: tuple[str | None, ...]  # every rule's path_regex, after the edit
    targets: frozenset[int]  # the host rule and the base rule: their files get updatekeys


def _yaml():
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never wrap a line of age keys
    return yaml


def _load(text: str) -> tuple[Any, Any]:
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.util import load_yaml_guess_indent

    try:
        _, indent, dash = load_yaml_guess_indent(text)
        yaml = _yaml()
        yaml.indent(mapping=2, sequence=max(indent or 2, (dash or 0) + 2), offset=dash or 0)
        doc = yaml.load(text)
    except YAMLError as exc:
        raise FleetError(f".sops.yaml cannot be parsed: {str(exc).splitlines()[0]}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("creation_rules"), list):
        raise FleetError(".sops.yaml has no creation_rules list")
    return yaml, doc


def _flow(items: Iterable[str]):
    from ruamel.yaml.comments import CommentedSeq

    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def _set_recipients(rule: Any, keys: list[str]) -> None:
    """Write `keys` as the rule's age recipients in the form the rule already uses."""
    current = rule.get("age")
    if isinstance(current, str):
        rule["age"] = ",".join(keys)
    elif isinstance(current, list):
        kept = [v for v in current if str(v).strip() in keys]  # keeps their quoting
        current[:] = kept + [k for k in keys if k not in {str(v).strip() for v in kept}]
        order = {k: i for i, k in enumerate(keys)}
        current.sort(key=lambda v: order[str(v).strip()])
    else:
        rule["age"] = _flow(keys)


def add_host_rules(text: str, name: str, key: str) -> SopsEdit:
    """Add host NAME with age KEY to a .sops.yaml (or change its key). Pure: text in, text out.

    The host rule is inserted before the first rule that matches hosts/NAME/env/ today (so
    before the base rule); the host's key is added to the base rule."""
    if not HOST_NAME.match(name):
        raise FleetError(f"{name!r} is not a host name (letters, digits, '.', '_', '-'; the "
                         "`host` setting of that machine)")
    if not AGE_RECIPIENT.match(key):
        raise FleetError(f"{key!r} is not an age recipient (age1... , from age-keygen -y)")
    yaml, doc = _load(text)
    rules = doc["creation_rules"]
    patterns = [_regex(r) for r in rules]
    base = first_rule(patterns, BASE_PROBE)
    if base is None:
        raise FleetError(f".sops.yaml: no creation rule matches {BASE_PROBE}: add the base rule "
                         r"`path_regex: (^|/)env/[^/]+\.env$` first")
    base_rule = rules[base]
    if not isinstance(base_rule, dict) or "key_groups" in base_rule or not recipients(
            base_rule.get("age")):
        raise FleetError(f".sops.yaml: the base rule (rule {base + 1}) has no plain `age:` "
                         "recipients; vigo host add edits only those (edit this file by hand)")
    host_rules = {h: i for i, r in enumerate(rules) if (h := rule_host(_regex(r)))}
    host_keys = {h: (recipients(rules[i].get("age")) or [""])[0] for h, i in host_rules.items()}
    others = {k: h for h, k in host_keys.items() if h != name}
    if key in others:
        raise FleetError(f"{key[:16]}... is already host {others[key]}'s key: every host needs "
                         "its own key (a host holding another's key reads its secrets)")
    base_keys = recipients(base_rule.get("age"))
    operators = [k for k in base_keys if k not in host_keys.values()]
    if key in operators:
        raise FleetError(f"{key[:16]}... is an operator's key in the base rule: give the host "
                         "a key of its own (age-keygen on the host)")
    lines: list[str] = []
    if name in host_rules:
        index = host_rules[name]
        old = host_keys[name]
        if old != key:
            _set_recipients(rules[index], [key, *[k for k in recipients(
                rules[index].get("age")) if k != old]])
            lines.append(f".sops.yaml: host {name}'s key changed in its rule "
                         f"({old[:16]}... -> {key[:16]}...)")
        if old != key and old in base_keys:
            base_keys = [key if k == old else k for k in base_keys]
    else:
        from ruamel.yaml.comments import CommentedMap

        rule = CommentedMap()
        rule["path_regex"] = host_rule_regex(name)
        rule["age"] = _flow([key, *operators])
        for k, v in base_rule.items():
            if k not in ("path_regex", "age"):
                rule[k] = copy.deepcopy(v)  # the same node twice would dump as a YAML alias
        rule.yaml_add_eol_comment(f"host {name}: its key first, then the operators'", "path_regex")
        hit = first_rule(patterns, probe(name))
        index = base if hit is None else min(hit, base)
        rules.insert(index, rule)
        if index <= base:
            base += 1
        lines.append(f".sops.yaml: rule for hosts/{name}/env/*.env added (rule {index + 1}, "
                     f"before the base rule): {name}'s key + {len(operators)} operator key(s)")
    if key not in base_keys:
        base_keys.append(key)
    if base_keys != recipients(rules[base].get("age")):
        _set_recipients(rules[base], base_keys)
        lines.append(f".sops.yaml: {name}'s key is a recipient of the base rule (the shared "
                     "env/*.env files: every host and the operators)")
    patterns = [_regex(r) for r in rules]
    first = first_rule(patterns, probe(name))
    if first != index:
        raise FleetError(f".sops.yaml: rule {(first or 0) + 1} matches hosts/{name}/env/ before "
                         f"the host's rule {index + 1}: sops uses the first match; move the "
                         "host's rule up")
    out = StringIO()
    yaml.dump(doc, out)
    new = out.getvalue()
    return SopsEdit(new, new != text, tuple(lines), tuple(patterns), frozenset({index, base}))


def _regex(rule: object) -> str | None:
    regex = rule.get("path_regex") if isinstance(rule, dict) else None
    return None if regex is None else str(regex)


def sops_rules(repo: Path) -> tuple[list[str | None], dict[str, str]]:
    """(path_regex of every creation rule, host -> its key) of repo/.sops.yaml; empty when it
    is missing or broken (the sops-coverage rule of vigo check reports that)."""
    from vigo.core import yamlsafe

    try:
        doc = yamlsafe.load_bytes((repo / ".sops.yaml").read_bytes())
    except (OSError, yamlsafe.YamlRefused):
        return [], {}
    rules = doc.get("creation_rules") if isinstance(doc, dict) else None
    if not isinstance(rules, list):
        return [], {}
    patterns = [_regex(r) for r in rules]
    keys = {}
    for rule in rules:
        host = rule_host(_regex(rule))
        first = recipients(rule.get("age"))[:1] if host else []
        if host and first:
            keys[host] = first[0]
    return patterns, keys


def env_files(repo: Path) -> list[str]:
    """Repo paths of the env files sops manages: env/**/*.env and hosts/*/env/**/*.env."""
    roots = [repo / "env", *sorted((repo / "hosts").glob("*/env"))]
    return sorted(p.relative_to(repo).as_posix() for root in roots
                  if root.is_dir() and not root.is_symlink()
                  for p in root.rglob("*.env") if p.is_file() and not p.is_symlink())


def governed(patterns: Sequence[str | None], files: Iterable[str],
             rules: Iterable[int]) -> list[str]:
    """The files whose rule (the first match) is one of `rules`."""
    wanted = set(rules)
    return [rel for rel in files if first_rule(patterns, rel) in wanted]


def file_recipients(path: Path) -> set[str]:
    """The age recipients an encrypted dotenv file holds its data key for (sops metadata)."""
    try:
        return set(_RECIPIENT_LINE.findall(path.read_text(encoding="utf-8", errors="replace")))
    except OSError:
        return set()


# --- vigo host add (orchestration) ------------------------------------------------------------


def default_identity() -> Path | None:
    """The operator's age identity: $SOPS_AGE_KEY_FILE, else sops' default file."""
    named = os.environ.get("SOPS_AGE_KEY_FILE")
    if named:
        return Path(named).resolve()  # sops runs in the repo, maybe not the current folder
    default = Path.home() / ".config" / "sops" / "age" / "keys.txt"
    return default if default.is_file() else None


def add_host(repo: Path, name: str, key: str, sops: Sops, identity: Path | None,
             emit: Callable[[str], None]) -> int:
    """hosts/NAME/env/, the .sops.yaml rules, `sops updatekeys` of the files they govern.
    Idempotent: run it again to finish what a failed updatekeys left (exit 1)."""
    from vigo.adapters.fs import atomic_write
    from vigo.adapters.sops import DecryptError

    config = repo / ".sops.yaml"
    if not repo.is_dir():
        raise FleetError(f"{repo} is not a folder")
    if not config.is_file():
        raise FleetError(f"{config} does not exist: this is not an infra repo (vigo init makes "
                         "one)")
    edit = add_host_rules(config.read_text(encoding="utf-8"), name, key)
    env_dir = repo / "hosts" / name / "env"
    if not env_dir.is_dir():
        env_dir.mkdir(parents=True)
        (env_dir / KEEP_FILE).touch()
        emit(f"hosts/{name}/env/: created ({KEEP_FILE} keeps the folder in git; the overlay "
             "holds only proxy/, stacks/ and env/)")
    if edit.changed:
        atomic_write(config, edit.text.encode(), mode=config.stat().st_mode & 0o777)
        for line in edit.lines:
            emit(line)
    else:
        emit(f".sops.yaml: host {name} and its key are already there")
    failed = 0
    for rel in governed(edit.patterns, env_files(repo), edit.targets):
        try:
            changed = sops.updatekeys(rel, repo, identity)
        except DecryptError as exc:
            failed += 1
            emit(f"{rel}: NOT re-encrypted: {exc}")
            continue
        emit(f"{rel}: " + ("re-encrypted to the rule's recipients (sops updatekeys)" if changed
                           else "already encrypted to the rule's recipients"))
    if failed:
        emit(f"{failed} file(s) were not re-encrypted: give an identity that can decrypt them "
             "(--age-key-file, or SOPS_AGE_KEY_FILE) and run this command again")
        return 1
    emit(f"next: commit (git add .sops.yaml env hosts/{name}), install {name}'s private key on "
         f"the host, then there `vigo bootstrap --repo URL --host {name}`")
    return 0


# --- vigo plan --host / --all-hosts (offline) -------------------------------------------------


@record(frozen=True)
class EnvView:
    path: str  # repo path of the file the host uses (base or overlay)
    keys: tuple[str, ...]  # variable NAMES only


@record(frozen=True)
class StackView:
    name: str
    compose_file: str  # repo path: stacks/<n>/... or hosts/<host>/stacks/<n>/...
    images: tuple[tuple[str, str], ...]  # (service, image; ${VAR} resolved only by defaults)
    env: tuple[EnvView, ...]
    problems: tuple[str, ...] = ()
    change: str = ""  # with a diff base: added, changed, unchanged (removed: HostPlan.removed)


@record(frozen=True)
class HostPlan:
    host: str  # "" for the base tree (a host without an overlay)
    overlay: tuple[str, ...]  # its files under hosts/<host>/, overlay-relative
    stacks: tuple[StackView, ...]
    findings: tuple[Finding, ...]
    warnings: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()  # with a diff base: stacks the base revision ran
    base: str = ""  # the diff base revision, if any

    @property
    def label(self) -> str:
        return self.host or "base"

    @property
    def errors(self) -> int:
        return sum(f.severity == ERROR for f in self.findings)

    @property
    def warnings_count(self) -> int:
        return sum(f.severity == WARNING for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "host": self.host, "overlay": list(self.overlay), "warnings": list(self.warnings),
            "stacks": [{"name": s.name, "compose_file": s.compose_file,
                        "images": dict(s.images),
                        "env": [{"file": e.path, "keys": list(e.keys)} for e in s.env],
                        "problems": list(s.problems),
                        **({"change": s.change} if self.base else {})} for s in self.stacks],
            "findings": check.to_json(list(self.findings)),
            "errors": self.errors,
        }
        if self.base:
            out.update(diff_base=self.base, removed=list(self.removed))
        return out


def plan_host(repo: Path, host: str, policy: Policy, validate: check.Validator,
              before: Path | None = None, base: str = "",
              resolve: check.Resolver | None = None) -> HostPlan:
    """What `host` would run from the clone `repo` ('' : the base tree), with the findings of
    the check rules for it. With `before` (the same repo at revision `base`): what changes."""
    desired = render.render(repo, host, "")
    findings = list(check.check_rendered(repo, host, policy, validate, resolve))
    mine = f"hosts/{host}/"
    findings += [f for f in lint.lint_repo_files(repo)
                 if not f.path.startswith("hosts/") or (host and f.path.startswith(mine))]
    patterns, keys = sops_rules(repo)
    findings += _recipient_findings(repo, host, desired, patterns, keys)
    prior = render.render(before, host, "") if before else None
    old = {s.name: s for s in prior.stacks} if prior else {}
    stacks = []
    for stack in desired.stacks:
        change = ""
        if prior is not None:
            was = old.get(stack.name)
            change = ("added" if was is None else "unchanged" if was.hash == stack.hash else
                      "changed" + _moves(prior.files.get(was.compose_file),
                                         desired.files.get(stack.compose_file)))
        stacks.append(_view(repo, desired, stack, change))
    overlay = tuple(sorted(rel[len(mine):] for rel in _repo_paths(repo, desired)
                           if host and rel.startswith(mine) and not rel.endswith(KEEP_FILE)))
    unique = {(f.rule, f.path, f.line, f.message): f for f in findings}
    return HostPlan(host, overlay, tuple(stacks),
                    tuple(sorted(unique.values(), key=lambda f: (f.path, f.line or 0, f.rule))),
                    desired.warnings,
                    tuple(sorted(set(old) - {s.name for s in desired.stacks})), base)


def _moves(before: Path | None, after: Path | None) -> str:
    """' (web: a -> b)' for the images a change moves, '' when none moved."""
    old, new = dict(_images(before)), dict(_images(after))
    moved = [f"{svc}: {old.get(svc, '(none)')} -> {image}" for svc, image in new.items()
             if old.get(svc) != image]
    moved += [f"{svc}: removed" for svc in old if svc not in new]
    return f" ({'; '.join(moved)})" if moved else ""


def _repo_paths(repo: Path, desired) -> list[str]:
    out = []
    for src in (*desired.files.values(), *desired.env_files.values()):
        try:
            out.append(src.relative_to(repo).as_posix())
        except ValueError:
            continue
    return out


def _source(repo: Path, src: Path | None, rel: str) -> str:
    if src is None:
        return rel
    try:
        return src.relative_to(repo).as_posix()
    except ValueError:
        return rel


def _view(repo: Path, desired, stack, change: str) -> StackView:
    env_keys = frozenset().union(*(lint.env_key_names(desired.env_files[rel])
                                   for rel in stack.interpolation_env))
    images = []
    path = desired.files.get(stack.compose_file)
    for service, image in _images(path):
        resolved = lint.resolve(image, env_keys) if "$" in image else image
        images.append((service, resolved if resolved is not None else image))
    env = tuple(EnvView(_source(repo, desired.env_files.get(rel), rel),
                        tuple(sorted(lint.env_key_names(desired.env_files[rel]))))
                for rel in stack.env_files if rel in desired.env_files)
    return StackView(stack.name, _source(repo, path, stack.compose_file), tuple(images), env,
                     stack.problems, change)


def _images(path: Path | None) -> list[tuple[str, str]]:
    """(service, image as written) of a compose file; [] when it does not parse (the
    compose-parse rule says why)."""
    from vigo.core import yamlsafe

    if path is None:
        return []
    try:
        doc = yamlsafe.load_bytes(path.read_bytes())
    except (OSError, yamlsafe.YamlRefused):
        return []
    services = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(services, dict):
        return []
    return [(str(name), str(svc.get("image") or "(no image)")) for name, svc in services.items()
            if isinstance(svc, dict)]


def _recipient_findings(repo: Path, host: str, desired, patterns: Sequence[str | None],
                        keys: dict[str, str]) -> list[Finding]:
    """A host with a rule in .sops.yaml must find its key among the recipients of every env
    file it uses, or apply fails those stacks; a host without a rule shares its overlay's env
    files with whoever the base rule names."""
    out: list[Finding] = []
    used = {rel for s in desired.stacks for rel in s.env_files if rel in desired.env_files}
    key = keys.get(host)
    for rel in sorted(used):
        src = desired.env_files[rel]
        path = _source(repo, src, rel)
        held = file_recipients(src)
        if key and held and key not in held:
            out.append(Finding(
                "host-recipient", ERROR, path, None,
                f"host {host} cannot decrypt {path}: it is not encrypted to {host}'s key "
                f"{key[:16]}... (apply fails the stacks that use it)",
                f"re-encrypt it: `vigo host add {host} --age-recipient {key[:12]}...` again, "
                f"or `sops updatekeys {path}`"))
    mine = [rel for rel in env_files(repo) if rel.startswith(f"hosts/{host}/")] if host else []
    if mine and host not in keys and patterns:
        out.append(Finding(
            "host-rule", WARNING, f"hosts/{host}/env", None,
            f"host {host} has no creation rule of its own in .sops.yaml: its overlay env files "
            "are encrypted to whoever the rule that matches them names",
            f"give {host} its own key and rule: `vigo host add {host} --age-recipient KEY`"))
    return out


def plan_fleet(repo: Path, policy: Policy, validate: check.Validator,
               before: Path | None = None, base: str = "",
               resolve: check.Resolver | None = None) -> list[HostPlan]:
    """The base tree (what a host without an overlay runs), then every hosts/<name>/."""
    return [plan_host(repo, host, policy, validate, before, base, resolve)
            for host in ["", *check.hosts_of(repo)]]


# --- output (pure) ----------------------------------------------------------------------------


def format_host(plan: HostPlan) -> list[str]:
    if plan.host:
        where = (f"overlay hosts/{plan.host}/ ({len(plan.overlay)} file(s))" if plan.overlay
                 else f"no hosts/{plan.host}/ overlay: the base tree")
    else:
        where = "the base tree: what a host without an overlay runs"
    lines = [f"host {plan.label}: {len(plan.stacks)} stack(s), {where}"
             + (f"; changes since {plan.base[:12]}" if plan.base else "")]
    for s in plan.stacks:
        overlay = " (overlay)" if s.compose_file.startswith("hosts/") else ""
        change = f" [{s.change}]" if s.change else ""
        lines.append(f"  {s.name}{change}: {s.compose_file}{overlay}")
        lines += [f"    {service}: {image}" for service, image in s.images]
        for e in s.env:
            overlay = " (overlay)" if e.path.startswith("hosts/") else ""
            lines.append(f"    {e.path}{overlay}: {', '.join(e.keys) or '(no variables)'}")
        lines += [f"    problem: {p}" for p in s.problems]
    lines += [f"  {name} [removed]: no longer in the tree" for name in plan.removed]
    lines += [f"  warning: {w}" for w in plan.warnings]
    return lines + check.format_text(list(plan.findings), Path(f"host {plan.label}"))


def format_summary(plans: list[HostPlan]) -> list[str]:
    lines = []
    for plan in plans:
        names = ", ".join(s.name for s in plan.stacks) or "none"
        overlay = f"overlay {', '.join(plan.overlay)}; " if plan.overlay else ""
        label = plan.label if plan.host else "base (a host without an overlay)"
        lines.append(f"{label}: {len(plan.stacks)} stack(s): {names}; {overlay}"
                     f"{plan.errors} error(s), {plan.warnings_count} warning(s)")
        if plan.base:
            moved = [f"{s.name} {s.change}" for s in plan.stacks if s.change != "unchanged"]
            moved += [f"{name} removed" for name in plan.removed]
            lines.append(f"  since {plan.base[:12]}: {'; '.join(moved) or 'no change'}")
        for f in plan.findings:
            if f.severity == ERROR:
                lines.append(f"  {f.where}: error [{f.rule}] {f.message}")
    bad = [p.label for p in plans if p.errors]
    lines.append(f"{len(plans) - 1} host(s) and the base: "
                 + (f"errors in {', '.join(bad)}" if bad else "no errors"))
    return lines


@contextmanager
def diff_base(clone: Clone, rev: str | None) -> Iterator[Path | CloneError | None]:
    """The clone's files at `rev` in a temp folder, removed after; None without a rev, the
    error when git cannot export it."""
    from vigo.adapters.git import CloneError

    if not rev:
        yield None
        return
    tmp = Path(tempfile.mkdtemp(prefix="vigo-diff-base-"))
    try:
        try:
            clone.export(rev, tmp / "tree")
        except CloneError as exc:
            yield exc
            return
        yield tmp / "tree"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
