"""The parts every rule family shares: a finding, a parsed compose file, the registry."""

import posixpath
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vigo.core import xvigo
from vigo.core.model import PROXY, located
from vigo.core.policy import DEFAULT_PROXY_NETWORK, Policy
from vigo.core.records import field, record

ERROR = "error"
WARNING = "warning"
# Text rules that policy.judge replaces when the resolved model is at hand (the fallback when
# `docker compose` is not installed).
RESOLVED_RULES = frozenset({"privileged", "host-namespace", "devices", "cap-add", "docker-sock",
                            "build"})


@record(frozen=True)
class Finding:
    rule: str  # stable id, e.g. "image-pinned"
    severity: str  # "error" or "warning"
    path: str  # repo-relative POSIX path of the file
    line: int | None  # 1-based where known
    message: str  # what is wrong, naming the stack/service
    fix: str  # how to fix it, one sentence

    @property
    def where(self) -> str:
        """`path:line` (or `path`): how every output names the place of a finding."""
        return located(self.path, self.line)


STRICT = Policy()


@record(frozen=True)
class Place:
    """Where a tree rule's finding goes: a stack and one of its compose files. A tree rule
    reads facts (plain data), not parsed files; Place stands in for the ComposeFile."""

    stack: str
    rel: str

    @property
    def is_proxy(self) -> bool:
        return self.stack == PROXY


@record(frozen=True)
class ComposeFile:
    """One parsed compose file of a stack: the model the stack rules read."""

    stack: str  # "proxy" for the proxy
    rel: str  # repo-relative POSIX path
    doc: Any = field(compare=False, repr=False)  # ruamel mapping; `.lc` has line numbers
    env_keys: frozenset[str] = frozenset()
    policy: Policy = STRICT
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

    @property
    def x_vigo(self) -> xvigo.Options:
        """The stack's x-vigo options through the one parser (its problems are rule x-vigo's):
        what a family that depends on them reads, e.g. the engine a stack asks for."""
        return xvigo.parse(self.doc.get(xvigo.KEY), None, self.stack)[0]


# --- the registry: each family module adds its rule ids and its rules -------------------------

RULES: dict[str, str] = {}  # every rule id -> what it asks, in the order the families load
StackRule = Callable[[ComposeFile], Iterable[Finding]]
# A tree rule is two functions, so that `vigo check` can keep each stack's part of it by the
# content it came from (workstation/check.py): `facts` reads the parsed files of ONE stack and
# returns plain JSON data (dict, list, str, int, bool, None; never a parsed document); the rule
# itself reads the facts of every stack of the host, one value per stack in stack order.
TreeFacts = Callable[[list[ComposeFile]], Any]
TreeRule = Callable[[list[Any]], Iterable[Finding]]
FilesRule = Callable[[Path, list[ComposeFile]], Iterable[Finding]]
RepoRule = Callable[[Path], Iterable[Finding]]
STACK_RULES: list[StackRule] = []  # one compose file at a time (lint_tree and lint_stack)
# the files of ONE stack with the tree's folder (both too); a files rule that reads a path of
# the tree adds it to lint_one's reads (what a kept stack lint is keyed by)
FILES_RULES: list[FilesRule] = []
# every stack of a host at once, from each stack's facts (lint_tree only)
TREE_RULES: list[tuple[TreeFacts, TreeRule]] = []
REPO_RULES: list[RepoRule] = []  # the checkout itself (lint_repo_files)


def describe(rules: dict[str, str]) -> dict[str, str]:
    """A family's rule ids and what each asks (the rule table of `vigo check`); an id is
    registered once."""
    for rule in rules:
        if rule in RULES:
            raise ValueError(f"lint rule id {rule!r} is registered twice")
    RULES.update(rules)
    return rules


def _register(registry: list) -> Callable:
    def add(fn: Callable) -> Callable:
        registry.append(fn)
        return fn

    return add


stack_rule = _register(STACK_RULES)
files_rule = _register(FILES_RULES)
repo_rule = _register(REPO_RULES)


def tree_rule(facts: TreeFacts) -> Callable[[TreeRule], TreeRule]:
    """`@tree_rule(facts)` over a rule of every stack's facts (see TreeFacts)."""

    def add(rule: TreeRule) -> TreeRule:
        TREE_RULES.append((facts, rule))
        return rule

    return add


# --- how a finding is written -----------------------------------------------------------------


def who(stack: str, service: str | None = None) -> str:
    where = "proxy" if stack == PROXY else f"stack '{stack}'"
    return f"{where}, service '{service}'" if service else where


def finding(
    cf: ComposeFile | Place,
    rule: str,
    line: int | None,
    service: str | None,
    what: str,
    fix: str,
    severity: str = ERROR,
) -> Finding:
    return Finding(rule, severity, cf.rel, line, f"{who(cf.stack, service)}: {what}", fix)


def rel_path(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.path, f.line or 0, f.rule, f.message))
