"""Hostile repo content, offline: huge files, odd stack names, .gitmodules, the age key's owner
and mode, a lost or corrupt state file; and property-based tests of path rendering (random
trees of files, overlay files and symlinks, rendered and synced into a runtime tree)."""

from __future__ import annotations

import os
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.tree import write_tree
from vigo.adapters.fs import sync_tree
from vigo.adapters.sops import key_problem
from vigo.core.render import GITMODULES_WARNING, MAX_FILE_SIZE, OVERLAY_ROOTS, render
from vigo.host import state

HOST, OTHER = "web-1", "web-2"
BASE = {
    "proxy/docker-compose.yml": "services: {traefik: {image: traefik:v3.1}}\n",
    "stacks/app/docker-compose.yml": "services: {web: {image: app}}\n",
    "stacks/other/docker-compose.yml": "services: {db: {image: postgres}}\n",
    "env/global.env": "G=ENC[...]\n",
    "env/app.env": "A=ENC[...]\n",
}




def huge(path: Path, size: int = MAX_FILE_SIZE + 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # sparse: no 16 MiB written
        f.truncate(size)


# -- huge files -------------------------------------------------------------------------------

@pytest.mark.parametrize("rel, owner", [
    ("stacks/app/data.bin", "app"),
    ("env/app.env", "app"),
    (f"hosts/{HOST}/stacks/app/docker-compose.yml", "app"),
])
def test_a_huge_file_fails_its_stack_naming_file_and_size(tmp_path: Path, rel: str,
                                                           owner: str) -> None:
    repo = write_tree(tmp_path / "repo", BASE)
    huge(repo / rel)
    desired = render(repo, HOST, "rev")
    inner = rel.removeprefix(f"hosts/{HOST}/")
    size = MAX_FILE_SIZE + 1
    assert {s.name: s.problems for s in desired.stacks if s.problems} == {owner: (
        f"{rel} is 16.0 MiB ({size} bytes), over the 16 MiB limit of a rendered file",)}
    assert inner in desired.blocked
    assert inner not in desired.files and inner not in desired.env_files
    assert "stacks/other/docker-compose.yml" in desired.files  # the others render


def test_a_huge_file_outside_any_stack_is_not_copied_with_a_warning(tmp_path: Path) -> None:
    repo = write_tree(tmp_path / "repo", BASE)
    huge(repo / "docs/video.mp4")
    huge(repo / f"hosts/{OTHER}/stacks/app/big.bin")  # another host's: not even a warning
    (repo / "docs/small.txt").write_bytes(b"x" * MAX_FILE_SIZE)  # the limit itself is fine
    desired = render(repo, HOST, "rev")
    assert desired.warnings == (
        f"docs/video.mp4 is 16.0 MiB ({MAX_FILE_SIZE + 1} bytes), over the 16 MiB limit of a "
        "rendered file: not copied",)
    assert "docs/video.mp4" not in desired.files and "docs/small.txt" in desired.files
    assert all(not s.problems for s in desired.stacks)


# -- a file in one tree, a folder in the other (found by the property test below) -------------

@pytest.mark.parametrize("base, mine, why", [
    pytest.param("stacks/app/conf", "stacks/app/conf/x.ini",
                 "stacks/app/conf is a file in the base tree and a folder in hosts/web-1/",
                 id="overlay-folder-over-a-file"),
    pytest.param("stacks/app/conf/x.ini", "stacks/app/conf",
                 "stacks/app/conf is a file in hosts/web-1/ and a folder in the base tree",
                 id="overlay-file-over-a-folder"),
])
def test_file_folder_clash_fails_the_stack(tmp_path: Path, base: str, mine: str,
                                           why: str) -> None:
    repo = write_tree(tmp_path / "repo", {**BASE, base: "base\n", f"hosts/{HOST}/{mine}": "mine\n"})
    desired = render(repo, HOST, "rev")
    assert {s.name: s.problems for s in desired.stacks if s.problems} == {"app": (why,)}
    assert {base, mine} <= desired.blocked and not {base, mine} & set(desired.files)


def test_file_folder_clash_outside_a_stack_is_not_copied(tmp_path: Path) -> None:
    repo = write_tree(tmp_path / "repo", {**BASE, "env/notes": "base\n",
                                          f"hosts/{HOST}/env/notes/a.txt": "mine\n"})
    desired = render(repo, HOST, "rev")
    why = "env/notes is a file in the base tree and a folder in hosts/web-1/: not copied"
    assert desired.warnings == (why,)
    assert not [rel for rel in desired.files if rel.startswith("env/notes")]


def test_sync_reports_a_file_where_a_folder_must_be(tmp_path: Path) -> None:
    runtime, src = tmp_path / "runtime", tmp_path / "src"
    (runtime / "stacks/app").mkdir(parents=True)
    (runtime / "stacks/app/data").write_text("written by a container\n")
    src.write_text("conf\n")
    synced = sync_tree(runtime, {"stacks/app/data/app.ini": src}, {}, (), tmp_path / "m.json")
    assert list(synced.errors) == ["stacks/app/data/app.ini"]
    assert synced.errors["stacks/app/data/app.ini"].startswith(
        f"cannot write {runtime}/stacks/app/data/app.ini: ")
    assert (runtime / "stacks/app/data").read_text() == "written by a container\n"


# -- odd stack names, .gitmodules -----------------------------------------------------------

@pytest.mark.parametrize("name", ["UPPER", "-x", "my app", "a.b", "_x", "é"])
def test_odd_stack_names_fail_that_stack_only(tmp_path: Path, name: str) -> None:
    repo = write_tree(tmp_path / "repo",
                      {**BASE, f"stacks/{name}/docker-compose.yml": "services: {}\n"})
    desired = render(repo, HOST, "rev")
    problems = {s.name: s.problems for s in desired.stacks if s.problems}
    assert problems == {name: (f"stack name {name!r} is not a valid compose project name "
                               "(use lowercase letters, digits, '-' and '_')",)}


def test_gitmodules_is_skipped_with_one_warning(tmp_path: Path) -> None:
    repo = write_tree(tmp_path / "repo", {
        **BASE, ".gitmodules": '[submodule "x"]\n\tpath = stacks/app/sub\n\turl = ../evil\n'})
    desired = render(repo, HOST, "rev")
    assert desired.warnings == (GITMODULES_WARNING,)
    assert ".gitmodules" not in desired.files


# -- the age key --------------------------------------------------------------------------------

def test_age_key_owner_and_mode(tmp_path: Path) -> None:
    key = tmp_path / "keys.txt"
    assert key_problem(key) == ""  # missing: the stacks that need it fail on their own
    key.write_text("AGE-SECRET-KEY-1...\n")
    fix = f"fix: chown root:root {key} && chmod 600 {key}"
    for mode in (0o600, 0o400):
        key.chmod(mode)
        assert key_problem(key) == ""
    for mode in (0o640, 0o604, 0o644, 0o620, 0o602):
        key.chmod(mode)
        assert key_problem(key) == (f"the age key {key} has mode {mode:04o}: group or others "
                                    f"can read or change it; {fix}")
    key.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(key, 4242, 0)
        assert key_problem(key) == (f"the age key {key} is owned by uid 4242, not root: that "
                                    f"user can read every secret; {fix}")


# -- the state file -----------------------------------------------------------------------------

def test_state_lost_or_corrupt_warns_once(tmp_path: Path) -> None:
    assert state.load(tmp_path) == (state.load(tmp_path)[0], "")  # a first run: silent
    (tmp_path / "rendered.json").write_text("{}")
    data, warning = state.load(tmp_path)
    assert data["stacks"] == {} and warning == (
        f"{tmp_path}/state.json is missing; starting from what Docker runs")
    for text in ("", "{garbage", "\0\xff"):
        (tmp_path / "state.json").write_text(text)
        data, warning = state.load(tmp_path)
        assert data["stacks"] == {}
        assert warning.startswith(f"{tmp_path}/state.json is unreadable (")
        assert warning.endswith("); starting from what Docker runs")
    (tmp_path / "state.json").write_text("[1, 2]")
    assert state.load(tmp_path)[1].endswith("has an unknown format; starting from what Docker "
                                            "runs")


# -- property-based: path rendering -------------------------------------------------------------

# Names a hostile repo may hold: dots, dashes, spaces, unicode, look-alikes of '..'.
NAME = st.text(alphabet=string.ascii_letters + string.digits + "._- é", min_size=1,
               max_size=8).filter(lambda s: s not in (".", "..") and s != ".git")
SUBPATH = st.lists(NAME, min_size=1, max_size=3).map("/".join)
ROOT = st.sampled_from(["proxy", "stacks/app", "stacks/other", "stacks/new", "env", "docs",
                        "misc/deep"])
REL = st.tuples(ROOT, SUBPATH).map("/".join)
ENV = st.sampled_from(["env/global.env", "env/app.env", "env/new.env"])
# Symlink targets: inside the repo, relative escapes, absolute paths outside.
TARGET = st.sampled_from(["../../outside.txt", "../../../outside.txt", "/etc/hostname",
                          "/etc", "../docker-compose.yml", "../../stacks/app/docker-compose.yml",
                          "nowhere", ".."])


def _consistent(paths: list[str]) -> list[str]:
    """Drop paths that would need to be both a file and a folder."""
    out: list[str] = []
    for p in paths:
        if any(q == p or q.startswith(p + "/") or p.startswith(q + "/") for q in out):
            continue
        out.append(p)
    return out


@st.composite
def trees(draw: st.DrawFn) -> dict[str, object]:
    base = _consistent(draw(st.lists(st.one_of(REL, ENV), max_size=12)))
    mine = _consistent(draw(st.lists(st.one_of(REL, ENV), max_size=8)))
    other = _consistent(draw(st.lists(st.one_of(REL, ENV), max_size=6)))
    links = _consistent(draw(st.lists(REL, max_size=4)))
    return {"base": base, "mine": mine, "other": other,
            "links": {p: draw(TARGET) for p in links if p not in base}}


def _materialize(repo: Path, tree: dict) -> dict[str, str]:
    """Write the tree; every file holds its own repo path. Returns path -> content."""
    written: dict[str, str] = {}
    plan = [(rel, rel) for rel in tree["base"]]
    plan += [(f"hosts/{HOST}/{rel}", f"hosts/{HOST}/{rel}") for rel in tree["mine"]]
    plan += [(f"hosts/{OTHER}/{rel}", f"hosts/{OTHER}/{rel}") for rel in tree["other"]]
    for rel, content in plan:
        path = repo / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            continue  # a file/folder clash across the three sets: not part of this example
        written[rel] = content
    for rel, target in tree["links"].items():
        path = repo / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target)
        except (FileExistsError, NotADirectoryError):
            continue
    return written


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees())
@example(tree={"base": [], "mine": ["env/0"], "other": [],  # found by hypothesis
               "links": {"env/0": "../../outside.txt"}})
