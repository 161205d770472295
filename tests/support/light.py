"""Light stacks for fault and hostile-content tests: one service each, no proxy, no published
port, so a first apply takes about 3 s instead of 7 (no Traefik to start and gate)."""

from __future__ import annotations

from typing import Any

TAG = "sha-1a2b3c4"
IMAGE = "ghcr.io/vigo-example/whoami"

# A service that turns healthy about 4 s after it starts: the health gate waits that long.
SLOW = """\
    command: ["sh", "-c", "(sleep 4; touch /tmp/ready) & exec /bin/start"]
    healthcheck:
      test: ["CMD", "test", "-e", "/tmp/ready"]
      interval: 1s
      timeout: 3s
      retries: 3
      start_period: 60s
"""


def compose(name: str, tag: str = TAG, extra: str = "") -> str:
    """stacks/<name>/docker-compose.yml: service `web` with env/<name>.env; `extra` lines are
    added under the service."""
    return (f"services:\n  web:\n    image: {IMAGE}:{tag}\n    env_file:\n"
            f"      - ../../env/{name}.env\n{extra}")


def add(host: Any, name: str, tag: str = TAG, extra: str = "",
        secrets: dict[str, str] | None = None) -> None:
    """Write a light stack and its encrypted env file into the host's infra repo."""
    host.repo.write(f"stacks/{name}/docker-compose.yml", compose(name, tag, extra))
    host.repo.write_env(f"env/{name}.env", {"STACK_ID": f"id-{name}", **(secrets or {})})


def seed(host: Any, *names: str) -> str:
    for name in names:
        add(host, name)
    return host.repo.commit("light stacks: " + ", ".join(names))
