"""`vigo check` reports every render problem that would fail a stack on a host as an error
naming the file, and never hands a file over the YAML caps to `docker compose`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.tree import write_tree
from vigo.core.lint import Policy
from vigo.core.render import MAX_FILE_SIZE
from vigo.workstation.check import check, format_text

APP = "services:\n  web:\n    image: ghcr.io/org/app:sha-1234567\n"
BOMB = ("x-bomb:\n  a0: &a0 [l, l, l, l, l, l, l, l, l]\n" + "".join(
    f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 9)) + APP)




def _huge(root: Path) -> None:
    with open(root / "stacks/a/blob.bin", "wb") as f:
        f.truncate(MAX_FILE_SIZE + 1)


def _overlay_folder(root: Path) -> None:
    write_tree(root, {"hosts/h1/stacks/a/conf.ini/x": "x", "stacks/a/conf.ini": "x"})


def _odd(root: Path) -> None:
    (root / os.fsdecode(b"stacks/a/\xff.txt")).write_text("x")


def _no_compose(root: Path) -> None:
    write_tree(root, {"stacks/b/README.md": "x"})


def _bomb(root: Path) -> None:
    write_tree(root, {"stacks/a/compose.yaml": BOMB})


def _fifo(root: Path) -> None:
    os.mkfifo(root / "stacks/a/pipe")


@pytest.mark.parametrize("make, rule, path, words", [
    (_huge, "render", "stacks/a", "over the 16 MiB limit"),
    (_overlay_folder, "render", "stacks/a", "is a file in the base tree and a folder in hosts/h1/"),
    (_odd, "render", "stacks/a", "its name is not UTF-8"),
    (_no_compose, "stack-layout", "stacks/b", "has no compose file"),
    (_bomb, "yaml-caps", "stacks/a/compose.yaml", "alias bomb"),
    (_fifo, "render", "stacks/a", "is not a regular file"),
], ids=["huge", "overlay-file-to-folder", "odd-name", "no-compose", "bomb-under-x", "fifo"])
def test_render_problems_are_check_errors(tmp_path: Path, make, rule, path, words) -> None:
    repo = write_tree(tmp_path, {"stacks/a/compose.yaml": APP})
    make(repo)
    validated: list[Path] = []

    def validate(p: Path) -> str:
        validated.append(p)
        return ""

    found = check(repo, Policy(), validate)
    errors = [f for f in found if f.severity == "error"]
    assert [(f.rule, f.path) for f in errors] == [(rule, path)], [f.message for f in errors]
    assert words in errors[0].message
    lines = format_text(found, repo)
    assert lines[-1].endswith(": 1 error(s), 0 warning(s)") or "1 error(s)" in lines[-1]
    for line in lines:
        line.encode("utf-8")
    if make is _bomb:
        assert not any(p.name == "compose.yaml" and "stacks/a" in str(p) for p in validated)


def test_an_included_bomb_never_reaches_the_validator(tmp_path: Path) -> None:
    repo = write_tree(tmp_path, {"stacks/a/compose.yaml": "include: [../../common/x.yml]\n" + APP,
                                 "common/x.yml": BOMB, "stacks/b/compose.yaml": APP})
    validated: list[str] = []
    found = check(repo, Policy(), lambda p: validated.append(p.parent.name) or "")
    assert [(f.rule, f.path) for f in found if f.severity == "error"] == [
        ("yaml-caps", "common/x.yml")]
    assert validated == ["b"]  # stack a's compose file is never handed to compose
