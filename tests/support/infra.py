"""Real infra repos for end-to-end tests: a working clone, a bare remote on disk, files whose
env/*.env are encrypted with the real sops and a real age key."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from tests.support.tree import GIT_ID, GitRepo

SOPS_ENV = {"SOPS_DISABLE_VERSION_CHECK": "1"}


def sh(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None,
       check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})}, text=True,
                         capture_output=True, check=False, input=input)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {res.returncode}:\n{res.stdout}{res.stderr}")
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AgeKey:
    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            sh("age-keygen", "-o", str(path))
        os.chmod(path, 0o600)
        self.recipient = next(line.split(": ", 1)[1] for line in path.read_text().splitlines()
                              if line.startswith("# public key: "))


class InfraRepo(GitRepo):
    """A working clone of the infra repo plus its bare remote (support/tree.py's GitRepo) whose
    env/*.env are encrypted to `recipients`."""

    def __init__(self, root: Path, recipients: list[str]) -> None:
        super().__init__(root)
        self.write(".sops.yaml", "creation_rules:\n  - path_regex: (^|/)env/[^/]+\\.env$\n"
                   f"    age: [{', '.join(recipients)}]\n")

    def write_env(self, rel: str, values: dict[str, str]) -> None:
        """Write a dotenv file (sops form: KEY=VALUE, newlines as \\n) and encrypt it."""
        body = "".join(f"{k}={v.replace(chr(10), chr(92) + 'n')}\n" for k, v in values.items())
        self.write(rel, body)
        sh("sops", "--encrypt", "--in-place", "--input-type", "dotenv", "--output-type",
           "dotenv", rel, cwd=self.work, env=SOPS_ENV)

    def remove(self, rel: str) -> None:
        sh("git", "-C", str(self.work), "rm", "-rq", rel)

    def revert(self, rev: str) -> str:
        sh("git", *GIT_ID, "-C", str(self.work), "revert", "--no-edit", rev)
        sh("git", "-C", str(self.work), "push", "-q", "origin", "main")
        return self.head()


def proxy_compose(prefix: str) -> str:
    """Traefik on a per-test network, routing only this test's containers."""
    return f"""\
services:
  traefik:
    image: traefik:v3.7
    command:
      - --providers.docker=true
      - --providers.docker.exposedbydefault=false
      - --providers.docker.network={prefix}proxy
      - --providers.docker.constraints=Label(`io.vigo.instance`,`{prefix}`)
      - --entrypoints.web.address=:80
      - --ping=true
      - --api=true
      - --api.dashboard=false
      - --entrypoints.vigo.address=:8082
    ports:
      - "127.0.0.1:${{HTTP_PORT}}:80"
    labels:
      - traefik.enable=true
      - traefik.http.routers.{prefix}vigo-api.rule=PathPrefix(`/api`)
      - traefik.http.routers.{prefix}vigo-api.entrypoints=vigo
      - traefik.http.routers.{prefix}vigo-api.service=api@internal
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock:ro
      - ./acme/acme.json:/letsencrypt/acme.json
networks:
  default:
    name: {prefix}proxy
"""


def app_compose(prefix: str, router: str, tag: str, extra_env: str = "") -> str:
    """An app stack whose one service is called `web`, routed by Host(`${<ROUTER>_HOST}`)."""
    var = router.upper().replace("-", "_") + "_HOST"
    return f"""\
services:
  web:
    image: ghcr.io/vigo-example/whoami:{tag}
    env_file:
      - ../../env/global.env
      - ../../env/{router}.env{extra_env}
    labels:
      - traefik.enable=true
      - traefik.http.routers.{prefix}{router}.rule=Host(`${{{var}}}`)
      - traefik.http.routers.{prefix}{router}.entrypoints=web
      - traefik.http.services.{prefix}{router}.loadbalancer.server.port=80
networks:
  default:
    external: true
    name: {prefix}proxy
"""
