"""`vigo check` after a change lints only what the change touched (workstation/check.py: the
layout, each stack's lint and the tree rules' facts are kept by the content they read), and says
exactly what a check without a cache says: after every kind of edit a stack's lint can see.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from vigo.core import lint, xvigo
from vigo.core.lint import Policy
from vigo.workstation import check as check_mod
from vigo.workstation.cache import Cache
from vigo.workstation.check import check

from .test_check_cache import ENV, SOPS, Compose, write

PROXY = """services:
  traefik:
    image: traefik:v3.7
networks:
  default:
    name: {network}
"""
APP = """services:
  web:
    image: ghcr.io/x/{name}:sha-1a2b3c4
    env_file:
      - ../../env/{name}.env
    labels:
      - traefik.enable=true
      - traefik.http.routers.{name}.rule=Host(`{host}`)
    networks: [proxy]
networks:
  proxy:
    external: true
    name: {network}
{extra}"""


def app(name: str, host: str = "", network: str = "proxy", extra: str = "") -> str:
    return APP.format(name=name, host=host or f"{name}.example.com", network=network,
                      extra=extra)


def repo_of(tmp_path: Path) -> Path:
    files = {".sops.yaml": SOPS, "proxy/compose.yaml": PROXY.format(network="proxy"),
             "env/global.env": ENV.format(key="TZ")}
    for name in ("a", "b", "c"):
        files[f"stacks/{name}/compose.yaml"] = app(name)
        files[f"env/{name}.env"] = ENV.format(key=name.upper() + "_X")
    files["hosts/h1/stacks/a/notes.txt"] = "h1"
    return write(tmp_path / "repo", files)


def said(repo: Path, cache: Cache) -> list[tuple]:
    found = check(repo, Policy(), Compose().validate, resolve=Compose().resolve, cache=cache)
    return [(f.rule, f.severity, f.path, f.line, f.message, f.fix) for f in found]


def fresh(repo: Path) -> list[tuple]:
    return said(repo, Cache(None, salt="compose 2.40.3"))


def kept(repo: Path, path: Path) -> list[tuple]:
    cache = Cache(path, salt="compose 2.40.3")
    out = said(repo, cache)
    assert cache.save() == ""
    return out


def edit(files: dict[str, str | None]) -> Callable[[Path], None]:
    def apply(repo: Path) -> None:
        for rel, text in files.items():
            if text is None:
                target = repo / rel
                if target.is_dir():
                    for p in sorted(target.rglob("*"), reverse=True):
                        p.unlink() if p.is_file() else p.rmdir()
                    target.rmdir()
                else:
                    target.unlink()
            else:
                write(repo, {rel: text})

    return apply


SHARED = "services:\n  side:\n    image: ghcr.io/x/side:sha-1a2b3c4\n"
UNPINNED = "services:\n  side:\n    image: ghcr.io/x/side:latest\n"
INCLUDES_COMMON = "include:\n  - ../../common/side.yaml\n" + app("b")
INCLUDES_C = "include:\n  - ../c/side.yaml\n" + app("b")

# (name, setup before the first check, the edit after it): each edit is something one stack's
# lint, the layout or a tree rule can see.
EDITS = [
    ("image-unpinned", {}, {"stacks/b/compose.yaml": app("b").replace("sha-1a2b3c4", "latest")}),
    ("same-host-as-another-stack", {}, {"stacks/c/compose.yaml": app("c", host="a.example.com")}),
    ("host-clash-removed", {"stacks/c/compose.yaml": app("c", host="a.example.com")},
     {"stacks/c/compose.yaml": app("c")}),
    ("label-variable-defined-by-own-env",
     {"stacks/b/compose.yaml": app("b", host="${B_HOST}")},
     {"env/b.env": ENV.format(key="B_HOST")}),
    ("label-variable-defined-by-global-env",
     {"stacks/b/compose.yaml": app("b", host="${G_HOST}")},
     {"env/global.env": ENV.format(key="G_HOST")}),
    ("own-env-variable-clash-waits", {"env/b.env": ENV.format(key="H"),
                                      "env/c.env": ENV.format(key="H")},
     {"stacks/b/compose.yaml": app("b", host="${H}"),
      "stacks/c/compose.yaml": app("c", host="${H}")}),
    ("proxy-network-renamed", {}, {"proxy/compose.yaml": PROXY.format(network="edge")}),
    ("dotenv-appears", {}, {"stacks/b/.env": "PASSWORD=x\n"}),
    ("after-cycle", {"stacks/b/compose.yaml": app("b", extra="x-vigo:\n  after: [c]\n")},
     {"stacks/c/compose.yaml": app("c", extra="x-vigo:\n  after: [b]\n")}),
    ("after-names-a-removed-stack",
     {"stacks/b/compose.yaml": app("b", extra="x-vigo:\n  after: [c]\n")},
     {"stacks/c": None, "env/c.env": None}),
    ("external-creator-removed",
     {"stacks/c/compose.yaml": app("c", extra="  shared:\n    name: shared-net\n"),
      "stacks/b/compose.yaml": app("b").replace(
          "networks:\n  proxy:", "networks:\n  shared:\n    external: true\n    name: shared-net\n"
          "  proxy:")},
     {"stacks/c/compose.yaml": app("c")}),
    ("new-stack", {}, {"stacks/d/compose.yaml": app("d", host="b.example.com"),
                       "env/d.env": ENV.format(key="D_X")}),
    ("bad-stack-name", {}, {"stacks/Bad_Name/compose.yaml": app("x")}),
    ("second-compose-file", {}, {"stacks/b/docker-compose.yml": app("b")}),
    ("compose-file-broken", {}, {"stacks/b/compose.yaml": "services: [\n"}),
    ("common-include-changes", {"stacks/b/compose.yaml": INCLUDES_COMMON,
                                "common/side.yaml": SHARED},
     {"common/side.yaml": UNPINNED}),
    ("common-include-appears", {"stacks/b/compose.yaml": INCLUDES_COMMON},
     {"common/side.yaml": UNPINNED}),
    ("include-from-another-stack-changes", {"stacks/b/compose.yaml": INCLUDES_C,
                                            "stacks/c/side.yaml": SHARED},
     {"stacks/c/side.yaml": UNPINNED}),
    ("include-from-another-stack-goes", {"stacks/b/compose.yaml": INCLUDES_C,
                                         "stacks/c/side.yaml": UNPINNED},
     {"stacks/c/side.yaml": None}),
    ("overlay-changes-one-host", {}, {"hosts/h1/stacks/b/compose.yaml": app("b", "c.example.com")}),
    ("overlay-removed", {"hosts/h1/stacks/b/compose.yaml": app("b", "c.example.com")},
     {"hosts/h1/stacks/b/compose.yaml": None}),
]


@pytest.mark.parametrize(("setup", "change"), [pytest.param(s, c, id=n) for n, s, c in EDITS])
def test_a_recheck_says_what_a_check_without_cache_says(tmp_path: Path, setup: dict,
                                                        change: dict) -> None:
    repo = repo_of(tmp_path)
    edit(setup)(repo)
    cache = tmp_path / "cache.json"
    assert kept(repo, cache) == fresh(repo)
    before = fresh(repo)
    edit(change)(repo)
    after = kept(repo, cache)
    assert after == fresh(repo)
    assert after != before  # every edit here changes what check says
    assert kept(repo, cache) == after  # and warm again


def test_after_one_change_only_that_stack_is_linted(tmp_path: Path, monkeypatch) -> None:
    repo = repo_of(tmp_path)
    cache = tmp_path / "cache.json"
    kept(repo, cache)
    linted: list[str] = []
    real = lint.lint_one

    def counting(root: Path, stack: str, *args, **kwargs):
        linted.append(stack)
        return real(root, stack, *args, **kwargs)

    monkeypatch.setattr(lint, "lint_one", counting)
    made: list[str] = []
    real_materialise = check_mod._Tree.materialise
    monkeypatch.setattr(check_mod._Tree, "materialise",
                        lambda self: made.append(self.host) or real_materialise(self))
    kept(repo, cache)
    assert linted == [] and made == []  # warm: nothing linted, no tree written
    edit({"stacks/c/compose.yaml": app("c", host="a.example.com")})(repo)
    found = kept(repo, cache)
    assert linted == ["c"]  # once: the base tree's lint of c stands for h1's too
    assert set(made) == {""}  # the base tree only: h1's parts are all kept
    assert [f[2] for f in found if f[0] == "traefik-host-unique"] == ["stacks/c/compose.yaml"]


def test_a_lint_that_read_outside_its_folder_is_kept_with_what_it_read(tmp_path: Path) -> None:
    repo = repo_of(tmp_path)
    edit({"stacks/b/compose.yaml": INCLUDES_COMMON, "common/side.yaml": SHARED})(repo)
    tree = check_mod._Tree("", check_mod.render.render(repo, "", ""), {})
    tree.digests = check_mod._digests(tree.desired, {})
    cache = Cache(None)
    try:
        check_mod._stack_lint(tree, "b", "stacks/b/compose.yaml", Policy(), "proxy", True,
                              cache, "", "")
    finally:
        if tree.scratch is not None:
            check_mod.shutil.rmtree(tree.scratch)
    (entry,) = [e["v"] for e in cache._used.values()]
    assert entry["extra"] == [["common/.env", None], ["common/side.yaml",
                                                      tree.digests["common/side.yaml"]]]


def test_the_parts_of_lint_tree_are_lint_tree(tmp_path: Path) -> None:
    repo = repo_of(tmp_path)
    edit({"stacks/c/compose.yaml": app("c", host="a.example.com",
                                       extra="x-vigo:\n  after: [b, nope]\n")})(repo)
    targets, found = lint.discover(repo)
    network = lint.proxy_network_of(repo)
    parts = [lint.lint_one(repo, stack, rel, Policy(), network) for stack, rel in targets]
    assert lint.combine(found, parts) == lint.lint_tree(repo, Policy())
    assert {"traefik-host-unique", "x-vigo-order"} <= {f.rule for f in lint.lint_tree(repo)}


def _matches(created: str, name: str) -> bool:
    """The rule: a name is created by `name` itself, or by `*suffix` when it ends with it."""
    return created == name or (created.startswith("*") and name.endswith(created[1:]))


def _brute_force(shares: dict[str, xvigo.Shared], exclude=()) -> tuple[dict, list]:
    after: dict[str, set[str]] = {}
    orphans = []
    for stack, mine in sorted(shares.items()):
        for kind, name in sorted(mine.uses):
            owners = {o for o, theirs in shares.items() if o != stack
                      and any(k == kind and _matches(c, name) for k, c in theirs.creates)}
            if not owners:
                orphans.append((stack, kind, name))
            elif owners - set(exclude):
                after.setdefault(stack, set()).update(owners - set(exclude))
    return after, orphans


def test_implicit_after_finds_the_creators_a_comparison_with_each_would_find() -> None:
    rng = random.Random(7)
    names = ["net", "a_net", "b_net", "ab_net", "*net", "x", "*", "a_data", "*a_data", ""]
    kinds = ["networks", "volumes"]
    for _ in range(600):
        shares = {}
        for stack in rng.sample(["a", "b", "ab", "proxy", "c"], rng.randint(1, 5)):
            pick = [(k, n) for k, n in itertools.product(kinds, names) if rng.random() < 0.15]
            made = [(k, n if n.startswith("*") or rng.random() < 0.5 else f"*{stack}_{n}")
                    for k, n in pick]
            used = [(k, n.lstrip("*")) for k, n in itertools.product(kinds, names)
                    if rng.random() < 0.15]
            shares[stack] = xvigo.Shared(frozenset(made), frozenset(used))
        assert xvigo.implicit_after(shares, ("proxy",)) == _brute_force(shares, ("proxy",))
