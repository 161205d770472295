"""The CLI's safety net: any exception is one line and an exit code, never a traceback
(--debug prints it); a state folder that is a file and a lock that is a folder are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.poll import wait_for
from vigo.adapters.lock import LockError, RunLock
from vigo.cli import commands as cli


def settings_file(tmp_path: Path, **extra: str) -> Path:
    path = tmp_path / "vigo.toml"
    lines = [f'repo = "{tmp_path / "repo"}"', f'state = "{tmp_path / "state"}"',
             "secrets_on_disk = true", *(f'{k} = "{v}"' for k, v in extra.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def boom(*_args):
    raise RecursionError("maximum recursion depth exceeded")


@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_exception_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys, debug):
    monkeypatch.setattr(cli, "cmd_retry", boom)
    monkeypatch.setattr(cli.config, "load", boom)
    code = cli.main(["--config", str(settings_file(tmp_path)), *(["--debug"] * debug),
                     "retry", "x"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("vigo retry: RecursionError in ")
    assert ("Traceback" in err) == debug


def test_a_state_folder_that_is_a_file(tmp_path, capsys):
    (tmp_path / "state").write_text("")
    for command in (["apply"], ["plan"], ["status"], ["retry", "x"], ["suspend"]):
        code = cli.main(["--config", str(settings_file(tmp_path)), *command])
        err = capsys.readouterr().err
        assert code == 2, command
        assert err == (f"vigo: the state folder {tmp_path / 'state'} is not a folder: remove it "
                       "or fix the `state` setting; nothing done\n")


@pytest.mark.parametrize("command", [["apply"], ["plan"], ["retry", "x"]])
def test_a_lock_that_is_a_folder(tmp_path, capsys, command):
    (tmp_path / "state" / "lock").mkdir(parents=True)
    code = cli.main(["--config", str(settings_file(tmp_path)), *command])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"vigo: cannot open the run lock {tmp_path / 'state' / 'lock'}: it is a "
                   "folder: remove it (vigo creates the file); nothing done\n")


def test_lock_errors(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(LockError, match="it is a file, not a folder"), \
            RunLock(tmp_path / "file" / "lock"):
        pass
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LockError, match="it is a symlink"), RunLock(tmp_path / "s" / "lock"):
        pass
    assert not (tmp_path / "elsewhere").exists()


def test_sigterm_ends_the_command_and_records_the_run_as_failed(tmp_path):
    """systemd's stop (or TimeoutStartSec) sends SIGTERM: the running command's process group
    goes, and the state says the run failed, not the last run's outcome."""
    import json
    import signal
    import subprocess
    import sys

    pid_file = tmp_path / "child.pid"
    script = f"""
import sys
from vigo.cli import commands as cli
from vigo.host.reconcile import Reconciler
def slow(self, report, st, options):
    self.runner.run(("sh", "-c", "echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; "
                     "sleep 100"), timeout=300)
Reconciler._run_apply = slow
sys.exit(cli.main(["--config", "{settings_file(tmp_path)}", "apply"]))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for(pid_file.exists, 60, 0.05, "the apply's command to write its pid",
             abort=lambda: proc.poll() is not None and f"vigo exited {proc.poll()}",
             detail=lambda: proc.stderr.read() if proc.poll() is not None else "")
    child = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)  # the process this test started
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert "Traceback" not in out + err
    st = json.loads((tmp_path / "state" / "state.json").read_text())
    assert st["exit_code"] == 1 and st["error"] == "the run was interrupted"
    try:
        stat = Path(f"/proc/{child}/stat").read_text()
        assert stat.rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        pass  # gone and reaped


def test_workstation_commands_do_not_care_about_the_state_folder(tmp_path, capsys):
    (tmp_path / "state").write_text("")
    (tmp_path / "repo").mkdir()
    code = cli.main(["--config", str(settings_file(tmp_path)), "check", str(tmp_path / "repo")])
    assert "state folder" not in capsys.readouterr().err
    assert code in (0, 1)
