"""Table-driven tests of the pure-ish adapter helpers: fs.sync_tree over tmp_path trees (a list of
renders in, the runtime tree and the last call's changes out) and run.Masker."""

import os
import stat
from pathlib import Path

import pytest

from vigo.adapters import fs
from vigo.adapters.fs import filesystem_type, mount_type, sync_tree
from vigo.adapters.run import Masker

T1, T2 = "/run/vigo/env/app.env", "/run/vigo2/env/app.env"
BASE = {"proxy/docker-compose.yml": "proxy", "stacks/app/docker-compose.yml": "app"}


def step(files=None, links=None, keep=(), host=None) -> dict:
    """One sync_tree call; `host` files are written into the runtime tree just before it."""
    return {"files": files or {}, "links": links or {}, "keep": keep, "host": host or {}}


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            out[rel] = f"-> {os.readlink(path)}" if path.is_symlink() else path.read_text()
    return out


def sync(tmp_path: Path, steps: list[dict]) -> tuple[Path, list[str]]:
    root, manifest = tmp_path / "runtime", tmp_path / "state" / "manifest.json"
    changed: list[str] = []
    for i, s in enumerate(steps):
        for rel, content in s["host"].items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(content)
        sources = {}
        for rel, content in s["files"].items():
            sources[rel] = tmp_path / "src" / str(i) / rel
            sources[rel].parent.mkdir(parents=True, exist_ok=True)
            sources[rel].write_text(content)
        links = {rel: Path(target) for rel, target in s["links"].items()}
        changed = sync_tree(root, sources, links, s["keep"], manifest).changed
    return root, changed


@pytest.mark.parametrize("steps, tree, changed, absent", [
    pytest.param([step(BASE, {"env/app.env": T1})], {**BASE, "env/app.env": f"-> {T1}"},
                 [*BASE, "env/app.env"], [], id="writes-files-and-links"),
    pytest.param([step(BASE), step(BASE)], BASE, [], [], id="idempotent"),
    pytest.param([step(BASE, {"env/app.env": T1}), step(BASE, {"env/app.env": T1})],
                 {**BASE, "env/app.env": f"-> {T1}"}, [], [], id="idempotent-with-links"),
    pytest.param([step(BASE), step(BASE, host={"proxy/docker-compose.yml": "edited"})], BASE,
                 ["proxy/docker-compose.yml"], [], id="hand-edit-is-undone"),
    pytest.param([step(BASE), step({"proxy/docker-compose.yml": "proxy"},
                                   host={"proxy/acme/acme.json": "{}",
                                         "stacks/app/data/db": "rows"})],
                 {"proxy/docker-compose.yml": "proxy", "proxy/acme/acme.json": "{}",
                  "stacks/app/data/db": "rows"}, ["stacks/app/docker-compose.yml"], [],
                 id="host-written-files-left-alone"),
    pytest.param([step({**BASE, "stacks/old/docker-compose.yml": "o", "stacks/old/conf/x": "x"}),
                  step({"proxy/docker-compose.yml": "proxy"})],
                 {"proxy/docker-compose.yml": "proxy"},
                 ["stacks/app/docker-compose.yml", "stacks/old/conf/x",
                  "stacks/old/docker-compose.yml"], ["stacks"], id="stale-removed-folders-pruned"),
    pytest.param([step(BASE), step({**BASE, "stacks/app/docker-compose.yml": "v2"},
                                   keep={"stacks/app/docker-compose.yml"})],
                 BASE, [], [], id="keep-not-overwritten"),
    pytest.param([step(BASE), step({"proxy/docker-compose.yml": "proxy"},
                                   keep={"stacks/app/docker-compose.yml"})],
                 BASE, [], [], id="keep-not-removed"),
    pytest.param([step(BASE), step({"proxy/docker-compose.yml": "proxy"},
                                   keep={"stacks/app/docker-compose.yml"}),
                  step({"proxy/docker-compose.yml": "proxy"})],
                 {"proxy/docker-compose.yml": "proxy"}, ["stacks/app/docker-compose.yml"],
                 ["stacks"], id="kept-path-removed-once-released"),
    pytest.param([step(links={"env/app.env": T1}), step(links={"env/app.env": T2})],
                 {"env/app.env": f"-> {T2}"}, ["env/app.env"], [], id="link-replaced"),
    pytest.param([step({"env/app.env": "x"}), step(links={"env/app.env": T1})],
                 {"env/app.env": f"-> {T1}"}, ["env/app.env"], [], id="file-becomes-link"),
    pytest.param([step(links={"env/app.env": T1}), step({"env/app.env": "x"})],
                 {"env/app.env": "x"}, ["env/app.env"], [], id="link-becomes-file"),
    pytest.param([step(BASE, {"env/app.env": T1}), step(BASE)], BASE, ["env/app.env"], ["env"],
                 id="link-removed"),
    pytest.param([step({"stacks/app/conf": "file"}), step({"stacks/app/conf/x.ini": "x"})],
                 {"stacks/app/conf/x.ini": "x"}, ["stacks/app/conf", "stacks/app/conf/x.ini"], [],
                 id="file-becomes-folder"),
])
def test_sync_tree(tmp_path, steps, tree, changed, absent):
    root, last = sync(tmp_path, steps)
    assert snapshot(root) == tree
    assert sorted(last) == sorted(changed)
    assert [p for p in absent if (root / p).exists()] == []


