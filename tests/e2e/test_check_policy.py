"""`vigo check` on a real repo with the real compose validator, and the same rules at apply."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.e2e.conftest import Host


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vigo", "check", *args], text=True,
                          capture_output=True, check=False)


def test_check_names_the_overlay_file_and_compose_errors(host: Host) -> None:
    host.seed()
    res = check(str(host.repo.work))
    assert res.returncode == 0, res.stdout
    overlay = host.repo.work / "hosts/web1/stacks/echo/docker-compose.yml"
    overlay.parent.mkdir(parents=True)
    overlay.write_text((host.repo.work / "stacks/echo/docker-compose.yml").read_text()
                       .replace("    labels:", "    restart_policy: always\n    labels:"))
    res = check(str(host.repo.work), "--json")
    assert res.returncode == 1
    findings = json.loads(res.stdout)
    assert [(f["rule"], f["path"]) for f in findings] == [
        ("compose-valid", "hosts/web1/stacks/echo/docker-compose.yml")]
    assert "restart_policy" in findings[0]["message"]
    assert "as host web1 renders it" in findings[0]["message"]


def test_apply_refuses_a_stack_that_breaks_policy_and_applies_the_others(host: Host) -> None:
    host.seed()
    compose = host.repo.work / "stacks/whoami/docker-compose.yml"
    compose.write_text(compose.read_text().replace(
        "    labels:", "    privileged: true\n    volumes:\n"
        "      - /var/run/docker.sock:/var/run/docker.sock\n    labels:", 1))
    host.repo.commit("whoami wants the host")
    res = host.apply(expect=1)
    line = next(x for x in res.stdout.splitlines() if x.startswith("whoami:"))
    assert line.startswith("whoami: failed (policy [")
    assert "[privileged]" in line and "[docker-sock]" in line
    assert "stacks/whoami/docker-compose.yml:" in line
    assert "echo: created" in res.stdout and "proxy: created" in res.stdout
    assert host.containers("whoami") == []
