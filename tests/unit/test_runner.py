"""adapters/run.py with real processes: a timeout ends the whole process tree the command
started (nothing survives, even a child that ignores SIGTERM), the message names the command,
and the data limit holds for the command's children."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vigo.adapters.run import CommandTimeout, Masker, Runner, describe


def alive(pid: int) -> bool:
    """A process that still runs (a zombie waiting for its parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("script", [
    "sleep 100 & echo $! >> {pids}; echo $$ >> {pids}; sleep 100",
    # the shell and its children ignore SIGTERM: SIGKILL after the grace period
    "trap '' TERM; sleep 100 & echo $! >> {pids}; echo $$ >> {pids}; sleep 100",
    # a grandchild (sh -> sh -> sleep), the shape of docker -> docker-compose
    "sh -c 'sleep 100 & echo $! >> {pids}; sleep 100' & echo $! >> {pids}; echo $$ >> {pids};"
    " wait",
])
def test_a_timeout_leaves_no_process_behind(tmp_path, script):
    pids = tmp_path / "pids"
    runner = Runner()
    with pytest.raises(CommandTimeout) as caught:
        runner.run(("sh", "-c", script.format(pids=pids)), timeout=1.5)
    assert str(caught.value) == "sh timed out after 1.5 s"
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) >= 2
    assert [p for p in started if alive(p)] == []


def test_an_ordinary_run_still_works(tmp_path):
    res = Runner().run(("sh", "-c", "echo out; echo err >&2; exit 3"))
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")
    res = Runner().run(("cat",), input="piped")
    assert res.stdout == "piped"
    assert Runner().run(("no-such-command-vigo",)).returncode == 127


def test_the_timeout_message_names_the_command_and_is_masked():
    masker = Masker()
    masker.add(["tok3n-secret"])
    with pytest.raises(CommandTimeout) as caught:
        Runner(masker).run(("sh", "-c", "sleep 5", "tok3n-secret"), timeout=0.2)
    assert str(caught.value) == "sh *** timed out after 0.2 s"


@pytest.mark.parametrize(("argv", "text"), [
    (("docker", "compose", "--project-name", "x", "--file", "/r/a.yml", "--env-file", "/s/e",
      "config", "--format", "json"), "docker compose config (project x)"),
    (("docker", "compose", "--project-name", "x-web", "down", "--remove-orphans"),
     "docker compose down (project x-web)"),
    (("docker", "ps", "--all", "--filter", "label=a"), "docker ps"),
    (("docker", "inspect", "--type", "container", "abc"), "docker inspect"),
    (("git", "-c", "core.hooksPath=/dev/null", "-C", "/srv/vigo", "fetch", "-q", "origin"),
     "git fetch"),
    (("git", "ls-remote", "--heads", "https://user:tok@host/r.git", "main"), "git ls-remote"),
    (("sops", "--decrypt", "--input-type", "dotenv", "/srv/vigo/env/db.env"), "sops"),
    (("/usr/bin/prlimit", "--data=1", "--", "docker", "compose", "-p", "y", "config"),
     "docker compose config (project y)"),
    ((), "a command"),
])
def test_describe(argv, text):
    assert describe(argv) == text


def test_the_data_limit_reaches_the_children():
    grab = f"{sys.executable} -c 'x = bytearray(400 * 2**20); print(len(x))'"
    free = Runner().run(("sh", "-c", grab))
    assert free.ok and free.stdout.strip() == str(400 * 2**20)
    capped = Runner().run(("sh", "-c", grab), limit_data=200 * 2**20)
    assert not capped.ok and "MemoryError" in capped.stderr


def test_out_of_memory_under_the_limit_is_one_line():
    grab = f"{sys.executable} -c 'import sys; sys.exit(\"fatal error: runtime: out of memory\")'"
    res = Runner().run(("sh", "-c", grab), limit_data=200 * 2**20)
    assert res.stderr == ("sh ran out of memory (vigo limits it to 200 MiB): a YAML alias bomb "
                          "or a huge file?")


def test_go_binaries_run_under_the_untrusted_data_limit():
    """RLIMIT_DATA (not RLIMIT_AS) is safe for Go: docker and its compose plugin start under
    vigo's 1 GiB limit; a limit too small for Go's heap fails with one line."""
    from vigo.adapters.run import UNTRUSTED_DATA_LIMIT

    res = Runner().run(("docker", "compose", "version"), limit_data=UNTRUSTED_DATA_LIMIT)
    assert res.ok and "Docker Compose version" in res.stdout, res.stderr
    for mib in (8, 16):  # Go segfaults (8) or says "out of memory" (16)
        tiny = Runner().run(("docker", "compose", "version"), limit_data=mib << 20)
        assert not tiny.ok
        assert tiny.stderr == (f"docker compose version ran out of memory (vigo limits it to "
                               f"{mib} MiB): a YAML alias bomb or a huge file?")


def test_an_interactive_runner_keeps_children_in_vigos_group_and_ends_the_child(tmp_path):
    """On a terminal (promote, init, host add) ssh / gpg / age may prompt: the child stays in
    vigo's process group; its timeout still ends it."""
    import os

    res = Runner(interactive=True).run(("sh", "-c", "ps -o pgid= -p $$"))
    assert int(res.stdout) == os.getpgrp()
    res = Runner().run(("sh", "-c", "ps -o pgid= -p $$"))
    assert int(res.stdout) != os.getpgrp()
    pids = tmp_path / "pids"
    with pytest.raises(CommandTimeout):
        Runner(interactive=True).run(
            ("sh", "-c", f"sh -c 'sleep 100 & echo $! >> {pids}; sleep 100' & "
                         f"echo $! >> {pids}; echo $$ >> {pids}; wait"), timeout=1.5)
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 3 and [p for p in started if alive(p)] == []