@pytest.mark.parametrize("executable, mode", [(False, 0o644), (True, 0o755)])
def test_sync_tree_mode(tmp_path, executable, mode):
    src = tmp_path / "entry.sh"
    src.write_text("#!/bin/sh\n")
    src.chmod(0o755 if executable else 0o644)
    sync_tree(tmp_path / "rt", {"stacks/app/entry.sh": src}, {}, (), tmp_path / "m.json")
    assert stat.S_IMODE((tmp_path / "rt/stacks/app/entry.sh").stat().st_mode) == mode


def test_sync_tree_folder_in_the_way_does_not_stop_other_files(tmp_path):
    """Docker makes a folder for a missing bind-mount source: only that path fails."""
    (tmp_path / "rt/stacks/app/config.yml").mkdir(parents=True)
    (tmp_path / "src").write_text("x")
    files = {rel: tmp_path / "src"
             for rel in ("stacks/app/config.yml", "stacks/web/docker-compose.yml")}
    synced = sync_tree(tmp_path / "rt", files, {}, (), tmp_path / "m.json")
    assert (tmp_path / "rt/stacks/web/docker-compose.yml").is_file()
    assert list(synced.errors) == ["stacks/app/config.yml"]
    assert "is a folder" in synced.errors["stacks/app/config.yml"]


PEM = "-----BEGIN KEY-----\nMIIEvQIBADANBgkq\n-----END KEY-----"


@pytest.mark.parametrize("values, text, masked", [
    pytest.param(["hunter22"], "password=hunter22 ok", "password=*** ok", id="masked"),
    pytest.param(["abc"], "abc is too short", "abc is too short", id="short-not-masked"),
    pytest.param(["abcd"], "abcd abcd", "*** ***", id="four-chars-masked"),
    pytest.param([PEM], f"key:\n{PEM}\n", "key:\n***\n", id="multi-line-whole"),
    pytest.param([PEM], "line MIIEvQIBADANBgkq leaked", "line *** leaked",
                 id="multi-line-each-line"),
    pytest.param(["ab\nsecret-line"], "ab secret-line", "ab ***", id="short-lines-not-masked"),
    pytest.param(["secret", "secret-long"], "secret-long secret", "*** ***",
                 id="longest-first"),
    pytest.param(["  padded-secret  "], "x padded-secret x", "x *** x", id="stripped"),
    pytest.param([], "nothing registered", "nothing registered", id="empty"),
])
def test_masker(values, text, masked):
    mask = Masker()
    mask.add(values)
    assert mask(text) == masked


MOUNTS = """\
/dev/vda1 / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid 0 0
tmpfs /run tmpfs rw,nosuid 0 0
tmpfs /run/vigo tmpfs rw,nosuid 0 0
tmpfs /dev/shm tmpfs rw 0 0
/dev/vdb1 /srv/my\\040data xfs rw 0 0
overlay /var/lib/docker/overlay2/abc/merged overlay rw 0 0
short
"""


@pytest.mark.parametrize(("where", "kind"), [
    ("/", "ext4"),
    ("/etc/vigo", "ext4"),
    ("/run", "tmpfs"),
    ("/run/vigo", "tmpfs"),  # the innermost mount
    ("/run/vigo/env", "tmpfs"),
    ("/run/vigofoo", "tmpfs"),  # /run, not /run/vigo: a prefix of the name is not a parent
    ("/runner", "ext4"),
    ("/dev/shm/x", "tmpfs"),
    ("/srv/my data/secrets", "xfs"),  # \040 is a space
    ("/srv/my", "ext4"),
    ("/var/lib/docker/overlay2/abc/merged/etc", "overlay"),
    ("/var/lib/docker/overlay2/abcd", "ext4"),
])
def test_mount_type_is_the_innermost_mount(where: str, kind: str) -> None:
    assert mount_type(where, MOUNTS) == kind


def test_mount_type_without_a_match_and_of_a_real_path(tmp_path: Path) -> None:
    assert mount_type("/srv", "proc /proc proc rw 0 0\n") == ""
    assert filesystem_type(tmp_path / "missing" / "deeper") == filesystem_type(tmp_path)


def test_set_link_points_replaces_and_removes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "docker").mkdir(parents=True)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    link = root / "docker" / "contexts"
    fs.set_link(link, one, root=root)
    assert os.readlink(link) == str(one)
    fs.set_link(link, one, root=root)  # already so: left alone
    fs.set_link(link, two, root=root)
    assert os.readlink(link) == str(two)
    link.unlink()
    link.write_text("not a link")  # something else there: replaced
    fs.set_link(link, one, root=root)
    assert os.readlink(link) == str(one)
    fs.set_link(link, None, root=root)
    assert not link.exists() and not link.is_symlink()
    fs.set_link(link, None, root=root)  # nothing there: fine
    (root / "up").symlink_to(tmp_path)  # a folder on the way that is a link is refused
    with pytest.raises(fs.UnsafePath):
        fs.set_link(root / "up" / "x", one, root=root)
