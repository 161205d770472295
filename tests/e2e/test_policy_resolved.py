"""The policy judges what Docker would run (the resolved model), end to end: one commit with
good stacks and hostile ones, each hostile one written so that the TEXT looks harmless (YAML
casting, a defaulted variable, an encrypted value, a variable extends file, ...). At apply the
hostile stacks are refused with their rule named and none of their containers or volumes is
created, while the good ones are applied and serve; `vigo check` on the same repo reports each
as an error with its rule and file line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import TAG_A, Host
from tests.support.infra import free_port, sh

IMAGE = f"ghcr.io/vigo-example/whoami:{TAG_A}"


def plain(service: str, top: str = "") -> str:
    """A stack with one unrouted service `web` and `service` keys (8-space indented)."""
    return f"services:\n  web:\n    image: {IMAGE}\n{service}{top}"


def test_hostile_stacks_are_refused_by_their_resolved_model(host: Host) -> None:
    host.seed()
    open_port, allowed_port = free_port(), free_port()
    hostile = {
        # stack: (compose text, extra files, encrypted env values, the rule that refuses it)
        "yescast": (plain("    privileged: yes\n"), {}, {}, "privileged"),
        "nshost": (plain("    network_mode: ${NS:-host}\n"), {}, {}, "host-namespace"),
        "secretbind": (plain("    volumes: ['${DATA_DIR}:/data:ro']\n"), {},
                       {"DATA_DIR": "/etc"}, "unresolved"),
        "extendsvar": ("services:\n  web:\n    extends:\n      file: ${BASE:-base.yml}\n"
                       "      service: web\n",
                       # a variable file name is refused as text (rule env-file) before the
                       # model is resolved; check also judges what it resolves to (below)
                       {"base.yml": plain("    pid: host\n")}, {}, "env-file"),
        "volproxy": (plain(f"    volumes_from: ['container:{host.prefix}proxy-traefik-1']\n"),
                     {}, {}, "outside-container"),
        "rbind": (plain("    volumes: ['root:/host']\n",
                        "volumes:\n  root:\n    driver_opts: {o: rbind, type: none, "
                        "device: /}\n"), {}, {}, "volume"),
        "openport": (plain(f"    ports: ['0.0.0.0:{open_port}:80']\n"), {}, {}, "port-exposed"),
        "apisock": (plain("    use_api_socket: true\n"), {}, {}, "api-socket"),
        "overridetag": (plain("    cap_add: !override [SYS_ADMIN]\n"), {}, {}, "cap-add"),
        "cgrouphost": (plain("    cgroup: host\n"), {}, {}, "host-namespace"),
        "gpus": (plain("    gpus: all\n"), {}, {}, "devices"),
        "devrules": (plain("    device_cgroup_rules: ['b 8:* rmw']\n"), {}, {}, "devices"),
        "seccomp": (plain("    security_opt: ['seccomp=unconfined']\n"), {}, {},
                    "security-opt"),
        "envother": (plain("    env_file: ['../../env/${X:-whoami}.env']\n"), {}, {},
                     "env-file"),
    }
    for name, (text, files, secrets, _) in hostile.items():
        host.repo.write(f"stacks/{name}/docker-compose.yml", text)
        for rel, body in files.items():
            host.repo.write(f"stacks/{name}/{rel}", body)
        host.repo.write_env(f"env/{name}.env", {"UNUSED": "x", **secrets})
    # A good stack that publishes a port on every interface, allowed by its own settings entry.
    host.repo.write("stacks/okport/docker-compose.yml",
                    plain(f"    ports: ['{allowed_port}:80']\n"))
    host.repo.write_env("env/okport.env", {"UNUSED": "x"})
    with host.config.open("a") as f:
        f.write(f'allow_ports = ["okport:{allowed_port}"]\n')
    host.repo.commit("good and hostile stacks in one commit")

    res = host.apply(expect=1)
    assert "Traceback" not in res.stdout + res.stderr
    for name, (*_, rule) in hostile.items():
        line = next(x for x in res.stdout.splitlines() if x.startswith(f"{name}:"))
        assert line.startswith(f"{name}: failed (policy ["), line
        assert f"[{rule}]" in line, line
        assert "fix:" in line, line
        assert host.containers(name) == [], name
    assert "/etc" not in next(x for x in res.stdout.splitlines() if x.startswith("secretbind:"))
    for good in ("proxy", "whoami", "echo", "okport"):
        assert f"{good}: created" in res.stdout, res.stdout
    assert f"revision={TAG_A}" in host.get("whoami", expect=f"revision={TAG_A}")  # it serves
    volumes = sh("docker", "volume", "ls", "-q", "--filter", f"name={host.prefix}rbind").stdout
    assert volumes.strip() == ""  # the rbind volume of / was never created

    # A second run changes nothing for the good stacks and still refuses the hostile ones.
    again = host.apply(expect=1)
    assert "whoami: created" not in again.stdout and "yescast: failed (policy [" in again.stdout

    # vigo check, offline, on the same repo and settings: each hostile stack is an error named
    # by its rule and its file line.
    res = host.vigo("check", str(host.repo.work), "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    findings = [f for f in json.loads(res.stdout) if f["severity"] == "error"]
    for name, (*_, rule) in hostile.items():
        mine = [f for f in findings if f["path"].startswith(f"stacks/{name}/")]
        assert any(f["rule"] == rule and f["line"] for f in mine), (name, mine)
    assert not [f for f in findings if f["rule"] == "compose-valid"], findings
    by_stack = {f["path"].split("/")[1] for f in findings if f["path"].startswith("stacks/")}
    assert by_stack == set(hostile), findings
    extends = next(f for f in findings if f["path"].startswith("stacks/extendsvar/")
                   and f["rule"] == "host-namespace")
    assert (extends["path"], extends["line"]) == ("stacks/extendsvar/base.yml", 4)


def test_a_running_stack_turned_hostile_keeps_its_containers(host: Host) -> None:
    host.seed()
    host.apply()
    before = {c["Name"]: c["Id"] for c in host.containers("whoami")}
    compose = host.repo.work / "stacks/whoami/docker-compose.yml"
    compose.write_text(compose.read_text().replace(
        "    labels:", "    cap_add: [CAP_SYS_ADMIN]\n    labels:", 1))
    host.repo.commit("whoami asks for SYS_ADMIN")
    res = host.apply(expect=1)
    line = next(x for x in res.stdout.splitlines() if x.startswith("whoami:"))
    assert line.startswith("whoami: failed (policy [cap-add] stacks/whoami/docker-compose.yml:")
    assert "allow_caps" in line
    assert {c["Name"]: c["Id"] for c in host.containers("whoami")} == before
    assert f"revision={TAG_A}" in host.get("whoami", expect=f"revision={TAG_A}")


def test_check_without_docker_compose_falls_back_to_the_text_rules(host: Host,
                                                                   tmp_path: Path) -> None:
    host.seed()
    compose = host.repo.work / "stacks/whoami/docker-compose.yml"
    compose.write_text(compose.read_text().replace(
        "    labels:", "    privileged: true\n    labels:", 1))
    empty = tmp_path / "bin"  # a PATH without docker
    empty.mkdir()
    res = subprocess.run([sys.executable, "-m", "vigo", "check", str(host.repo.work), "--json"],
                         capture_output=True, text=True, check=False,
                         env={**os.environ, "PATH": str(empty)})
    assert res.returncode == 1, res.stdout + res.stderr
    findings = json.loads(res.stdout)
    assert [f["rule"] for f in findings if f["severity"] == "warning"] == ["policy-resolved"]
    assert [(f["rule"], f["path"]) for f in findings if f["severity"] == "error"] == [
        ("privileged", "stacks/whoami/docker-compose.yml")]
