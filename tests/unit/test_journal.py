"""Output under journald: `<N>` priority prefixes exactly when stdout/stderr is the journal
stream systemd named in JOURNAL_STREAM; plain lines on a terminal or a pipe."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vigo.core import journal


@pytest.mark.parametrize("line, level", [
    ("whoami: created (new stack)", 6),
    ("abc123: nothing to do, 3 stack(s) unchanged", 6),
    ("whoami: failed (docker compose up: boom)", 3),
    ("echo: failed to remove (docker compose down: x)", 3),
    ("warning: /var/lib/vigo/state.json is unreadable", 4),
    ("source: fetch of branch 'main' failed; nothing changed", 3),
    ("docker: cannot list containers", 3),
    ("prune refused: the tree has no stacks", 3),
    ("vigo: another vigo run holds /var/lib/vigo/lock; nothing done", 3),
    ("sops: missing (sops is not installed); fix: install it", 3),
    ("sops: 3.11.0", 6),
    ("settings: secrets folder /x is not on a tmpfs", 3),
    ("$ docker ps --all", 7),
    ("  whoami: failed (x)", 3),
])
def test_level_of(line: str, level: int) -> None:
    assert journal.level_of(line) == level


def test_stream_prefixes_each_complete_line() -> None:
    out = io.StringIO()
    s = journal.JournalStream(out, journal.INFO)
    s.write("whoami: created\nwarning: x\nhalf")
    assert out.getvalue() == "<6>whoami: created\n<4>warning: x\n"
    s.write(" a line\n<3>already tagged\n")
    s.write("tail")
    s.close_partial()
    assert out.getvalue().splitlines()[2:] == ["<6>half a line", "<3>already tagged",
                                               "<6>tail"]


def test_is_journal_compares_device_and_inode(tmp_path: Path) -> None:
    with open(tmp_path / "a", "w") as a, open(tmp_path / "b", "w") as b:
        st = os.fstat(a.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert journal.is_journal(a, env)
        assert not journal.is_journal(b, env)
        assert not journal.is_journal(a, {})
        assert not journal.is_journal(a, {"JOURNAL_STREAM": "garbage"})


def run_vigo(tmp_path: Path, journal_stream: bool) -> str:
    config = tmp_path / "vigo.toml"
    config.write_text(f'repo = "{tmp_path}/no-such-repo"\nstate = "{tmp_path}/state"\n'
                      f'checkout = "{tmp_path}/checkout"\nruntime = "{tmp_path}/runtime"\n'
                      f'secrets = "{tmp_path}/secrets"\nsecrets_on_disk = true\n')
    out_path = tmp_path / "out.txt"
    with open(out_path, "w") as out:
        st = os.fstat(out.fileno())
        env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM",
                                                                "INVOCATION_ID")}
        if journal_stream:
            env |= {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}", "INVOCATION_ID": "x"}
        subprocess.run([sys.executable, "-m", "vigo", "--config", str(config), "apply"],
                       stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    return out_path.read_text()


def test_vigo_under_the_journal_prefixes_every_line(tmp_path: Path) -> None:
    text = run_vigo(tmp_path, journal_stream=True)
    lines = text.splitlines()
    assert lines and all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines), text
    assert any(line.startswith("<3>source: fetch of branch 'main'") for line in lines)
    plain = run_vigo(tmp_path, journal_stream=False)
    assert plain.startswith("source: fetch of branch 'main'")


def test_printer_writes_whole_lines_from_many_threads(monkeypatch) -> None:
    """Deploy threads log at once: every line arrives whole (print wrote the newline apart)."""

    class Slow(io.StringIO):
        def write(self, s: str) -> int:  # a thread switch inside every write
            n = super().write(s)
            time.sleep(0)
            return n

    out = Slow()
    monkeypatch.setattr(sys, "stderr", out)
    say = journal.printer("stderr", "  ")
    lines = [f"$ docker compose --project-name p{i} up --detach --quiet-pull" for i in range(200)]
    threads = [threading.Thread(target=lambda chunk=lines[k::8]: [say(x) for x in chunk])
               for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = out.getvalue().splitlines()
    assert sorted(got) == sorted("  " + x for x in lines)
