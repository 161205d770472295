"""Docker Swarm: the engine API on the unix socket (services, tasks, nodes, secrets, info) and
the docker CLI for what changes the swarm (`docker stack deploy/rm`, `docker secret
create/rm`, `docker node update --label-add/--label-rm` of vigo's placement labels). Builds
argv and requests, parses answers; decides nothing.

Reads go to the socket (one request each, see adapters/engine.py); when DOCKER_HOST or a docker
context points elsewhere, the same requests go through `docker system dial-stdio`
(`Compose.get` decides, once).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vigo.adapters import engine
from vigo.adapters.compose import Compose, DockerError
from vigo.adapters.run import Result, Runner

# `docker stack deploy` never asks a registry for a digest here: vigo's images are pinned tags
# (image-pinned), and nodes that cannot reach a registry would fail to resolve them.
RESOLVE_IMAGE = "never"


def query(path: str, filters: Mapping[str, Sequence[str]] | None = None, **params: str) -> str:
    """A request path with the engine's JSON `filters` and plain parameters."""
    parts = [f"{k}={quote(v, safe='')}" for k, v in params.items()]
    if filters:
        parts.append("filters=" + quote(json.dumps({k: list(v) for k, v in filters.items()},
                                                   separators=(",", ":")), safe=""))
    return path + ("?" + "&".join(parts) if parts else "")


def deploy_argv(namespace: str, stack_file: Path) -> list[str]:
    """Create or update a stack, removing the services the file no longer has; returns once
    the services are updated in the swarm's store (the wait is vigo's, from UpdateStatus)."""
    return ["docker", "stack", "deploy", "--prune", "--with-registry-auth", "--detach=true",
            "--resolve-image", RESOLVE_IMAGE, "--compose-file", str(stack_file), namespace]


def rm_argv(namespace: str) -> list[str]:
    return ["docker", "stack", "rm", namespace]


def secret_create_argv(name: str, labels: Mapping[str, str]) -> list[str]:
    """The value comes on stdin (`-`): never on the command line."""
    argv = ["docker", "secret", "create"]
    for key, value in sorted(labels.items()):
        argv += ["--label", f"{key}={value}"]
    return [*argv, name, "-"]


def node_labels_argv(node_id: str, add: Mapping[str, str], remove: Sequence[str] = ()
                     ) -> list[str]:
    """Set and remove labels of one node (vigo's placement labels; the caller names them)."""
    argv = ["docker", "node", "update"]
    for key, value in sorted(add.items()):
        argv += ["--label-add", f"{key}={value}"]
    for key in sorted(remove):
        argv += ["--label-rm", key]
    return [*argv, node_id]


class Swarm:
    def __init__(self, runner: Runner, compose: Compose, timeout: float = 600) -> None:
        self.runner = runner
        self.compose = compose  # its endpoint decision (socket or CLI) is shared
        self.timeout = timeout

    # -- reads ------------------------------------------------------------------------------

    def _get(self, target: str) -> Any:
        """One read of the engine's API: its unix socket, or `docker system dial-stdio` for
        any other endpoint (Compose.get decides, the one decision)."""
        try:
            return json.loads(self.compose.get(target))
        except engine.EngineError as exc:
            raise DockerError(str(exc)) from None
        except ValueError as exc:
            raise DockerError(f"the engine's answer to {target.split('?')[0]} is not JSON: "
                              f"{exc}") from None

    def info(self) -> dict[str, Any]:
        found = self._get("/info")
        return found if isinstance(found, dict) else {}

    def node(self, node_id: str) -> dict[str, Any]:
        found = self._get(f"/nodes/{quote(node_id, safe='')}")
        return found if isinstance(found, dict) else {}

    def nodes(self) -> list[dict[str, Any]]:
        found = self._get("/nodes")
        return found if isinstance(found, list) else []

    def services(self, labels: Sequence[str]) -> list[dict[str, Any]]:
        """Every service with all `labels`, with its running/desired task counts."""
        found = self._get(query("/services", {"label": labels}, status="true"))
        return found if isinstance(found, list) else []

    def tasks(self, services: Sequence[str]) -> list[dict[str, Any]]:
        """Every task (of every state Swarm still keeps) of the services named."""
        if not services:
            return []
        found = self._get(query("/tasks", {"service": services}))
        return found if isinstance(found, list) else []

    def secrets(self, labels: Sequence[str]) -> list[dict[str, Any]]:
        found = self._get(query("/secrets", {"label": labels}))
        return found if isinstance(found, list) else []

    # -- changes ----------------------------------------------------------------------------

    def deploy(self, namespace: str, stack_file: Path, docker_config: Path | None = None
               ) -> Result:
        env = {"DOCKER_CONFIG": str(docker_config)} if docker_config else None
        return self.runner.run(deploy_argv(namespace, stack_file), env=env,
                               timeout=self.timeout)

    def rm(self, namespace: str) -> Result:
        return self.runner.run(rm_argv(namespace), timeout=self.timeout)

    def secret_create(self, name: str, value: str, labels: Mapping[str, str]) -> Result:
        return self.runner.run(secret_create_argv(name, labels), input=value, timeout=60)

    def secret_rm(self, names: Sequence[str]) -> Result:
        return self.runner.run(["docker", "secret", "rm", *names], timeout=60)

    def node_labels(self, node_id: str, add: Mapping[str, str], remove: Sequence[str] = ()
                    ) -> Result:
        return self.runner.run(node_labels_argv(node_id, add, remove), timeout=60)

    def logs(self, task_id: str, lines: int = 5) -> str:
        res = self.runner.run(["docker", "service", "logs", "--no-task-ids", "--tail",
                               str(lines), "--raw", task_id], timeout=30)
        return "\n".join((res.stdout + res.stderr).strip().splitlines()[-lines:])
