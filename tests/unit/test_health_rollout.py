"""The health gate's judgement and the rollout decision: tables of inputs and verdicts."""

from __future__ import annotations

import pytest

from vigo.core import health, rollout
from vigo.core.health import FAIL, OK, WAIT, Probe, judge

NOW = 1000.0


def p(name="web-1", service="web", state="running", health_="", restarts=0, started=NOW - 60,
      exit_code=0, policy="unless-stopped") -> Probe:
    return Probe(id=name, name=name, service=service, state=state, health=health_,
                 restarts=restarts, started=started, exit_code=exit_code, restart_policy=policy)


@pytest.mark.parametrize(("probes", "services", "baseline", "status", "reason"), [
    pytest.param([p()], ["web"], {}, OK, "", id="running-no-healthcheck"),
    pytest.param([p(health_="healthy")], ["web"], {}, OK, "", id="healthy"),
    pytest.param([p(started=NOW - 1)], ["web"], {}, WAIT, "has run 1s", id="too-young"),
    pytest.param([p(health_="starting")], ["web"], {}, WAIT, "health: starting",
                 id="starting"),
    pytest.param([p(health_="unhealthy")], ["web"], {}, WAIT, "is unhealthy",
                 id="unhealthy-waits-for-timeout"),
    pytest.param([p(state="exited", exit_code=1)], ["web"], {}, FAIL, "exited with code 1",
                 id="exited"),
    pytest.param([p(state="restarting")], ["web"], {}, FAIL, "crash loop", id="restarting"),
    pytest.param([p(restarts=2)], ["web"], {"web-1": 1}, FAIL, "crash loop",
                 id="restarted-since-up"),
    pytest.param([p(state="exited", exit_code=0, policy="no")], ["web"], {}, OK, "",
                 id="one-off-completed"),
    pytest.param([p(state="exited", exit_code=0, policy="always")], ["web"], {}, FAIL,
                 "exited with code 0", id="exit-0-with-restart-policy"),
    pytest.param([p()], ["web", "worker"], {}, WAIT, "service worker has no container",
                 id="missing-service"),
    pytest.param([p(state="created")], ["web"], {}, WAIT, "is created", id="created"),
])
def test_judge(probes, services, baseline, status, reason) -> None:
    verdict = judge(probes, services, baseline, NOW)
    assert verdict.status == status
    assert reason in verdict.reason


def test_probe_parses_docker_inspect() -> None:
    doc = {"Id": "abc", "Name": "/app-web-1", "RestartCount": 3,
           "State": {"Status": "running", "ExitCode": 0, "StartedAt": "2026-11-26T05:30:01.5Z",
                     "Health": {"Status": "healthy"}},
           "Config": {"Labels": {"com.docker.compose.service": "web"}},
           "HostConfig": {"RestartPolicy": {"Name": "always"}}}
    got = health.probe(doc)
    assert (got.name, got.service, got.health, got.restarts, got.restart_policy) == (
        "app-web-1", "web", "healthy", 3, "always")
    assert got.started == pytest.approx(1795671001.5)


ROUTED = {"labels": {"traefik.enable": "true"},
          "healthcheck": {"test": ["CMD", "/bin/healthy"], "interval": "1s", "retries": 2}}


@pytest.mark.parametrize(("svc", "blocker"), [
    pytest.param(ROUTED, "", id="rolls"),
    pytest.param({**ROUTED, "labels": ["traefik.enable=true", "io.vigo.core.rollout=recreate"]},
                 "label", id="opted-out"),
    pytest.param({**ROUTED, "labels": {}}, "not routed", id="not-routed"),
    pytest.param({**ROUTED, "healthcheck": {"disable": True}}, "no healthcheck",
                 id="healthcheck-disabled"),
    pytest.param({**ROUTED, "healthcheck": {"test": ["NONE"]}}, "no healthcheck",
                 id="healthcheck-none"),
    pytest.param({**ROUTED, "ports": [{"target": 80, "published": "8080"}]}, "host ports",
                 id="ports"),
    pytest.param({**ROUTED, "container_name": "x"}, "container_name", id="container-name"),
    pytest.param({**ROUTED, "deploy": {"replicas": 3}}, "more than one replica",
                 id="replicas"),
])
def test_rollout_spec(svc, blocker) -> None:
    got = rollout.spec(svc)
    assert (blocker in got.blocker if blocker else got.zero_downtime), got.blocker


@pytest.mark.parametrize(("test", "wrapped"), [
    (("CMD", "/bin/healthy"), "[ ! -e /tmp/vigo-drain ] && /bin/healthy"),
    (("CMD", "curl", "-f", "http://x/a b"), "[ ! -e /tmp/vigo-drain ] && curl -f 'http://x/a b'"),
    (("CMD-SHELL", "wget -q -O- localhost || exit 1"),
     "[ ! -e /tmp/vigo-drain ] && wget -q -O- localhost || exit 1"),
])
def test_drain_test(test, wrapped) -> None:
    assert rollout.drain_test(test) == ["CMD-SHELL", wrapped]


@pytest.mark.parametrize(("value", "seconds"), [
    ("1s", 1.0), ("1m30s", 90.0), ("500ms", 0.5), (None, 30.0), (2_000_000_000, 2.0), (5, 5.0)])
def test_seconds(value, seconds) -> None:
    assert rollout.seconds(value, 30.0) == seconds
