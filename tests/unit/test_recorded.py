"""The parsers over what the real engine and compose said (tests/fixtures/engine/, recorded by
record.py there from stack.yml: one container in each state), as pyinfra tests its facts:
adapters/engine.py and adapters/compose.py (the container list both ways, config hashes),
core/health.py (probe and the gate's judgement), core/rollout.py, and the resolution inputs
reconcile and host/engines/compose.py take from the model (replicas, one-offs, x-vigo, images)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.recording import RecordingRunner
from vigo.adapters import engine
from vigo.adapters.compose import Compose
from vigo.core import health, rollout, xvigo
from vigo.host.engines.compose import image_ref

HERE = Path(__file__).parent.parent / "fixtures" / "engine"
META = json.loads((HERE / "meta.json").read_text())
PROJECT, INSTANCE = META["project"], META["instance"]
MODEL = json.loads((HERE / "compose-config.json").read_text())
SERVICES = MODEL["services"]
INSPECT = json.loads((HERE / "inspect.json").read_text())
IMAGE = "ghcr.io/vigo-example/whoami:sha-1a2b3c4"


def short(name: str) -> str:
    return name.removeprefix(PROJECT + "-")


def from_cli() -> tuple:
    runner = RecordingRunner().on("docker", "ps", stdout=(HERE / "docker-ps.jsonl").read_text())
    compose = Compose(runner)
    # `docker ps` in vigo's format: the reference the engine's API parser is held to (runs
    # on other endpoints ask the API too, through `docker system dial-stdio`)
    return compose.containers_cli(["io.vigo.stack", f"io.vigo.instance={INSTANCE}"])


# -- the container list: the engine's API and `docker ps` ----------------------------------

CONTAINERS = {  # name -> (service, state, health, status's start)
    "web-1": ("web", "running", "healthy", "Up "),
    "sick-1": ("sick", "running", "unhealthy", "Up "),
    "worker-1": ("worker", "running", "", "Up "),
    "worker-2": ("worker", "running", "", "Up "),
    "migrate-1": ("migrate", "exited", "", "Exited (0) "),
    "crash-1": ("crash", "exited", "", "Exited (3) "),
    "loop-1": ("loop", "restarting", "", "Restarting (1) "),
    "pending-1": ("pending", "created", "", "Created"),
}


def test_the_engine_api_answer_parses_to_every_container() -> None:
    found = engine.parse_containers((HERE / "containers-api.json").read_bytes())
    assert {short(c.name): (c.service, c.state, c.health, c.status[:len(want[3])])
            for c in found for want in [CONTAINERS[short(c.name)]]} == CONTAINERS
    assert {(c.stack, c.instance, c.project, c.image) for c in found} == {
        ("fix", INSTANCE, PROJECT, IMAGE)}
    assert all(len(c.id) == 64 and len(c.config_hash) == 64 for c in found)


def test_the_cli_path_gives_what_the_api_gives() -> None:
    api = engine.parse_containers((HERE / "containers-api.json").read_bytes())
    assert sorted(from_cli(), key=lambda c: c.id) == sorted(api, key=lambda c: c.id)


def test_the_clis_own_json_agrees_with_vigos_format() -> None:
    """`docker ps --format json` (the CLI's rows) names the same containers, states and
    statuses as vigo's own --format, which alone carries every label as its own field."""
    rows = [json.loads(line) for line in (HERE / "docker-ps-json.jsonl").read_text().splitlines()]
    mine = {c.id: c for c in from_cli()}
    assert len(rows) == len(mine) == len(CONTAINERS)
    for row in rows:
        c = mine[row["ID"]]
        assert (row["Names"], row["State"], row["Status"], row["Image"]) == (
            c.name, c.state, c.status, c.image)
        assert f"io.vigo.stack={c.stack}" in row["Labels"].split(",")


def test_config_hashes_match_the_containers_compose_made() -> None:
    runner = RecordingRunner().on("--hash", stdout=(HERE / "config-hash.txt").read_text())
    hashes = Compose(runner).config_hashes(PROJECT, [Path("docker-compose.yml")], [])
    assert set(hashes) == set(SERVICES)
    assert {c.service: c.config_hash for c in from_cli()} == hashes


# -- core/health.py: probe and the gate ------------------------------------------------------

PROBES = {  # name -> (state, health, restarts, exit code, restart policy)
    "web-1": ("running", "healthy", 0, 0, "no"),
    "sick-1": ("running", "unhealthy", 0, 0, "no"),
    "worker-1": ("running", "", 0, 0, "unless-stopped"),
    "worker-2": ("running", "", 0, 0, "unless-stopped"),
    "migrate-1": ("exited", "", 0, 0, "no"),
    "crash-1": ("exited", "", 1, 3, "on-failure"),
    "loop-1": ("restarting", "", 6, 1, "always"),
    "pending-1": ("created", "", 0, 0, "no"),
}
BY_NAME = {short(p.name): p for p in map(health.probe, INSPECT)}


def test_probe_reads_every_state_from_docker_inspect() -> None:
    assert {n: (p.state, p.health, p.restarts, p.exit_code, p.restart_policy)
            for n, p in BY_NAME.items()} == PROBES
    assert {p.service for p in BY_NAME.values()} == set(SERVICES)
    assert all(p.started > 1.7e9 for n, p in BY_NAME.items() if n != "pending-1")
    # never started: docker says 0001-01-01T00:00:00Z, which reads as long before the epoch
    # (the gate waits on a container that is not running and never reads its start)
    assert BY_NAME["pending-1"].started < 0


LATER = max(p.started for p in BY_NAME.values()) + 600


@pytest.mark.parametrize(("names", "status", "reason"), [
    (["web-1", "worker-1", "worker-2", "migrate-1"], health.OK, ""),
    (["web-1", "worker-1", "worker-2", "migrate-1", "sick-1"], health.WAIT,
     "container {p}-sick-1 is unhealthy"),
    (["web-1", "pending-1"], health.WAIT, "container {p}-pending-1 is created"),
    (["web-1", "crash-1"], health.FAIL, "container {p}-crash-1 exited with code 3"),
    (["web-1", "loop-1"], health.FAIL, "container {p}-loop-1 is restarting (crash loop)"),
    (["web-1", "worker-1"], health.WAIT, None),  # worker runs 2 replicas: one is missing
])
def test_the_gate_judges_the_recorded_containers(names: list[str], status: str,
                                                 reason: str | None) -> None:
    probes = [BY_NAME[n] for n in names]
    services = sorted({p.service for p in probes})
    counts = {s: n for s, svc in SERVICES.items() if (n := health.replicas(svc)) != 1}
    verdict = health.judge(probes, services, {p.id: p.restarts for p in probes}, LATER,
                           counts=counts)
    assert verdict.status == status
    if reason is not None:
        assert verdict.reason == reason.format(p=PROJECT)
    else:
        assert "worker" in verdict.reason


# -- core/rollout.py and the resolution inputs ---------------------------------------------

@pytest.mark.parametrize(("service", "test", "interval", "retries", "blocker"), [
    ("web", ("CMD", "test", "-e", "/tmp/ready"), 1.0, 3, ""),
    ("sick", ("CMD-SHELL", "exit 1"), 1.0, 1, "label io.vigo.core.rollout=recreate"),
    ("worker", (), 30.0, 3, "not routed by Traefik"),
    ("migrate", (), 30.0, 3, "not routed by Traefik"),
    ("pending", ("CMD-SHELL", "curl -fsS http://localhost/"), 90.0, 5,
     "publishes host ports (two containers cannot bind them at once)"),
])
def test_rollout_spec_of_the_resolved_model(service: str, test: tuple[str, ...],
                                            interval: float, retries: int,
                                            blocker: str) -> None:
    spec = rollout.spec(SERVICES[service])
    assert (spec.test, spec.interval, spec.retries, spec.blocker) == (test, interval, retries,
                                                                      blocker)
    assert spec.zero_downtime == (not blocker)


def test_drain_test_of_the_recorded_healthcheck() -> None:
    spec = rollout.spec(SERVICES["web"])
    assert rollout.drain_test(spec.test) == [
        "CMD-SHELL", "[ ! -e /tmp/vigo-drain ] && test -e /tmp/ready"]
    assert rollout.drain_seconds(spec) == 6.0


def test_resolution_inputs_of_the_model() -> None:
    """What reconcile's resolve takes from `compose config`: images, replicas, the services
    meant to finish (restart no / on-failure, or waited for as completed), x-vigo."""
    assert {name: image_ref(svc["image"]) for name, svc in SERVICES.items()} == {
        name: IMAGE for name in SERVICES}
    assert {name: health.replicas(svc) for name, svc in SERVICES.items()} == {
        "web": 1, "sick": 1, "worker": 2, "migrate": 1, "crash": 1, "loop": 1, "pending": 1}
    assert {n for n in SERVICES if health.meant_to_finish(n, SERVICES)} == {
        "web", "sick", "migrate", "crash", "pending"}  # no restart policy: may stay exited


def test_x_vigo_of_the_model() -> None:
    """stack.yml's job `migrate` is waited for by `crash` (depends_on completed): compose
    would start the job with it, so the block is refused; without that depends_on it holds."""
    options, problems = xvigo.parse(MODEL[xvigo.KEY], SERVICES, "fix")
    assert [p.line() for p in problems] == [
        "x-vigo.jobs.migrate: service crash depends on it, so compose would start the job "
        "with it; fix: drop the depends_on: vigo runs jobs itself, at their time"]
    assert options.jobs == ()
    services = {**SERVICES, "crash": {k: v for k, v in SERVICES["crash"].items()
                                      if k != "depends_on"}}
    options, problems = xvigo.parse(MODEL[xvigo.KEY], services, "fix")
    assert problems == []
    assert options == xvigo.Options(health_timeout=90,
                                    jobs=(xvigo.Job("migrate", xvigo.BEFORE, 120),))
