"""What an idle run knows without reading: the runtime tree's stamp (fs.sync_tree with `keys`),
the state file it loaded (state.save), the engine's list asked early (engine.Asked), and the
render's per-stack lookups (an env file named in a compose file)."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from vigo.adapters import engine, fs
from vigo.core import render
from vigo.host import state

# -- fs.sync_tree: the stamp ---------------------------------------------------------------


class Tree:
    """A source tree, a runtime root and a manifest; `sync` is one sync_tree call whose keys
    are the sources' contents (as render's digests would be)."""

    def __init__(self, tmp: Path, files: dict[str, str]) -> None:
        self.src, self.root = tmp / "src", tmp / "runtime"
        self.manifest = tmp / "state" / "rendered.json"
        self.keys: dict[str, str] = {}
        for rel, text in files.items():
            self.put(rel, text)

    def put(self, rel: str, text: str, key: str | None = None) -> None:
        path = self.src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.keys[rel] = key if key is not None else text

    def sync(self, keep: tuple[str, ...] = (), links: dict | None = None) -> fs.Synced:
        files = {rel: self.src / rel for rel in self.keys}
        return fs.sync_tree(self.root, files, links or {}, keep, self.manifest, keys=self.keys)

    def stamp(self) -> Path:
        return self.manifest.with_name(self.manifest.name + fs.STAMP_SUFFIX)


@pytest.fixture
def trusted(monkeypatch):
    """No racy window: a stamp is trusted as soon as it is written (the tests' clock is the
    file system's; the real window is STAMP_RACY_NS)."""
    monkeypatch.setattr(fs, "STAMP_RACY_NS", -10**12)


def settled(tree: Tree) -> None:
    assert tree.sync().changed  # writes
    assert not tree.sync().changed  # stamps a tree that holds what it should
    assert tree.stamp().is_file()


def test_a_stamped_tree_is_not_read_again(tmp_path, trusted) -> None:
    tree = Tree(tmp_path, {"stacks/app/compose.yaml": "a", "proxy/compose.yaml": "p"})
    settled(tree)
    # the source changes but its key does not: only a read would see it, and none happens
    (tree.src / "stacks/app/compose.yaml").write_text("b")
    assert tree.sync().changed == []
    assert (tree.root / "stacks/app/compose.yaml").read_text() == "a"


@pytest.mark.parametrize("touch", [
    "edit",  # a container with a writable mount rewrites the file
    "same-size",  # ... with the same length
    "chmod",
    "remove",
    "replace",  # a new file renamed over it
    "link",  # a link where the file was
    "folder-link",  # a link where its folder was (the folder moved away, same inodes)
    "manifest",  # the manifest lost: the next change must still know what vigo wrote
])
def test_any_touch_of_a_stamped_tree_is_a_full_sync(tmp_path, trusted, touch) -> None:
    tree = Tree(tmp_path, {"stacks/app/compose.yaml": "aaaa", "stacks/app/conf/x.ini": "x"})
    settled(tree)
    dst = tree.root / "stacks/app/compose.yaml"
    if touch == "edit":
        dst.write_text("evil content")
    elif touch == "same-size":
        dst.write_text("bbbb")
    elif touch == "chmod":
        dst.chmod(0o666)
    elif touch == "remove":
        dst.unlink()
    elif touch == "replace":
        (dst.parent / "tmp").write_text("aaaa")
        os.replace(dst.parent / "tmp", dst)
    elif touch == "link":
        (tmp_path / "elsewhere").write_text("aaaa")
        dst.unlink()
        dst.symlink_to(tmp_path / "elsewhere")
    elif touch == "folder-link":
        conf = tree.root / "stacks/app/conf"
        conf.rename(tree.root / "stacks/app/moved")
        conf.symlink_to("moved")
    elif touch == "manifest":
        tree.manifest.unlink()
    synced = tree.sync()
    if touch == "folder-link":  # the full sync never writes through a link
        assert "stacks/app/conf/x.ini" in synced.errors
        assert not tree.stamp().exists()  # not stamped while a path fails
        return
    assert dst.read_text() == "aaaa" and not dst.is_symlink()
    assert (dst.stat().st_mode & 0o777) == 0o644
    assert tree.manifest.is_file()
    assert not tree.sync().changed and tree.stamp().is_file()


def test_a_new_key_an_exec_bit_or_another_keep_is_a_full_sync(tmp_path, trusted) -> None:
    tree = Tree(tmp_path, {"stacks/app/compose.yaml": "a", "stacks/app/run.sh": "echo"})
    settled(tree)
    tree.put("stacks/app/compose.yaml", "b")  # a new commit: a new digest
    assert tree.sync().changed == ["stacks/app/compose.yaml"]
    settled_again = tree.sync()
    assert not settled_again.changed
    (tree.src / "stacks/app/run.sh").chmod(0o755)  # git's mode change, same content
    assert tree.sync().changed == ["stacks/app/run.sh"]
    assert (tree.root / "stacks/app/run.sh").stat().st_mode & 0o777 == 0o755
    tree.sync()
    (tree.src / "stacks/app/compose.yaml").write_text("c")  # read only if not stamped
    assert tree.sync(keep=("stacks/app/compose.yaml",)).changed == []
    assert (tree.root / "stacks/app/compose.yaml").read_text() == "b"  # kept, not written
    assert tree.sync().changed == ["stacks/app/compose.yaml"]  # keep changed again: read


def test_a_fresh_stamp_is_not_trusted(tmp_path) -> None:
    """Within STAMP_RACY_NS of the stamp a write may have kept its timestamps: read again."""
    tree = Tree(tmp_path, {"stacks/app/compose.yaml": "a"})
    tree.sync()
    tree.sync()
    (tree.src / "stacks/app/compose.yaml").write_text("b")  # same key: only a read sees it
    assert tree.sync().changed == ["stacks/app/compose.yaml"]


def test_links_are_stamped_too(tmp_path, trusted) -> None:
    tree = Tree(tmp_path, {"stacks/app/compose.yaml": "a"})
    links = {"env/app.env": tmp_path / "secrets/env/app.env"}
    assert tree.sync(links=links).changed
    assert not tree.sync(links=links).changed
    link = tree.root / "env/app.env"
    link.unlink()
    link.symlink_to("/etc/passwd")
    assert tree.sync(links=links).changed == ["env/app.env"]
    assert os.readlink(link) == str(tmp_path / "secrets/env/app.env")
    assert tree.sync(links={}).changed == ["env/app.env"]  # another set of links: in full


def test_without_keys_there_is_no_stamp(tmp_path) -> None:
    tree = Tree(tmp_path, {"stacks/app/compose.yaml": "a"})
    files = {rel: tree.src / rel for rel in tree.keys}
    fs.sync_tree(tree.root, files, {}, (), tree.manifest)
    fs.sync_tree(tree.root, files, {}, (), tree.manifest)
    assert not tree.stamp().exists()
    tree.sync()
    tree.sync()
    assert tree.stamp().exists()
    fs.sync_tree(tree.root, files, {}, (), tree.manifest)  # vigo plan, check: leave it be
    assert tree.stamp().exists()


@pytest.mark.parametrize("bad", ["", "[]", '{"want": 1}', "{", '{"want": {}, "paths": []}'])
def test_a_broken_stamp_is_a_full_sync(tmp_path, trusted, bad) -> None:
    tree = Tree(tmp_path, {"stacks/app/compose.yaml": "a"})
    settled(tree)
    tree.stamp().write_text(bad)
    (tree.src / "stacks/app/compose.yaml").write_text("b")  # same key: seen only when read
    assert tree.sync().changed == ["stacks/app/compose.yaml"]


# -- state.save: the file it was loaded from ---------------------------------------------------

def _state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir()
    (folder / "state.json").write_text(json.dumps({
        "version": state.VERSION, "env": {}, "stacks": {"app": {"hash": "h1", "outcome": "ok"}},
        "started": "2026-12-01T00:00:00Z", "finished": "2026-12-01T00:00:01Z"}))
    return folder


def test_an_unchanged_state_is_not_read_or_written_again(tmp_path, monkeypatch) -> None:
    folder = _state(tmp_path)
    st, warning = state.load(folder)
    assert warning == "" and st.on_disk is not None
    before = os.stat(folder / "state.json")
    reads = []
    real = fs.read_json
    monkeypatch.setattr(fs, "read_json", lambda p: (reads.append(p.name), real(p))[1])
    st["started"] = "2026-12-01T00:01:00Z"  # a time: last-run.json only
    state.save(folder, st)
    assert reads == [] and os.stat(folder / "state.json").st_mtime_ns == before.st_mtime_ns
    assert json.loads((folder / "last-run.json").read_text())["started"] == st["started"]
    st.stack("app")["hash"] = "h2"  # a change: compared with the file, written whole
    state.save(folder, st)
    assert json.loads((folder / "state.json").read_text())["stacks"]["app"]["hash"] == "h2"
    reads.clear()
    state.save(folder, st)  # and known again after its own write
    assert reads == []


def test_a_state_file_edited_since_the_load_is_read_again(tmp_path) -> None:
    folder = _state(tmp_path)
    st, _ = state.load(folder)
    time.sleep(0.01)
    edited = json.loads((folder / "state.json").read_text())
    edited["stacks"]["app"]["hash"] = "hand-edit"
    (folder / "state.json").write_text(json.dumps(edited))
    state.save(folder, st)  # what this run holds is what the file must hold
    assert json.loads((folder / "state.json").read_text())["stacks"]["app"]["hash"] == "h1"


def test_a_healed_state_has_no_mark(tmp_path) -> None:
    folder = _state(tmp_path)
    data = json.loads((folder / "state.json").read_text())
    data["stacks"]["app"]["hash"] = 7  # the wrong shape: dropped, the next save writes whole
    (folder / "state.json").write_text(json.dumps(data))
    st, warning = state.load(folder)
    assert "dropped" in warning and st.on_disk is None
    state.save(folder, st)
    assert "hash" not in json.loads((folder / "state.json").read_text())["stacks"]["app"]


# -- engine.Asked: the list asked before it is needed -----------------------------------------

def test_a_question_is_sent_at_once_and_read_later(tmp_path) -> None:
    sock = tmp_path / "d.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock))
    server.listen(1)
    got: list[bytes] = []
    ready = threading.Event()

    def serve() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                got.append(conn.recv(65536))
                ready.set()
                conn.sendall(b'HTTP/1.0 200 OK\r\n\r\n[]')

    threading.Thread(target=serve, daemon=True).start()
    asked = engine.Engine(str(sock), timeout=10).ask("/containers/json?all=1")
    assert ready.wait(10)  # the engine has the request before vigo reads anything
    assert got[0].startswith(b"GET /containers/json?all=1 HTTP/1.0\r\n")
    assert asked.result() == b"[]"
    assert asked.sock is None


def test_a_question_that_cannot_be_sent_fails_where_it_is_read(tmp_path) -> None:
    missing = tmp_path / "none.sock"
    asked = engine.Engine(str(missing)).ask("/containers/json")  # never raises here
    with pytest.raises(engine.EngineError) as later:
        asked.result()
    with pytest.raises(engine.EngineError) as direct:
        engine.Engine(str(missing)).get("/containers/json")
    assert str(later.value) == str(direct.value)
    assert "is dockerd running?" in str(later.value)
    engine.Engine(str(missing)).ask("/x").close()  # dropped unread: nothing to close


# -- render: each stack's share by lookup -----------------------------------------------------

NAMES = ["app.env", "my-app.env", "app.env.bak", "a+b.env", "ünï.env", "x y.env", "db_1.env",
         "v1.2.env", ".env"]
TEXTS = ["env_file: app.env", "env_file: [my-app.env, app.env.bak]", "- ./a+b.env\n",
         "env_file: ünï.env", "env_file: 'x y.env'", "xapp.env app.envx", "db_1.env:",
         "(v1.2.env)", "env_file: .env", "app.env\r\nmy-app.env", ""]


@pytest.mark.parametrize("text", TEXTS)
def test_an_env_file_is_mentioned_as_the_old_search_found_it(text) -> None:
    env_files = {f"env/{n}": Path("/x") / n for n in NAMES}
    index = render._Index({}, set(), env_files)
    expected = {rel for rel in env_files if re.search(
        r"(?<![\w.-])" + re.escape(rel.split("/", 1)[1]) + r"(?![\w.-])", text)}
    assert index.mentioned(text) == expected


def test_a_compose_file_is_read_once_and_as_text(tmp_path) -> None:
    (tmp_path / "stacks/app").mkdir(parents=True)
    (tmp_path / "env").mkdir()
    (tmp_path / "env/db.env").write_text("x")
    (tmp_path / "stacks/app/compose.yaml").write_bytes(b"services: {}\r\nx-env: db.env\r")
    desired = render.render(tmp_path, "h", "r")
    stack = desired.stack("app")
    assert stack is not None and stack.env_files == ("env/db.env",)
    assert desired.digests["stacks/app/compose.yaml"] == render.digest(
        tmp_path / "stacks/app/compose.yaml")


# -- the reconciler: the early list is read once, and only while it is fresh --------------------

class _Compose:
    """Counts the container lists asked the ordinary way."""

    def __init__(self) -> None:
        self.calls = 0

    def containers(self, project: str = "", instance: str = "") -> tuple:
        self.calls += 1
        return ()


@pytest.mark.parametrize("age, fresh_asks", [(0.0, 0), (60.0, 1)])
def test_the_list_asked_before_the_fetch_is_used_only_while_fresh(tmp_path, age, fresh_asks
                                                                  ) -> None:
    from vigo.adapters.compose import Listing
    from vigo.config import Settings
    from vigo.host import reconcile

    rec = reconcile.Reconciler(Settings(repo="x", host="h", state=tmp_path))
    fake = _Compose()
    rec.compose = fake  # type: ignore[assignment]
    closed, read = [], []
    listing = Listing(lambda: (read.append(1), b"[]")[1], lambda: closed.append(1))
    listing.at -= age
    rec.asked = listing
    assert rec._observe({}).containers == ()
    assert (fake.calls, len(read), len(closed)) == (fresh_asks, 1 - fresh_asks, fresh_asks)
    assert rec.asked is None
    rec._observe({})  # read once: the next observe asks again
    assert fake.calls == fresh_asks + 1


# -- the render of an intact checkout, kept --------------------------------------------------

def _repo(tmp: Path) -> Path:
    """A tree with what a render gathers: a proxy, stacks, env files named and interpolated,
    a host overlay (a changed file, an overlay-only stack), another host's placement folder,
    a stack with a problem (two compose files) and files outside any stack."""
    files = {
        "proxy/docker-compose.yml": "services: {traefik: {image: t}}\n",
        "stacks/app/compose.yaml": ("x-vigo: {engine: swarm}\n"
                                    "services: {web: {env_file: [db.env]}}\n"),
        "stacks/app/conf/a.ini": "a=1\n",
        "stacks/two/compose.yaml": "services: {}\n",
        "stacks/two/docker-compose.yml": "services: {}\n",
        "env/global.env": "x", "env/app.env": "x", "env/db.env": "x",
        "hosts/h/stacks/app/conf/a.ini": "a=2\n",
        "hosts/h/stacks/only/compose.yaml": "services: {}\n",
        "hosts/n2/stacks/app/compose.yaml": "services: {}\n",
        "README.md": "hi\n",
    }
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    return tmp


def test_a_kept_render_is_the_render(tmp_path) -> None:
    repo = _repo(tmp_path / "repo")
    desired = render.render(repo, "h", "c" * 40, "compose")
    assert desired.stack("app").placement and desired.stack("two").problems
    assert desired.overlay_stacks == frozenset({"only"}) and desired.has_overlay
    kept = json.loads(json.dumps(render.to_cache(desired, "k")))
    assert render.from_cache(kept, "k") == desired
    assert render.from_cache(kept, "another key") is None
    for broken in ({}, [], {"key": "k"}, {**kept, "stacks": [[1]]}, {**kept, "files": []}):
        assert render.from_cache(broken, "k") is None


def test_the_source_keeps_the_render_of_an_intact_checkout_only(tmp_path, monkeypatch) -> None:
    from vigo.config import Settings
    from vigo.host.source import RENDER_CACHE, Source

    repo = _repo(tmp_path / "checkout")
    s = Settings(repo="x", host="h", state=tmp_path / "state", checkout=repo)
    source = Source(s, None, None, print, None)  # type: ignore[arg-type]
    fresh = source.render_of("c" * 40, "")
    assert not (s.state / RENDER_CACHE).exists()  # not intact: rendered, nothing kept
    assert source.render_of("c" * 40, "stamp-1") == fresh
    assert (s.state / RENDER_CACHE).is_file()
    calls = []
    real = render.render
    monkeypatch.setattr(render, "render", lambda *a, **k: (calls.append(a), real(*a, **k))[1])
    assert source.render_of("c" * 40, "stamp-1") == fresh and calls == []  # the kept one
    assert source.render_of("c" * 40, "stamp-2") == fresh and len(calls) == 1  # a new tree
    assert source.render_of("d" * 40, "stamp-2").revision == "d" * 40  # another commit
    (s.state / RENDER_CACHE).write_text("{")
    assert source.render_of("c" * 40, "stamp-2") == fresh and len(calls) == 3
