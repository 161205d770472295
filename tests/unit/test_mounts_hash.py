"""Every rendered file that reaches a container counts: bind mounts, `configs` and `secrets`
files, inline config content; a change recreates exactly the services that use it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tree import write_tree
from vigo.host.resolve import _mounts_hash

FILES = {"stacks/app/app.conf": "a=1\n", "stacks/app/pw.txt": "s3cret\n",
         "stacks/app/conf.d/x.ini": "x\n", "stacks/app/other.conf": "o\n"}


def model(runtime: Path) -> dict:
    app = runtime / "stacks/app"
    return {
        "configs": {"app": {"file": str(app / "app.conf")}, "inline": {"content": "hello"},
                    "hostfile": {"file": "/etc/hostname"}, "ext": {"external": True}},
        "secrets": {"pw": {"file": str(app / "pw.txt")}},
        "services": {
            "web": {"configs": [{"source": "app", "target": "/etc/app.conf"}]},
            "short": {"configs": ["app"]},
            "api": {"secrets": [{"source": "pw", "target": "/run/secrets/pw"}]},
            "bind": {"volumes": [{"type": "bind", "source": str(app / "conf.d"),
                                  "target": "/etc/conf.d"}]},
            "inline": {"configs": ["inline"]},
            "host": {"configs": ["hostfile", "ext"],
                     "volumes": [{"type": "volume", "source": "data", "target": "/data"}]},
            "plain": {},
        },
    }


def hashes(runtime: Path) -> dict[str, str]:
    m = model(runtime)
    return {name: _mounts_hash(svc, runtime, set(FILES), m) for name, svc in m["services"].items()}


@pytest.mark.parametrize("changed, recreated", [
    pytest.param("stacks/app/app.conf", {"web", "short"}, id="configs-file"),
    pytest.param("stacks/app/pw.txt", {"api"}, id="secrets-file"),
    pytest.param("stacks/app/conf.d/x.ini", {"bind"}, id="bind-mounted-folder"),
    pytest.param("stacks/app/other.conf", set(), id="a-file-no-container-uses"),
])
def test_a_change_reaches_exactly_its_services(tmp_path: Path, changed: str,
                                               recreated: set[str]) -> None:
    write_tree(tmp_path, FILES)
    before = hashes(tmp_path)
    assert before["plain"] == "" and before["host"] == ""
    assert all(before[s] for s in ("web", "short", "api", "bind", "inline"))
    (tmp_path / changed).write_text("changed\n")
    after = hashes(tmp_path)
    assert {s for s in before if before[s] != after[s]} == recreated


def test_inline_content_counts(tmp_path: Path) -> None:
    m = model(tmp_path)
    one = _mounts_hash(m["services"]["inline"], tmp_path, set(), m)
    m["configs"]["inline"]["content"] = "hello again"
    assert _mounts_hash(m["services"]["inline"], tmp_path, set(), m) != one


def test_bind_only_digest_is_unchanged_by_the_model(tmp_path: Path) -> None:
    """A service with bind mounts only keeps the label it had: no recreate on upgrade."""
    (tmp_path / "stacks/app/conf.d").mkdir(parents=True)
    (tmp_path / "stacks/app/conf.d/x.ini").write_text("x\n")
    m = model(tmp_path)
    rendered = {"stacks/app/conf.d/x.ini"}
    assert _mounts_hash(m["services"]["bind"], tmp_path, rendered) == \
        _mounts_hash(m["services"]["bind"], tmp_path, rendered, m)
