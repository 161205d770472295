"""Inputs that crashed a run or pruned a running stack, end to end (real engine, git, sops):
each sits in a commit next to a good stack; the good stack is applied, the bad one fails with
its line while its running containers stay, the run exits 1, and the next good commit
converges. The alias bomb (also under an `x-` key) is refused in seconds: the time is printed."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Host
from tests.support import light

BOMB = ("{key}:\n  a0: &a0 [l, l, l, l, l, l, l, l, l]\n" + "".join(
    f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 10)))


def ids(host: Host, stack: str) -> set[str]:
    return {str(c["Id"]) for c in host.containers(stack)}


def _loop(work: Path) -> None:
    os.symlink("b", work / "stacks/alpha/a")
    os.symlink("a", work / "stacks/alpha/b")


def _non_utf8(work: Path) -> None:
    (work / os.fsdecode(b"stacks/alpha/caf\xe9.txt")).write_text("x")


def _newline(work: Path) -> None:
    (work / "stacks/alpha/a\nb.txt").write_text("x")


def _deep_labels(work: Path) -> None:
    (work / "stacks/alpha/docker-compose.yml").write_text(light.compose(
        "alpha", extra="    labels: " + "[" * 20_000 + "]" * 20_000 + "\n"))


def _bomb(key: str) -> Callable[[Path], None]:
    def make(work: Path) -> None:
        (work / "stacks/alpha/docker-compose.yml").write_text(
            BOMB.format(key=key) + light.compose("alpha"))
    return make


def _compose_is_folder(work: Path) -> None:
    (work / "stacks/alpha/docker-compose.yml").unlink()
    (work / "stacks/alpha/docker-compose.yml").mkdir()
    (work / "stacks/alpha/docker-compose.yml/x").write_text("x")


def _renamed_away(work: Path) -> None:
    (work / "stacks/alpha/docker-compose.yml").rename(work / "stacks/alpha/docker-compose.yml.bak")


def _override(work: Path) -> None:
    (work / "stacks/alpha/compose.override.yml").write_text("services: {web: {privileged: true}}\n")


def _overlay_folder(work: Path) -> None:
    (work / "hosts/testhost/stacks/alpha/docker-compose.yml").mkdir(parents=True)
    (work / "hosts/testhost/stacks/alpha/docker-compose.yml/x").write_text("x")


def _another_stacks_env(work: Path) -> None:
    (work / "stacks/alpha/docker-compose.yml").write_text(
        light.compose("alpha").replace("../../env/alpha.env", "../../env/${X:-beta}.env"))


@pytest.mark.parametrize("make, line", [
    (_loop, "stacks/alpha/a is a symlink loop"),
    (_non_utf8, "stacks/alpha/caf\\xe9.txt: its name is not UTF-8; rename it"),
    (_newline, "stacks/alpha/a\\nb.txt: its name holds a control character"),
    (_deep_labels, "nests mappings and sequences more than 64 levels deep"),
    (_bomb("x-bomb"), "YAML aliases expand to more than 100000 nodes (an alias bomb?)"),
    (_bomb("bomb"), "YAML aliases expand to more than 100000 nodes (an alias bomb?)"),
    (_compose_is_folder, "stacks/alpha/docker-compose.yml is a folder, not a compose file"),
    (_renamed_away, "stacks/alpha/ has no compose file (compose.yaml, compose.yml, "),
    (_override, "stacks/alpha/compose.override.yml: compose would merge this override file"),
    (_overlay_folder, "stacks/alpha/docker-compose.yml is a file in the base tree and a folder "
                      "in hosts/testhost/"),
    (_another_stacks_env, "env_file '../../env/${X:-beta}.env' is chosen by a variable"),
], ids=["symlink-loop", "non-utf8-name", "newline-name", "labels-20000-deep", "bomb-under-x",
        "bomb-top-level", "compose-becomes-folder", "compose-renamed-away", "override-file",
        "overlay-turns-file-into-folder", "env-file-of-another-stack"])
def test_hostile_input_fails_its_stack_and_keeps_it_running(host: Host, make, line) -> None:
    light.seed(host, "alpha", "beta")
    host.apply()
    before = ids(host, "alpha")
    assert before
    ran_with = (host.runtime / "stacks/alpha/docker-compose.yml").read_text()
    make(host.repo.work)
    light.add(host, "gamma")  # the good stack of the same commit
    host.repo.commit("hostile input")
    started = time.monotonic()
    res = host.apply(expect=1)
    print(f"hostile apply: {time.monotonic() - started:.1f}s")
    out = res.stdout + res.stderr
    assert "Traceback" not in out, out
    failed = [x for x in res.stdout.splitlines() if x.startswith("alpha: failed")]
    assert failed and line in failed[0], res.stdout
    assert "gamma: created" in res.stdout, res.stdout
    assert ids(host, "alpha") == before  # never removed, never recreated
    # and it keeps the files it last ran with (a policy failure is judged on the new files)
    if make is not _another_stacks_env:
        assert (host.runtime / "stacks/alpha/docker-compose.yml").read_text() == ran_with
    assert all(c["State"]["Running"] for c in host.containers("alpha"))
    assert ids(host, "gamma")
    # check says so too, naming the file
    check = host.vigo("check", str(host.repo.work))
    assert check.returncode != 0 and "Traceback" not in check.stdout + check.stderr
    # the next good commit converges
    for rel in ("stacks/alpha", "hosts"):
        if (host.repo.work / rel).exists():
            shutil.rmtree(host.repo.work / rel)
    light.add(host, "alpha")
    host.repo.commit("fixed")
    res = host.apply()
    assert "Traceback" not in res.stdout + res.stderr
    assert ids(host, "alpha") and all(c["State"]["Running"] for c in host.containers("alpha"))


def test_compose_yml_is_a_compose_file(host: Host) -> None:
    light.seed(host, "alpha")
    host.apply()
    before = ids(host, "alpha")
    work = host.repo.work
    (work / "stacks/alpha/docker-compose.yml").rename(work / "stacks/alpha/compose.yml")
    host.repo.commit("renamed to compose.yml, which compose accepts")
    res = host.apply()
    assert "alpha: updated" in res.stdout or "alpha: unchanged" in res.stdout, res.stdout
    assert ids(host, "alpha") == before and "alpha: removed" not in res.stdout


def test_a_changed_host_name_never_prunes_the_overlay_stacks(host: Host) -> None:
    light.seed(host, "alpha")
    host.repo.write("hosts/testhost/stacks/beta/docker-compose.yml", light.compose("beta"))
    host.repo.write_env("env/beta.env", {"STACK_ID": "id-beta"})
    host.repo.commit("beta only on testhost")
    host.apply()
    beta = ids(host, "beta")
    assert beta
    host.config.write_text(host.config.read_text().replace('host = "testhost"',
                                                           'host = "renamed"'))
    res = host.apply(expect=1)
    assert "Traceback" not in res.stdout + res.stderr
    assert ("hosts/renamed/ does not exist, but the last apply ran with hosts/testhost/ and its "
            "stack(s) beta: not pruning them") in res.stdout, res.stdout
    assert ids(host, "beta") == beta
    host.apply(expect=1)  # and again: the record is kept until confirmed
    assert ids(host, "beta") == beta
    res = host.apply("--allow-empty")
    assert not host.containers("beta") and ids(host, "alpha")
    assert "Traceback" not in host.apply().stdout
