"""Idle runs do nothing to containers; drift is repaired in one run; --force re-applies all."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.e2e.conftest import TAG_A, Host
from tests.support.infra import sh

# Prints the modules a run imported (stderr), after it ran.
IMPORTED = ("import sys\nfrom vigo.cli.commands import main\nrc = main()\n"
            "print(' '.join(sys.modules), file=sys.stderr)\nsys.exit(rc)")
# What an idle run does not need (docs/idle.md): the YAML parser, the deployer and the rest of
# a deploy, the HTTP client, the thread pool, tempfile, traceback, dataclasses and the inspect
# it imports (vigo's classes are core/records.py's), shutil (argparse's help formatter is told
# the width), hashlib and its OpenSSL (the render hashes with _sha256), datetime.
NOT_IDLE = {"ruamel.yaml", "vigo.core.lint", "vigo.core.policy", "vigo.core.registries",
            "vigo.core.health", "vigo.core.rollout", "vigo.host.engines.compose",
            "vigo.host.metrics", "vigo.adapters.http", "http.client", "urllib.request", "ssl",
            "concurrent.futures", "tempfile", "traceback", "dataclasses", "inspect", "shutil",
            "hashlib", "_hashlib", "datetime"}


def container_events(host: Host, since: float) -> list[str]:
    """Container lifecycle events of this host's containers since `since` (epoch seconds)."""
    out = sh("docker", "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
             "--filter", "type=container", "--filter", f"label=io.vigo.instance={host.prefix}",
             "--format", "{{json .}}").stdout
    return [f"{e['Action']} {e['Actor']['Attributes'].get('name')}"
            for e in map(json.loads, out.splitlines())
            if e["Action"] in ("create", "start", "stop", "die", "kill", "destroy")]


def test_idle_run_and_no_op_commit_touch_no_container(host: Host) -> None:
    host.seed()
    host.apply()
    ids = {c["Id"] for c in host.containers()}
    since = time.time()
    res = host.apply("-v")
    assert "docker compose" not in res.stderr and "sops" not in res.stderr
    # One question to the engine: a GET on its socket (or `docker ps` for a remote engine).
    assert res.stderr.count("$ GET unix://") + res.stderr.count("$ docker ps") == 1
    # ... and imports only what an idle run uses (vigo's own entry point, in a new process).
    run = subprocess.run([sys.executable, "-c", IMPORTED, "--config", str(host.config), "apply"],
                         capture_output=True, text=True, timeout=120, check=True,
                         stdin=subprocess.DEVNULL)
    assert "nothing to do" in run.stdout
    imported = set(run.stderr.split())
    assert "vigo.host.reconcile" in imported
    assert sorted(imported & NOT_IDLE) == []
    # A README, a comment in one stack's compose file: nothing is recreated.
    host.repo.write("README.md", "notes\n")
    compose = host.repo.work / "stacks/whoami/docker-compose.yml"
    compose.write_text("# a comment\n" + compose.read_text())
    host.repo.commit("no-op for the containers")
    res = host.apply()
    assert ("whoami: unchanged (stacks/whoami/docker-compose.yml changed; "
            "no container needed a change)") in res.stdout
    assert "echo" not in res.stdout and "proxy" not in res.stdout
    host.apply()
    time.sleep(1.1)  # docker events has one-second resolution at the edges
    assert container_events(host, since) == []
    assert {c["Id"] for c in host.containers()} == ids