@example(tree={"base": ["proxy/0/0"], "mine": ["proxy/0"], "other": [], "links": {}})
@example(tree={"base": ["proxy/0"], "mine": ["proxy/0/0"], "other": [], "links": {}})
def test_rendered_paths_stay_inside_and_overlays_win_exactly(tree: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        (top / "outside.txt").write_text("OUTSIDE\n")
        repo = top / "repo"
        repo.mkdir()
        written = _materialize(repo, tree)
        real = repo.resolve()
        desired = render(repo, HOST, "rev")
        rendered = {**desired.files, **desired.env_files}

        # 1. every rendered path is relative and clean; the file copied there is inside the
        # repo (a refused base symlink may share its path with an overlay file, which wins)
        for rel, src in rendered.items():
            parts = rel.split("/")
            assert not rel.startswith("/") and ".." not in parts and "" not in parts, rel
            assert not rel.startswith("hosts/") and rel != ".gitmodules"
            assert src.resolve().is_relative_to(real), (rel, src)
            assert src.read_text() != "OUTSIDE\n"

        # 2. an overlay file of this host wins exactly at its path (under proxy/ stacks/ env/)
        overlay = {rel[len(f"hosts/{HOST}/"):]: c for rel, c in written.items()
                   if rel.startswith(f"hosts/{HOST}/")}
        for inner, content in overlay.items():
            if inner.startswith(OVERLAY_ROOTS) and inner in rendered:
                assert rendered[inner].read_text() == content
        for rel, src in rendered.items():
            content = src.read_text()
            if rel in overlay and rel.startswith(OVERLAY_ROOTS):
                assert content == overlay[rel]
            elif not (repo / rel).is_symlink():
                assert content == rel, (rel, content)  # the base file, nobody else's

        # 3. nothing from another host's overlay, nor from this host's outside the roots
        for src in rendered.values():
            assert not src.read_text().startswith(f"hosts/{OTHER}/")
            assert not src.resolve().is_relative_to(real / "hosts" / OTHER)

        # 4. synced into a runtime tree, every file lands inside it and nowhere else
        runtime = top / "runtime"
        links = {rel: top / "secrets" / rel for rel in desired.env_files}
        synced = sync_tree(runtime, desired.files, links, desired.blocked,
                           top / "state" / "rendered.json")
        assert not synced.errors and not synced.warning
        on_disk = set()
        for dirpath, _dirs, names in os.walk(runtime):
            for name in names:
                path = Path(dirpath) / name
                assert path.absolute().is_relative_to(runtime)
                on_disk.add(path.relative_to(runtime).as_posix())
        assert on_disk == set(desired.files) | set(links)
        for rel in desired.files:
            assert not (runtime / rel).is_symlink()  # copies, never the repo's links
        assert {p.name for p in top.iterdir()} <= {"outside.txt", "repo", "runtime", "state"}
        assert (top / "outside.txt").read_text() == "OUTSIDE\n"
