"""vigo never follows a link below its own folders (adapters/fs.py): planted links at every
component position, modes whatever the umask, acme.json, and a hypothesis property over random
trees with random links: no operation touches a path outside the root."""

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigo.adapters import fs
from vigo.host.resolve import mount_sources

REL = "stacks/app/data/x/authorized_keys"


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under root (not followed) with its mode and content or link target."""
    out: dict[str, tuple[int, str]] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st_ = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = (st_.st_mode, "-> " + os.readlink(path))
            elif stat.S_ISREG(st_.st_mode):
                out[rel] = (st_.st_mode, path.read_text())
            else:
                out[rel] = (st_.st_mode, "/")
    return out


def look(outside: Path) -> tuple[int, dict[str, tuple[int, str]]]:
    return outside.stat().st_mode, tree(outside)


def sources(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    out = {}
    for rel, text in files.items():
        out[rel] = tmp_path / "src" / rel
        out[rel].parent.mkdir(parents=True, exist_ok=True)
        out[rel].write_text(text)
    return out


def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    root, outside, manifest = tmp_path / "runtime", tmp_path / "outside", tmp_path / "m.json"
    outside.mkdir()
    (outside / "keep").write_text("outside")
    os.chmod(outside, 0o750)
    return root, outside, manifest


POSITIONS = [1, 2, 3, 4]  # stacks | stacks/app | stacks/app/data | stacks/app/data/x


@pytest.mark.parametrize("depth", POSITIONS)
def test_write_through_planted_link_is_refused(tmp_path: Path, depth: int) -> None:
    root, outside, manifest = setup(tmp_path)
    good = "proxy/docker-compose.yml"
    src = sources(tmp_path, {REL: "ssh-ed25519 attacker", good: "proxy"})
    fs.sync_tree(root, {good: src[good]}, {}, (), manifest)
    parts = REL.split("/")
    planted = root.joinpath(*parts[:depth])
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.symlink_to(outside, target_is_directory=True)
    before = tree(outside)
    synced = fs.sync_tree(root, src, {}, (), manifest)
    assert tree(outside) == before
    assert str(planted) in synced.errors[REL] and "symbolic link" in synced.errors[REL]
    assert (root / good).read_text() == "proxy"  # the other paths are written


@pytest.mark.parametrize("depth", [*POSITIONS, 5])
def test_stale_remove_through_planted_link_is_refused(tmp_path: Path, depth: int) -> None:
    root, outside, manifest = setup(tmp_path)
    (outside / "authorized_keys").write_text("the host's own key")
    src = sources(tmp_path, {REL: "from the repo"})
    fs.sync_tree(root, src, {}, (), manifest)
    parts = REL.split("/")
    planted = root.joinpath(*parts[:depth])
    if planted.is_dir():
        os.rename(planted, tmp_path / "moved")
    else:
        planted.unlink()
    target = outside / "authorized_keys" if depth == 5 else outside
    planted.symlink_to(target)
    before = tree(outside)
    synced = fs.sync_tree(root, {}, {}, (), manifest)  # the file is no longer rendered
    assert tree(outside) == before
    if depth == 5:  # the last component: the link itself is removed, never its target
        assert not planted.is_symlink() and synced.errors == {}
    else:
        assert str(planted) in synced.errors[REL]
        assert REL in fs.read_json(manifest)  # retried next run


def test_link_at_the_file_is_replaced_not_written_through(tmp_path: Path) -> None:
    root, outside, manifest = setup(tmp_path)
    src = sources(tmp_path, {REL: "new"})
    dst = root / REL
    dst.parent.mkdir(parents=True)
    dst.symlink_to(outside / "keep")
    before = tree(outside)
    synced = fs.sync_tree(root, src, {}, (), manifest)
    assert synced.errors == {} and tree(outside) == before
    assert not dst.is_symlink() and dst.read_text() == "new"


def test_env_link_folder_planted(tmp_path: Path) -> None:
    root, outside, manifest = setup(tmp_path)
    root.mkdir()
    (root / "env").symlink_to(outside)
    before = tree(outside)
    synced = fs.sync_tree(root, {}, {"env/app.env": Path("/run/vigo/env/app.env")}, (), manifest)
    assert tree(outside) == before and "symbolic link" in synced.errors["env/app.env"]


def test_file_where_a_folder_must_be(tmp_path: Path) -> None:
    root, _, manifest = setup(tmp_path)
    (root / "stacks").mkdir(parents=True)
    (root / "stacks" / "app").write_text("a file")
    synced = fs.sync_tree(root, sources(tmp_path, {REL: "x"}), {}, (), manifest)
    assert "stacks/app is not a folder" in synced.errors[REL]


def test_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    root, _, manifest = setup(tmp_path)
    src = sources(tmp_path, {"stacks/app/config/app.conf": "a", "stacks/app/run.sh": "b"})
    os.chmod(src["stacks/app/run.sh"], 0o755)
    with umask(0o077):
        fs.sync_tree(root, src, {}, (), manifest)
        fs.write_secret(tmp_path / "secrets" / "env" / "a.env", "K=v", root=tmp_path / "secrets")
    for folder in (root, root / "stacks", root / "stacks/app", root / "stacks/app/config"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
    assert stat.S_IMODE((root / "stacks/app/config/app.conf").stat().st_mode) == 0o644
    assert stat.S_IMODE((root / "stacks/app/run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "secrets/env").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "secrets/env/a.env").stat().st_mode) == 0o600
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o600


def test_folders_left_0700_by_an_old_umask_are_opened_up(tmp_path: Path) -> None:
    root, _, manifest = setup(tmp_path)
    (root / "stacks/app/config").mkdir(parents=True, mode=0o700)
    for folder in (root / "stacks", root / "stacks/app", root / "stacks/app/config"):
        os.chmod(folder, 0o700)
    fs.sync_tree(root, sources(tmp_path, {"stacks/app/config/a": "a"}), {}, (), manifest)
    assert stat.S_IMODE((root / "stacks/app/config").stat().st_mode) == 0o755


@pytest.mark.parametrize("depth", [1, 2])
def test_secrets_below_root_never_followed(tmp_path: Path, depth: int) -> None:
    secrets, outside = tmp_path / "secrets", tmp_path / "outside"
    outside.mkdir()
    (outside / "a.env").write_text("host file")
    secrets.mkdir()
    if depth == 1:
        (secrets / "env").symlink_to(outside)
    else:
        (secrets / "env").mkdir()
        (secrets / "env" / "a.env").symlink_to(outside / "a.env")
    before = tree(outside)
    dst = secrets / "env" / "a.env"
    if depth == 1:
        for call in (lambda: fs.write_secret(dst, "K=v", root=secrets),
                     lambda: fs.private_dir(secrets / "env", root=secrets),
                     lambda: fs.remove(dst, root=secrets)):
            with pytest.raises(fs.UnsafePath, match="symbolic link"):
                call()
    else:
        fs.write_secret(dst, "K=v", root=secrets)  # replaces the link itself
        assert not dst.is_symlink()
        fs.remove(dst, root=secrets)
    assert tree(outside) == before


def test_the_root_itself_may_be_an_operators_link(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "state").symlink_to(real)
    fs.write_json(tmp_path / "state" / "state.json", {"a": 1})
    assert fs.read_json(real / "state.json") == {"a": 1}


# -- acme.json -------------------------------------------------------------------------------

def test_acme_json_created_0600_under_umask_077(tmp_path: Path) -> None:
    root = tmp_path / "runtime"
    with umask(0o077):
        assert fs.ensure_private_file(root / "proxy/acme/acme.json", root) == ""
    assert stat.S_IMODE((root / "proxy/acme/acme.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "proxy/acme").stat().st_mode) == 0o755


def test_acme_json_never_truncated_and_tightened(tmp_path: Path) -> None:
    root = tmp_path / "runtime"
    acme = root / "proxy/acme/acme.json"
    acme.parent.mkdir(parents=True)
    acme.write_text('{"certs": 1}')
    os.chmod(acme, 0o644)
    assert fs.ensure_private_file(acme, root) == ""
    assert acme.read_text() == '{"certs": 1}' and stat.S_IMODE(acme.stat().st_mode) == 0o600


@pytest.mark.parametrize("where", ["file", "folder", "proxy"])
def test_acme_json_through_a_link_refused(tmp_path: Path, where: str) -> None:
    root, outside = tmp_path / "runtime", tmp_path / "outside"
    outside.mkdir()
    target = outside / "shadow"
    target.write_text("host secret")
    os.chmod(target, 0o640)
    acme = root / "proxy/acme/acme.json"
    planted = {"file": acme, "folder": acme.parent, "proxy": root / "proxy"}[where]
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.symlink_to(target if where == "file" else outside)
    before = tree(outside)
    err = fs.ensure_private_file(acme, root)
    assert str(planted) in err and "symbolic link" in err
    assert tree(outside) == before


def test_acme_json_folder_refused(tmp_path: Path) -> None:
    root = tmp_path / "runtime"
    (root / "proxy/acme/acme.json").mkdir(parents=True)
    assert "is a folder" in fs.ensure_private_file(root / "proxy/acme/acme.json", root)


# -- bind sources ------------------------------------------------------------------------------

def test_crossed_link(tmp_path: Path) -> None:
    runtime, shared = tmp_path / "runtime", tmp_path / "srv" / "shared"
    (runtime / "stacks/app/data").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (runtime / "stacks/app/data/x").symlink_to(tmp_path / "elsewhere")
    shared.parent.mkdir()
    (tmp_path / "srv" / "linked").symlink_to(tmp_path / "elsewhere")
    shared.mkdir()
    cases = {
        runtime / "stacks/app/data": None,
        runtime / "stacks/app/data/x": runtime / "stacks/app/data/x",
        runtime / "stacks/app/data/x/deeper/y": runtime / "stacks/app/data/x",
        runtime / "stacks/app/missing/z": None,
        shared / "a": None,
        tmp_path / "srv/linked/a": tmp_path / "srv/linked",
        tmp_path / "unlisted": None,  # the policy judges paths no root holds
    }
    allowed = [shared, tmp_path / "srv/linked"]
    for path, want in cases.items():
        assert fs.crossed_link(path, runtime, allowed) == want, path


def test_mount_sources() -> None:
    model = {
        "services": {
            "web": {"volumes": [{"type": "bind", "source": "/r/a"},
                                {"type": "volume", "source": "named"}, "junk"],
                    "env_file": [{"path": "/r/env/a.env", "required": True}, "/r/b.env"]},
            "db": {"env_file": "/r/c.env"},
            "odd": None,
        },
        "configs": {"c": {"file": "/r/conf"}, "e": {"external": True}},
        "secrets": {"s": {"file": "/r/secret"}},
    }
    assert mount_sources(model) == ["/r/a", "/r/env/a.env", "/r/b.env", "/r/c.env", "/r/conf",
                                    "/r/secret"]
    assert mount_sources([]) == [] and mount_sources({"services": []}) == []


# -- property: random trees with random links --------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c", "data", "x"])
RELS = st.lists(NAMES, min_size=1, max_size=4).map("/".join)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.dictionaries(RELS, st.text("xyz", max_size=3), max_size=6),
       second=st.dictionaries(RELS, st.text("xyz", max_size=3), max_size=6),
       planted=st.lists(st.tuples(RELS, st.booleans()), max_size=4),
       keep=st.sets(RELS, max_size=2))
def test_no_operation_touches_outside(tmp_path_factory, first, second, planted, keep) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    root, outside, manifest = tmp / "runtime", tmp / "outside", tmp / "m.json"
    for rel in ("a/b", "x", "data/a"):  # an outside tree that shares names with the inside
        (outside / rel).mkdir(parents=True, exist_ok=True)
        (outside / rel / "a").write_text("outside")
    first = {k: v for k, v in first.items() if not any(o.startswith(k + "/") for o in first)}
    second = {k: v for k, v in second.items() if not any(o.startswith(k + "/") for o in second)}
    fs.sync_tree(root, sources(tmp / "1", first), {}, (), manifest)
    for rel, to_file in planted:  # a container replaces a path by a link to the outside
        path = root / rel
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir() and not path.is_symlink():
                os.rename(path, tmp / f"moved-{len(os.listdir(tmp))}")
            elif path.exists() or path.is_symlink():
                path.unlink()
            path.symlink_to(outside / "x" / "a" if to_file else outside)
    before = look(outside)
    synced = fs.sync_tree(root, sources(tmp / "2", second), {"env/e.env": Path("/run/e")},
                          keep, manifest)
    with contextlib.suppress(OSError):
        fs.ensure_private_file(root / "a" / "b" / "acme.json", root)
    assert look(outside) == before
    for why in synced.errors.values():
        assert str(root) in why


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(made=st.lists(RELS, max_size=4), planted=st.lists(st.tuples(RELS, st.booleans()),
                                                         min_size=1, max_size=3),
       ops=st.lists(st.tuples(st.sampled_from(["write", "remove", "dir", "acme", "json"]),
                              RELS), min_size=1, max_size=6))
def test_secret_and_state_writes_never_leave_the_root(tmp_path_factory, made, planted,
                                                      ops) -> None:
    tmp = tmp_path_factory.mktemp("prop2")
    root, outside = tmp / "secrets", tmp / "outside"
    for rel in ("a", "x/b"):
        (outside / rel).mkdir(parents=True, exist_ok=True)
        (outside / rel / "a").write_text("outside")
    for rel in made:
        with contextlib.suppress(OSError):
            (root / rel).mkdir(parents=True, exist_ok=True)
    for rel, to_file in planted:
        path = root / rel
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir() and not path.is_symlink():
                os.rename(path, tmp / f"moved-{len(os.listdir(tmp))}")
            elif path.exists() or path.is_symlink():
                path.unlink()
            path.symlink_to(outside / "a" / "a" if to_file else outside)
    before = look(outside)
    for op, rel in ops:
        path = root / rel
        with contextlib.suppress(OSError):
            if op == "write":
                fs.write_secret(path, "K=v", root=root)
            elif op == "remove":
                fs.remove(path, root=root)
            elif op == "dir":
                fs.private_dir(path, root=root)
            elif op == "json":
                fs.write_json(path, {"a": 1}, root=root)
            else:
                fs.ensure_private_file(path, root)
    assert look(outside) == before


def test_stale_file_whose_folder_became_a_file_is_gone(tmp_path: Path) -> None:
    root, _, manifest = setup(tmp_path)
    fs.sync_tree(root, sources(tmp_path, {REL: "x"}), {}, (), manifest)
    folder = root / "stacks/app/data/x"
    (folder / "authorized_keys").unlink()
    folder.rmdir()
    folder.write_text("a container's file")
    synced = fs.sync_tree(root, {}, {}, (), manifest)
    assert synced.errors == {} and folder.read_text() == "a container's file"
    assert fs.read_json(manifest) == {}
