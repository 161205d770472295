"""`vigo`'s entry point (cli/commands.entry): main's exit code, everything written, the exit
functions run, and the quick exit (no teardown of the interpreter) only when no other thread
runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")


def run(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    code = "import atexit, threading, time\nimport vigo.cli.commands as c\n" + body
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env={**os.environ, "PYTHONPATH": SRC})


def test_the_exit_code_the_output_and_the_exit_functions(tmp_path: Path) -> None:
    res = run("atexit.register(lambda: print('last', end=''))\n"
              "c.main = lambda: (print('x' * 200_000, end=''), "
              "print('err', file=__import__('sys').stderr, end=''), 3)[-1]\n"
              "c.entry()\n", tmp_path)
    assert res.returncode == 3
    assert res.stdout == "x" * 200_000 + "last"  # buffered output flushed, after atexit's
    assert res.stderr == "err"


def test_the_quick_exit_skips_the_teardown(tmp_path: Path) -> None:
    # An object's finaliser at interpreter teardown is what the quick exit skips.
    res = run("class Late:\n    def __del__(self):\n        print('torn down')\n"
              "keep = Late()\nc.main = lambda: 0\nc.entry()\n", tmp_path)
    assert (res.returncode, res.stdout) == (0, "")


def test_with_another_thread_running_the_ordinary_exit_waits_for_it(tmp_path: Path) -> None:
    done = tmp_path / "done"
    res = run("def work():\n    time.sleep(0.5)\n"
              f"    open({str(done)!r}, 'w').write('ok')\n"
              "threading.Thread(target=work).start()\n"
              "c.main = lambda: 5\nc.entry()\n", tmp_path)
    assert res.returncode == 5
    assert done.read_text() == "ok"


def test_an_exception_out_of_main_takes_the_ordinary_path(tmp_path: Path) -> None:
    res = run("def boom():\n    raise SystemExit(7)\nc.main = boom\nc.entry()\n", tmp_path)
    assert res.returncode == 7


def test_the_real_command_line(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "vigo", "apply", "--help"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": SRC})
    assert res.returncode == 0 and res.stdout.startswith("usage: vigo apply")
    res = subprocess.run([sys.executable, "-m", "vigo", "--config", str(tmp_path / "none.toml"),
                          "status"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": SRC})
    assert res.returncode == 2 and "none.toml" in res.stderr and "Traceback" not in res.stderr
