"""`docker compose` started as the docker CLI starts it, without the CLI (adapters/run.py,
PLUGIN_DIRS): the lookup as a table over real folders, then the real plugin behind a
pass-through wrapper in a DOCKER_CONFIG, run by the real Runner."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from vigo.adapters.run import PLUGIN_DIRS, Runner, compose_plugin


def plugin(folder: Path, mode: int = 0o755, body: str = "#!/bin/sh\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "docker-compose"
    path.write_text(body)
    path.chmod(mode)
    return path


def system_plugin() -> str:
    found = [p for d in PLUGIN_DIRS if os.path.isfile(p := os.path.join(d, "docker-compose"))]
    assert found, f"no docker-compose plugin in {PLUGIN_DIRS}: install Compose v2"
    return found[0]


def test_the_lookup_is_the_clis(tmp_path: Path) -> None:
    path = os.environ["PATH"]
    docker = shutil.which("docker")
    assert docker, "docker is not installed"
    home, config = tmp_path / "home", tmp_path / "config"
    (home / ".docker").mkdir(parents=True)
    # no plugin in the config folder: the system's
    assert compose_plugin({"PATH": path, "HOME": str(home)}) == (docker, system_plugin())
    # one in ~/.docker/cli-plugins comes first; DOCKER_CONFIG wins over HOME
    own = plugin(home / ".docker" / "cli-plugins")
    assert compose_plugin({"PATH": path, "HOME": str(home)}) == (docker, str(own))
    other = plugin(config / "cli-plugins")
    assert compose_plugin({"PATH": path, "HOME": str(home), "DOCKER_CONFIG": str(config)}) == (
        docker, str(other))
    # where the CLI's choice is not plain, the CLI runs
    other.chmod(0o644)  # the CLI's pick, not runnable: the CLI says so, not vigo
    assert compose_plugin({"PATH": path, "DOCKER_CONFIG": str(config)}) is None
    (home / ".docker" / "config.json").write_text('{"cliPluginsExtraDirs": ["/opt/p"]}')
    assert compose_plugin({"PATH": path, "HOME": str(home)}) is None
    assert compose_plugin({"PATH": str(tmp_path / "nothing"), "HOME": str(home)}) is None
    # no HOME (a systemd service): the password database's, as the CLI does
    assert compose_plugin({"PATH": path}) == compose_plugin(
        {"PATH": path, "HOME": pwd.getpwuid(os.getuid()).pw_dir})


@pytest.fixture
def wrapped(tmp_path: Path) -> tuple[Path, Path]:
    """A DOCKER_CONFIG whose compose plugin notes each start, then runs the real one."""
    log = tmp_path / "starts.log"
    config = tmp_path / "config"
    plugin(config / "cli-plugins", body=(
        "#!/bin/sh\n"
        f'echo "$DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND $*" >> {log}\n'
        f'exec {system_plugin()} "$@"\n'))
    return config, log


def test_compose_runs_without_the_cli_in_front(wrapped: tuple[Path, Path]) -> None:
    config, log = wrapped
    runner = Runner()
    res = runner.run(("docker", "compose", "version", "--short"),
                     env={"DOCKER_CONFIG": str(config)})
    assert res.ok and res.argv == ("docker", "compose", "version", "--short")
    # the CLI would have asked the plugin for its metadata first: one start, as its plugin
    assert log.read_text().splitlines() == [f"{shutil.which('docker')} compose version --short"]
    cli = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True,
                         text=True, check=True, env={**os.environ, "DOCKER_CONFIG": str(config)})
    assert res.stdout == cli.stdout
    assert "docker-cli-plugin-metadata" in log.read_text()  # the CLI's own lookup, for contrast


def test_an_error_reads_as_the_clis(wrapped: tuple[Path, Path]) -> None:
    config, _ = wrapped
    env = {"DOCKER_CONFIG": str(config), "DOCKER_HOST": "unix:///nonexistent.sock"}
    res = Runner().run(("docker", "compose", "-p", "x", "ps"), env=env)
    cli = subprocess.run(["docker", "compose", "-p", "x", "ps"], capture_output=True, text=True,
                         env={**os.environ, **env})
    assert not res.ok and res.returncode == cli.returncode
    assert res.stderr == cli.stderr and "nonexistent.sock" in res.stderr