def test_drift_is_repaired_in_one_run(host: Host) -> None:
    host.seed()
    host.apply()
    whoami = f"{host.prefix}whoami-web-1"
    echo = f"{host.prefix}echo-web-1"
    proxy = f"{host.prefix}proxy-traefik-1"
    sh("docker", "stop", "-t", "1", whoami)
    sh("docker", "rm", "-f", echo)
    res = host.apply()
    assert f"whoami: updated (container {whoami} is exited)" in res.stdout
    assert f"echo: updated (container {echo} was removed)" in res.stdout
    assert "proxy" not in res.stdout
    assert all(c["State"]["Running"] for c in host.containers())
    assert f"revision={TAG_A}" in host.get("whoami", TAG_A)
    # Recreated by hand with another configuration: same name, another config hash.
    runtime = host.runtime
    extra = host.root / "by-hand.yml"
    extra.write_text("services:\n  traefik:\n    environment:\n      BY_HAND: '1'\n")
    sh("docker", "compose", "-p", f"{host.prefix}proxy",
       "-f", str(runtime / "proxy/docker-compose.yml"),
       "-f", str(host.state / f"overrides/{host.prefix}proxy.json"), "-f", str(extra),
       "--env-file", str(host.secrets / "env/global.env"),
       "--env-file", str(host.secrets / "env/proxy.env"), "up", "-d")
    res = host.apply()
    assert f"proxy: updated (container {proxy} was recreated with another configuration)" \
        in res.stdout
    env = host.containers("proxy")[0]["Config"]["Env"]
    assert "BY_HAND=1" not in env
    since = time.time()
    assert "nothing to do" in host.apply().stdout
    time.sleep(1.1)
    assert container_events(host, since) == []


def test_force_reapplies_every_stack_without_recreating(host: Host) -> None:
    host.seed()
    host.apply()
    ids = {c["Id"] for c in host.containers()}
    res = host.apply("--force", "-v")
    for stack in ("proxy", "whoami", "echo"):
        assert f"{stack}: unchanged (forced; no container needed a change)" in res.stdout
    assert res.stderr.count(" up --detach") == 3
    assert res.stderr.count("sops --decrypt") == 4
    assert {c["Id"] for c in host.containers()} == ids


def test_changed_bind_mounted_file_recreates_its_service(host: Host) -> None:
    host.seed()
    compose = host.repo.work / "stacks/whoami/docker-compose.yml"
    compose.write_text(compose.read_text().replace(
        "    labels:", "    volumes:\n      - ./conf/app.conf:/etc/app.conf:ro\n    labels:", 1))
    host.repo.write("stacks/whoami/conf/app.conf", "v=1\n")
    host.repo.commit("mount a config file")
    host.apply()
    first = host.containers("whoami")[0]["Id"]
    echo = host.containers("echo")[0]["Id"]
    host.repo.write("stacks/whoami/conf/app.conf", "v=2\n")
    host.repo.commit("change the config file")
    res = host.apply()
    assert "whoami: updated (stacks/whoami/conf/app.conf changed)" in res.stdout
    container = host.containers("whoami")[0]
    assert container["Id"] != first
    assert sh("docker", "exec", container["Name"].lstrip("/"), "cat", "/etc/app.conf"
              ).stdout == "v=2\n"
    assert host.containers("echo")[0]["Id"] == echo


def test_a_runtime_file_a_container_rewrote_is_written_back(host: Host) -> None:
    """The runtime tree's stamp (docs/idle.md): an idle run that finds its stamp trusted reads
    nothing, but a container with a writable mount that rewrote a file (same size even)
    changed its ctime: the next run compares, writes the file back, and stamps again."""
    host.seed()
    compose = host.repo.work / "stacks/whoami/docker-compose.yml"
    compose.write_text(compose.read_text().replace(
        "    labels:", "    volumes:\n      - ./conf:/conf\n    labels:", 1))
    host.repo.write("stacks/whoami/conf/app.conf", "v=1\n")
    host.repo.commit("a writable config folder")
    host.apply()
    stamp = host.state / "rendered.json.stamp"
    time.sleep(2.2)  # past the racy window of the files the deploy wrote
    host.apply()  # compares, writes nothing, stamps a tree it can trust
    assert stamp.is_file()
    before = stamp.stat().st_mtime_ns
    host.apply()
    assert stamp.stat().st_mtime_ns == before  # trusted: not read, not stamped again
    name = host.containers("whoami")[0]["Name"].lstrip("/")
    sh("docker", "exec", name, "sh", "-c", "printf 'v=9\\n' > /conf/app.conf")
    conf = host.runtime / "stacks/whoami/conf/app.conf"
    assert conf.read_text() == "v=9\n"
    host.apply()
    assert conf.read_text() == "v=1\n"
    assert stamp.stat().st_mtime_ns != before
