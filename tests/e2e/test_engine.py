"""The engine's API on its socket and `docker ps` give vigo the same containers."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.conftest import Host
from tests.support.infra import sh
from vigo.adapters.compose import Compose, DockerError
from vigo.adapters.run import Runner
from vigo.core.model import LABEL_INSTANCE, LABEL_STACK


def both(compose: Compose, labels: list[str]) -> tuple[tuple, tuple]:
    """The socket's answer and the CLI's, asked until a status string ("Up 3 seconds") did not
    tick between the two questions (at most 5 tries; no timing is asserted)."""
    for _ in range(5):
        api = compose.containers(instance=labels[1].split("=", 1)[1])
        cli = compose.containers_cli(labels)
        api, cli = (tuple(sorted(found, key=lambda c: c.id)) for found in (api, cli))
        if api == cli:
            break
    return api, cli


def test_socket_and_cli_agree_on_a_deployed_host(host: Host) -> None:
    host.seed()
    host.apply()
    sh("docker", "stop", "-t", "1", f"{host.prefix}echo-web-1")  # an exited one too
    compose = Compose(Runner())
    labels = [LABEL_STACK, f"{LABEL_INSTANCE}={host.prefix}"]
    api, cli = both(compose, labels)
    assert compose.socket() == "/var/run/docker.sock"  # the socket path was taken
    assert api == cli
    assert {c.stack for c in api} == {"proxy", "whoami", "echo"}
    assert {c.state for c in api} == {"running", "exited"}
    assert all(c.config_hash and c.status and c.image for c in api)
    # One compose project only, as the deployer asks.
    only = compose.containers(project=f"{host.prefix}whoami")
    assert [c.stack for c in only] == ["whoami"]


def test_docker_host_is_respected(host: Host, tmp_path: Path, monkeypatch) -> None:
    host.seed({"whoami": "sha-1a2b3c4"})
    host.apply()
    # The same engine named explicitly: the socket path is asked.
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    compose = Compose(Runner())
    assert {c.stack for c in compose.containers(instance=host.prefix)} == {"proxy", "whoami"}
    # A socket where no engine listens: one clear line, naming it.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    try:
        Compose(Runner()).containers(instance=host.prefix)
        raise AssertionError("no error")
    except DockerError as exc:
        assert str(exc).startswith(f"cannot list containers: the Docker engine does not answer "
                                   f"at unix://{tmp_path}/none.sock")
    # tcp:// goes through the docker CLI (which would speak TLS, contexts...): its error shows.
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    try:
        Compose(Runner()).containers(instance=host.prefix)
        raise AssertionError("no error")
    except DockerError as exc:
        assert "127.0.0.1:1" in str(exc)
    # And vigo apply itself, idle, through the socket named by DOCKER_HOST.
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    res = host.apply("-v")
    assert "$ GET unix:///var/run/docker.sock/containers/json" in res.stderr
    assert "$ docker ps" not in res.stderr and "nothing to do" in res.stdout
    assert os.environ["DOCKER_HOST"] == "unix:///var/run/docker.sock"
