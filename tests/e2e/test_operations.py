"""Running on a host, against the real engine: status (text and JSON), the metrics file read
back by prometheus_client, notifications received by a local HTTP server, suspend/resume,
bootstrap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import TAG_A, TAG_B, Host
from tests.support.receiver import Receiver
from vigo.adapters.lock import RunLock

SECRET = "p4ssw0rd-Never-In-A-Message"


def metrics_of(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(path.read_text()) for s in f.samples}


def status_json(host: Host) -> dict:
    res = host.vigo("status", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_status_metrics_and_notifications_through_failure_and_recovery(host: Host) -> None:
    prom = host.root / "textfile/vigo.prom"
    with Receiver() as rx:
        host.config.write_text(host.config.read_text() + (
            f'metrics_file = "{prom}"\nnotify_webhook = "{rx.url}/hook"\n'
            f'notify_ntfy = "{rx.url}/alerts"\nhealthchecks_url = "{rx.url}/hc/uuid"\n'))
        # Before any run: status works and says so.
        res = host.vigo("status")
        assert res.returncode == 0, res.stderr
        assert "last run   never" in res.stdout and "no stacks" in res.stdout
        assert status_json(host)["last_run"] is None

        good = host.seed(secrets={"WHOAMI_SECRET": SECRET})
        host.apply()
        assert rx.paths() == ["GET /hc/uuid/start", "POST /hc/uuid"]  # nothing to announce
        rx.take()
        m = metrics_of(prom)
        assert m[("vigo_last_run_success", ())] == 1
        assert m[("vigo_applied_revision_info", (("revision", good),))] == 1
        assert {labels[0][1]: v for (name, labels), v in m.items()
                if name == "vigo_stack_up"} == {"proxy": 1, "whoami": 1, "echo": 1}
        assert m[("vigo_consecutive_failures", ())] == 0
        assert prom.stat().st_mode & 0o777 == 0o644

        text = host.vigo("status").stdout
        lines = text.splitlines()
        assert all(len(line) <= 80 for line in lines), text
        assert f"applied {good[:12]}  fetched {good[:12]}  attempted {good[:12]}" in text
        assert any(x.startswith("whoami ") and " web " in x and " running " in x
                   and f"whoami:{TAG_A}" in x for x in lines), text
        assert any(x.startswith("echo ") and f"whoami:{TAG_B}" in x for x in lines), text
        data = status_json(host)
        assert data["last_run"]["result"] == "ok"
        assert [s["stack"] for s in data["stacks"]] == ["proxy", "echo", "whoami"]
        assert {s["state"] for s in data["stacks"]} == {"running"}

        # A broken commit: the secret lands in compose's error; it must reach no message.
        compose = host.repo.work / "stacks/whoami/docker-compose.yml"
        compose.write_text(compose.read_text().replace(
            "    labels:", '    ports: ["${WHOAMI_SECRET}"]\n    labels:', 1))
        bad = host.repo.commit("break whoami")
        res = host.apply(expect=1)
        assert "whoami: failed" in res.stdout and SECRET not in res.stdout
        got = {r.path: r for r in rx.take()}
        assert set(got) == {"/hc/uuid/start", "/hc/uuid/fail", "/hook", "/alerts"}
        hook = json.loads(got["/hook"].body)
        assert hook["event"] == "failure" and hook["revision"] == bad
        assert [s["stack"] for s in hook["failed_stacks"]] == ["whoami"]
        assert "***" in hook["failed_stacks"][0]["reason"]
        code = hook["failed_stacks"][0]["code"]  # the named reason, beside the prose
        assert code == "ResolveFailed" and hook["code"] == "StackFailed", hook
        assert got["/alerts"].headers["Title"] == "vigo on testhost: apply failed"
        for r in got.values():
            assert SECRET not in r.text and SECRET not in json.dumps(r.headers)

        res = host.apply(expect=1)  # still failed: only the healthchecks pings
        assert rx.paths() == ["GET /hc/uuid/start", "POST /hc/uuid/fail"]
        rx.take()
        m = metrics_of(prom)
        assert m[("vigo_last_run_success", ())] == 0
        assert m[("vigo_consecutive_failures", ())] == 2
        assert m[("vigo_stack_failed", (("stack", "whoami"),))] == 1
        assert m[("vigo_stack_up", (("stack", "whoami"),))] == 1  # the old one still runs
        assert m[("vigo_applied_revision_info", (("revision", good),))] == 1
        assert m[("vigo_last_run_reason_info", (("reason", "StackFailed"),))] == 1
        assert m[("vigo_stack_reason_info", (("reason", code), ("stack", "whoami")))] == 1
        text = host.vigo("status").stdout
        assert "FAILED (exit 1)" in text and "2 failed runs in a row" in text
        assert "  ! failing since" in text and f"at {bad[:12]}:" in text
        assert SECRET not in text
        data = status_json(host)
        whoami = next(s for s in data["stacks"] if s["stack"] == "whoami")
        assert whoami["failing"] and whoami["last_failure"]["revision"] == bad
        assert whoami["code"] == whoami["last_failure"]["code"] == code
        assert data["last_run"]["reason"] == "StackFailed"
        assert f"[{code}]" in text
        assert data["revision"] == {"applied": good, "fetched": bad, "attempted": bad}

        fixed = host.repo.revert(bad)
        host.apply()
        got = {r.path: r for r in rx.take()}
        assert set(got) == {"/hc/uuid/start", "/hc/uuid", "/hook", "/alerts"}
        assert json.loads(got["/hook"].body)["event"] == "recovery"
        assert "converged again" in got["/alerts"].text
        assert "nothing to do" in host.apply().stdout
        assert rx.paths() == ["GET /hc/uuid/start", "POST /hc/uuid"]
        m = metrics_of(prom)
        assert m[("vigo_applied_revision_info", (("revision", fixed),))] == 1
        assert m[("vigo_stack_failed", (("stack", "whoami"),))] == 0
        assert m[("vigo_last_run_reason_info", (("reason", "Converged"),))] == 1
        assert "  last failure" in host.vigo("status").stdout


def test_suspend_resume_and_status_during_a_run(host: Host) -> None:
    host.seed()
    env = {**os.environ, "SUDO_USER": "alice"}
    res = subprocess.run([sys.executable, "-m", "vigo", "--config", str(host.config),
                          "suspend", "--reason", "moving the database"], env=env,
                         capture_output=True, text=True, check=True)
    assert "suspended by alice" in res.stdout
    res = host.apply(expect=1)
    assert "vigo resume" in res.stderr and "--ignore-suspend" in res.stderr
    res = host.apply("--timer")
    assert res.stdout.count("\n") == 1 and "nothing done" in res.stdout
    assert host.containers() == []
    text = host.vigo("status").stdout
    assert "SUSPENDED  by alice" in text and "moving the database" in text
    assert status_json(host)["suspended"]["by"] == "alice"
    # The lock held (a run in progress): status reads on, and says so.
    with RunLock(host.state / "lock"):
        res = host.vigo("status")
        assert res.returncode == 0 and f"in progress (pid {os.getpid()})" in res.stdout
        assert status_json(host)["running"] == {"pid": os.getpid()}
    assert "created" in host.apply("--ignore-suspend").stdout
    assert "resumed" in host.vigo("resume").stdout
    assert status_json(host)["suspended"] is None
    assert "nothing to do" in host.apply("--timer").stdout


def test_bootstrap_is_idempotent_and_names_what_is_missing(host: Host) -> None:
    host.seed()
    config = host.root / "etc/vigo.toml"
    root = host.root / "sysroot"
    env = {**os.environ, **{f"VIGO_{k.upper()}": str(v) for k, v in (
        ("checkout", host.checkout), ("runtime", host.runtime), ("secrets", host.secrets),
        ("state", host.state), ("project_prefix", host.prefix))}}

    def bootstrap(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vigo", "--config", str(config), "bootstrap", "--repo",
             str(host.repo.remote), "--host", "testhost", "--age-key-file", str(host.key.path),
             "--root", str(root), *extra], env=env, capture_output=True, text=True,
            check=False, stdin=subprocess.DEVNULL)

    host.key.path.chmod(0o644)
    res = bootstrap()
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"age key: missing: the age key {host.key.path} has mode 0644" in res.stdout
    assert f"fix: chown root:root {host.key.path} && chmod 600 {host.key.path}" in res.stdout
    assert not config.exists() and host.containers() == []
    host.key.path.chmod(0o600)

    res = bootstrap()
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    for tool in ("docker: engine ", "compose: 2.", "sops: 3.", "git: 2."):
        assert any(x.startswith(tool) for x in lines), res.stdout
    assert f"settings: wrote {config}" in res.stdout
    assert "  proxy: created (new stack)" in lines
    assert f"timer: enabled under {root}" in res.stdout
    assert (root / "etc/systemd/system/timers.target.wants/vigo.timer").is_symlink()
    written = config.read_text()
    assert f'state = "{host.state}"' in written and f'repo = "{host.repo.remote}"' in written
    assert config.stat().st_mode & 0o777 == 0o600
    assert len(host.containers()) == 3

    res = bootstrap()
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"settings: {config} exists, not overwritten" in res.stdout
    assert "nothing to do" in res.stdout
    assert "vigo.service: unchanged" in res.stdout and "vigo.timer: unchanged" in res.stdout
    assert config.read_text() == written

    # suspended: bootstrap says so instead of "some stacks failed", and still installs the units
    subprocess.run([sys.executable, "-m", "vigo", "--config", str(config), "suspend",
                    "--reason", "moving the database"], env={**env, "SUDO_USER": "alice"},
                   capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
    res = bootstrap()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "apply: skipped, vigo is suspended by alice" in res.stdout, res.stdout
    assert "moving the database" in res.stdout and "vigo resume" in res.stdout
    assert "some stacks failed" not in res.stdout + res.stderr
    assert "vigo.timer: unchanged" in res.stdout
