"""Family swarm: for stacks that name `x-vigo.engine: swarm`, the Compose keys Docker Swarm
ignores or refuses (the rule itself lives with the Swarm model, core/swarm.py), and what their
hosts/<node>/stacks/<stack>/ folders do there: place the stack on those nodes
(docs/swarm.md#placement), with files that must not differ from the stack's own."""

import hashlib
from collections.abc import Iterator
from pathlib import Path

from vigo.core import render, swarm
from vigo.core.lint.base import WARNING, Finding, describe, repo_rule, stack_rule
from vigo.core.model import COMPOSE_NAMES

PLACEMENT = "swarm-placement"
IDS = describe({**swarm.RULES, PLACEMENT: "a stack on Swarm: each hosts/<node>/stacks/<stack>/ "
                "places it on that node (unless <node> is the managers' `host`), and holds "
                "only a .gitkeep or files identical to the stack's (warning)"})
stack_rule(swarm.lint_rule)


def _sums(folder: Path) -> dict[str, str]:
    """path inside `folder` -> sha256 of every regular file under it (links not followed)."""
    out: dict[str, str] = {}
    if not folder.is_dir() or folder.is_symlink():
        return out
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            try:
                out[path.relative_to(folder).as_posix()] = hashlib.sha256(
                    path.read_bytes()).hexdigest()
            except OSError:
                continue
    return out


@repo_rule
def _placement(repo: Path) -> Iterator[Finding]:
    hosts, stacks = repo / "hosts", repo / "stacks"
    if not hosts.is_dir() or not stacks.is_dir():
        return
    for stack in sorted(p for p in stacks.iterdir() if p.is_dir() and not p.is_symlink()):
        compose = next((stack / n for n in COMPOSE_NAMES if (stack / n).is_file()), None)
        try:
            text = compose.read_text(errors="replace") if compose else ""
        except OSError:
            continue
        if render.engine_named(text) != "swarm":
            continue
        base = _sums(stack)
        for host in sorted(p for p in hosts.iterdir() if p.is_dir() and not p.is_symlink()):
            folder = host / "stacks" / stack.name
            files = _sums(folder)
            if not files:
                continue
            rel = f"hosts/{host.name}/stacks/{stack.name}"
            yield Finding(PLACEMENT, WARNING, rel, None, f"stack '{stack.name}' runs on Swarm: "
                          f"{rel}/ places it on node {host.name} (Swarm runs one definition "
                          "on every node; unless it is the managers' `host`, whose overlay is "
                          "the stack's content)", "Nothing to do if that is meant; a node that "
                          "is not in the swarm is ignored at apply, with a warning "
                          "(docs/swarm.md#placement).")
            found = [(host.name, inner, sha) for inner, sha in files.items()]
            for problem in swarm.placement_problems(stack.name, found, base):
                where = problem.split(" ", 1)[0]
                yield Finding(PLACEMENT, WARNING, where, None, problem + " (apply fails "
                              f"stack '{stack.name}' on Swarm)", f"Delete {where}, keep a "
                              f"{swarm.GITKEEP} in {rel}/, or make it identical; per-node "
                              "values belong in node labels or env.")
