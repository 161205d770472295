"""render against hostile trees: loops, odd names, unreadable paths, file/folder swaps, deep
trees, every compose file name. Each becomes a problem of the stack that owns the path (or a
run-level error outside a stack), never an exception and never a silently missing stack."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.tree import write_tree
from vigo.core import render as render_module
from vigo.core.render import MAX_DEPTH, compose_problems, render, shown

HOST = "web-1"
GOOD = "services: {web: {image: app}}\n"
BASE = {"stacks/good/compose.yaml": GOOD, "stacks/app/docker-compose.yml": GOOD}




def problems(root: Path) -> dict[str, tuple[str, ...]]:
    desired = render(root, HOST, "rev")
    assert desired.stack("good") is not None and not desired.stack("good").problems
    return {s.name: s.problems for s in desired.stacks if s.problems}


def _loop(root: Path) -> None:
    os.symlink("b", root / "stacks/app/a")
    os.symlink("a", root / "stacks/app/b")


def _self_loop(root: Path) -> None:
    os.symlink("me", root / "stacks/app/me")


def _non_utf8(root: Path) -> None:
    (root / os.fsdecode(b"stacks/app/caf\xe9.txt")).write_text("x")


def _newline(root: Path) -> None:
    (root / "stacks/app/a\nb.txt").write_text("x")


def _control(root: Path) -> None:
    (root / "stacks/app/bell\x07").write_text("x")


def _odd_folder(root: Path) -> None:
    (root / os.fsdecode(b"stacks/app/d\xff")).mkdir()
    (root / os.fsdecode(b"stacks/app/d\xff/x")).write_text("x")


def _fifo(root: Path) -> None:
    os.mkfifo(root / "stacks/app/pipe")


def _deep(root: Path) -> None:
    path = root / "stacks/app"
    for _ in range(MAX_DEPTH + 5):
        path = path / "d"
    path.mkdir(parents=True)
    (path / "x").write_text("x")


def _compose_is_folder(root: Path) -> None:
    (root / "stacks/app/docker-compose.yml").unlink()
    (root / "stacks/app/docker-compose.yml").mkdir()
    (root / "stacks/app/docker-compose.yml/x").write_text("x")


def _renamed(root: Path) -> None:
    (root / "stacks/app/docker-compose.yml").unlink()
    (root / "stacks/app/README.md").write_text("x")


def _overlay_file_becomes_folder(root: Path) -> None:
    (root / f"hosts/{HOST}/stacks/app/docker-compose.yml").mkdir(parents=True)
    (root / f"hosts/{HOST}/stacks/app/docker-compose.yml/x").write_text("x")


@pytest.mark.parametrize("make, expected", [
    pytest.param(_loop, ["stacks/app/a is a symlink loop", "stacks/app/b is a symlink loop"],
                 id="symlink-loop"),
    pytest.param(_self_loop, ["stacks/app/me is a symlink loop"], id="symlink-to-itself"),
    pytest.param(_non_utf8, ["stacks/app/caf\\xe9.txt: its name is not UTF-8; rename it"],
                 id="non-utf8-name"),
    pytest.param(_newline, ["stacks/app/a\\nb.txt: its name holds a control character (a "
                            "newline, a tab, ...); rename it"], id="newline-in-name"),
    pytest.param(_control, ["stacks/app/bell\\x07: its name holds a control character (a "
                            "newline, a tab, ...); rename it"], id="control-char"),
    pytest.param(_odd_folder, ["stacks/app/d\\xff: its name is not UTF-8; rename it"],
                 id="non-utf8-folder"),
    pytest.param(_fifo, ["stacks/app/pipe is not a regular file (a FIFO, socket or device); "
                         "remove it"], id="fifo"),
    pytest.param(_deep, ["stacks/app/" + "d/" * (MAX_DEPTH - 2) + f": folders nest more than "
                         f"{MAX_DEPTH} levels deep; flatten the tree"], id="deep-tree"),
    pytest.param(_compose_is_folder, ["stacks/app/docker-compose.yml is a folder, not a compose "
                                      "file: make it a file"], id="compose-file-is-a-folder"),
    pytest.param(_renamed, ["stacks/app/ has no compose file (compose.yaml, compose.yml, "
                            "docker-compose.yml, docker-compose.yaml): add one, or remove the "
                            "folder to remove the stack (its containers keep running until "
                            "then)"], id="compose-file-renamed-away"),
    pytest.param(_overlay_file_becomes_folder,
                 ["stacks/app/docker-compose.yml is a file in the base tree and a folder in "
                  f"hosts/{HOST}/"], id="overlay-turns-file-into-folder"),
])
def test_hostile_paths_fail_their_stack_only(tmp_path: Path, make, expected) -> None:
    root = write_tree(tmp_path, BASE)
    make(root)
    found = problems(root)
    assert list(found) == ["app"]
    for line in expected:
        assert line in found["app"], found["app"]
    for line in found["app"]:
        line.encode("utf-8")  # printable: no surrogate, no raw newline
        assert "\n" not in line


def test_an_unreadable_stack_folder_fails_the_stack(tmp_path: Path, monkeypatch) -> None:
    root = write_tree(tmp_path, {**BASE, "stacks/app/conf/x.ini": "x"})
    real = os.scandir

    def scandir(path):
        if str(path).endswith("stacks/app/conf"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(render_module.os, "scandir", scandir)
    assert problems(root) == {"app": (
        "stacks/app/conf/ cannot be read (Permission denied): fix its owner and permissions",)}


def test_an_unreadable_stack_root_keeps_the_stack(tmp_path: Path, monkeypatch) -> None:
    root = write_tree(tmp_path, BASE)
    real = os.scandir
    monkeypatch.setattr(render_module.os, "scandir", lambda p: (
        (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
        if str(p).endswith("stacks/app") else real(p)))
    desired = render(root, HOST, "rev")
    assert desired.stack("app") is not None and desired.stack("app").problems == (
        "stacks/app/ cannot be read (Permission denied): fix its owner and permissions",)


def test_an_unreadable_file_fails_its_stack(tmp_path: Path, monkeypatch) -> None:
    root = write_tree(tmp_path, {**BASE, "stacks/app/key.pem": "x"})
    real = render_module.digest

    def digest(path: Path) -> str:
        if path.name == "key.pem":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(render_module, "digest", digest)
    assert problems(root) == {"app": (
        "stacks/app/key.pem cannot be read (Permission denied): fix its owner and permissions",)}


@pytest.mark.parametrize("folder", ["stacks", "", "env", f"hosts/{HOST}",
                                    f"hosts/{HOST}/stacks"])
def test_an_unreadable_folder_outside_a_stack_is_a_run_error(tmp_path: Path, monkeypatch,
                                                              folder: str) -> None:
    root = write_tree(tmp_path, {**BASE, f"hosts/{HOST}/stacks/x/compose.yaml": GOOD,
                                 "env/app.env": "A=1\n"})
    real = os.scandir
    target = str(root / folder) if folder else str(root)
    monkeypatch.setattr(render_module.os, "scandir", lambda p: (
        (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
        if str(p).rstrip("/") == target.rstrip("/") else real(p)))
    desired = render(root, HOST, "rev")
    where = f"{folder}/" if folder else "the repo"
    assert desired.error == (f"{where} cannot be read (Permission denied): fix its owner and "
                             "permissions")


def test_another_hosts_unreadable_overlay_is_not_our_business(tmp_path: Path,
                                                              monkeypatch) -> None:
    root = write_tree(tmp_path, {**BASE, "hosts/other/stacks/x/compose.yaml": GOOD})
    real = os.scandir
    monkeypatch.setattr(render_module.os, "scandir", lambda p: (
        (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
        if str(p).endswith("hosts/other") else real(p)))
    desired = render(root, HOST, "rev")
    assert desired.error == "" and not any(s.problems for s in desired.stacks)


@pytest.mark.parametrize("names, compose_file, expected", [
    (["compose.yaml"], "compose.yaml", []),
    (["compose.yml"], "compose.yml", []),
    (["docker-compose.yaml"], "docker-compose.yaml", []),
    (["docker-compose.yml"], "docker-compose.yml", []),
    (["docker-compose.yml", "compose.yml"], "compose.yml",
     ["stacks/app/compose.yml and stacks/app/docker-compose.yml both exist: keep one compose "
      "file"]),
    (["docker-compose.yaml", "docker-compose.yml"], "docker-compose.yml",  # compose's own pick
     ["stacks/app/docker-compose.yaml and stacks/app/docker-compose.yml both exist: keep one "
      "compose file"]),
    (["compose.yaml", "compose.yml", "docker-compose.yml"], "compose.yaml",
     ["stacks/app/compose.yaml and stacks/app/compose.yml and stacks/app/docker-compose.yml all "
      "exist: keep one compose file"]),
    (["compose.yaml", "compose.override.yml"], "compose.yaml",
     ["stacks/app/compose.override.yml: compose would merge this override file and vigo does "
      "not: fold it into stacks/app/compose.yaml, or use a hosts/<host>/ overlay"]),
    (["docker-compose.yml", "docker-compose.override.yaml"], "docker-compose.yml",
     ["stacks/app/docker-compose.override.yaml: compose would merge this override file and "
      "vigo does not: fold it into stacks/app/docker-compose.yml, or use a hosts/<host>/ "
      "overlay"]),
])
def test_every_compose_file_name(tmp_path: Path, names, compose_file, expected) -> None:
    root = write_tree(tmp_path, {"stacks/good/compose.yaml": GOOD,
                                 **{f"stacks/app/{n}": GOOD for n in names}})
    app = render(root, HOST, "rev").stack("app")
    assert app is not None
    assert (app.compose_file, list(app.problems)) == (f"stacks/app/{compose_file}", expected)


def test_compose_problems_is_the_one_discovery() -> None:
    assert compose_problems("proxy", {"proxy/compose.yml"}) == []
    assert compose_problems("proxy", {"proxy/x/compose.yml"}) == [
        "proxy/ has no compose file (compose.yaml, compose.yml, docker-compose.yml, "
        "docker-compose.yaml): add one, or remove the folder to remove the stack (its "
        "containers keep running until then)"]


def test_overlay_only_stacks_are_named(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {**BASE, f"hosts/{HOST}/stacks/mine/compose.yaml": GOOD,
                                 f"hosts/{HOST}/stacks/app/docker-compose.yml": GOOD})
    desired = render(root, HOST, "rev")
    assert desired.has_overlay and desired.overlay_stacks == {"mine"}
    assert not render(root, "elsewhere", "rev").has_overlay


def test_shown_escapes_what_would_break_a_line() -> None:
    assert shown(os.fsdecode(b"a\xffb\nc\td")) == "a\\xffb\\nc\\td"
    assert shown("ünï cödé") == "ünï cödé"


# -- property: whatever the tree, render returns; a stack folder never vanishes ---------------

_PART = st.sampled_from(["a", "compose.yaml", "compose.yml", "docker-compose.yml",
                         "compose.override.yml", "x.env", os.fsdecode(b"\xff"), "n\nl", "t\tb",
                         "d"])
_STACK = st.sampled_from(["app", "web", "db"])


@st.composite
def _hostile_trees(draw: st.DrawFn) -> dict[str, object]:
    files = draw(st.lists(st.tuples(st.sampled_from(["stacks", "proxy", "env", "docs",
                                                     f"hosts/{HOST}/stacks"]), _STACK,
                                    st.lists(_PART, min_size=1, max_size=3)), max_size=10))
    links = draw(st.lists(st.tuples(_STACK, _PART, st.sampled_from(
        ["loop", "self", "../../outside", "compose.yaml", "nowhere"])), max_size=3))
    return {"files": files, "links": links}


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(tree=_hostile_trees())
def test_render_returns_and_never_loses_a_stack(tmp_path_factory, tree) -> None:
    repo = tmp_path_factory.mktemp("repo")
    for top, stack, parts in tree["files"]:
        base = repo / top if top in ("proxy", "env", "docs") else repo / top / stack
        path = base.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("services: {}\n")
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            continue
    for stack, name, target in tree["links"]:
        folder = repo / "stacks" / stack
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / name
        if link.exists() or link.is_symlink():
            continue
        link.symlink_to({"loop": name + "2", "self": name}.get(target, target))
        if target == "loop" and not (folder / (name + "2")).is_symlink():
            (folder / (name + "2")).symlink_to(name)
    desired = render(repo, HOST, "rev")
    names = {s.name for s in desired.stacks}
    for folder in [*(repo / "stacks").glob("*"), *(repo / f"hosts/{HOST}/stacks").glob("*")]:
        if folder.is_dir() and not folder.is_symlink() and any(folder.iterdir()):
            assert folder.name in names, (folder, names)  # failing, maybe, but never gone
    for stack in desired.stacks:
        for line in stack.problems:
            assert "\n" not in line and "\t" not in line
            line.encode("utf-8")
    for line in desired.warnings:
        assert "\n" not in line
        line.encode("utf-8")
