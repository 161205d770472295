"""Compose files in the shapes people publish (written for these tests), each through `vigo
check` with the findings a reviewer would expect. The shapes marked `runs` use this machine's
images and also go through `vigo apply` end to end (tests/e2e/test_compose_semantics.py).

`{APP}` and `{NET}` stand for the app image (pinned, with a shell) and the proxy network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.tree import write_tree
from vigo.core.lint import Policy
from vigo.workstation.check import check

APP_IMAGE = "ghcr.io/vigo-example/whoami:sha-1a2b3c4"


@dataclass(frozen=True)
class Shape:
    name: str  # the stack name
    files: dict[str, str]  # stack-folder-relative path -> text
    env: dict[str, str] = field(default_factory=dict)  # env/<stack>.env (values: e2e only)
    expected: tuple[str, ...] = ()  # "rule" for an error, "rule (warning)"
    runs: bool = False  # applied end to end on this machine's images


SHOP = Shape("shop", {"docker-compose.yml": """\
# A web app with a database and a one-shot migration, as the READMEs of most apps show it.
x-logging: &logging
  logging:
    driver: json-file
    options:
      max-size: "10m"
      max-file: "3"

x-app: &app
  image: {APP}
  restart: unless-stopped
  <<: *logging

services:
  db:
    <<: *app
    healthcheck:
      test: ["CMD", "/bin/healthy"]
      interval: 1s
      timeout: 3s
      retries: 30
    volumes:
      - dbdata:/var/lib/data
  migrate:
    image: {APP}
    command: ["sh", "-c", "echo migrating to schema $${SCHEMA_VERSION}"]
    environment:
      SCHEMA_VERSION: "${SCHEMA_VERSION:-3}"
    depends_on:
      db:
        condition: service_healthy
  web:
    <<: *app
    environment:
      DATABASE_HOST: db
      DATABASE_PASSWORD: ${DB_PASSWORD}
    depends_on:
      db:
        condition: service_healthy
      migrate:
        condition: service_completed_successfully
    labels:
      traefik.enable: "true"
      traefik.http.routers.shop.rule: Host(`${SHOP_HOST}`)
      traefik.http.routers.shop.entrypoints: web
      traefik.http.services.shop.loadbalancer.server.port: "80"
    networks: [default, proxy]

networks:
  proxy:
    external: true
    name: {NET}

volumes:
  dbdata: {}
"""}, env={"SHOP_HOST": "shop.example.test", "DB_PASSWORD": "correct horse"}, runs=True)

FILES = Shape("files", {
    "compose.yaml": """\
# Defaults with ${X:-y}, short and long volume syntax, configs, scale and a profile.
x-defaults: &defaults
  restart: unless-stopped
  image: ghcr.io/vigo-example/whoami:${APP_TAG:-sha-1a2b3c4}

services:
  web:
    <<: *defaults
    volumes:
      - ./conf:/etc/app:ro
      - type: bind
        source: ./static
        target: /www/static
        read_only: true
      - cache:/cache
    configs:
      - source: appconf
        target: /etc/app.conf
  worker:
    <<: *defaults
    scale: 2
  spare:
    <<: *defaults
    deploy:
      replicas: 0
  debug:
    image: {APP}
    profiles: [debug]
    command: ["sleep", "3600"]

configs:
  appconf:
    file: ./app.conf

volumes:
  cache:
""",
    "conf/app.ini": "[app]\nname=files\n",
    "static/index.html": "<h1>hi</h1>\n",
    "app.conf": "greeting=hello\n",
}, runs=True)

LATEST = Shape("latest", {"docker-compose.yml": """\
services:
  web:
    image: nginx:${NGINX_TAG:-latest}
    restart: always
"""}, expected=("image-pinned",))

BUILT = Shape("built", {"docker-compose.yml": """\
services:
  app:
    build: .
    image: ghcr.io/x/app:sha-1a2b3c4
    container_name: app
"""}, expected=("build", "container-name"))

DOTENV = Shape("dotenv", {
    "docker-compose.yml": """\
services:
  web:
    image: {APP}
    environment:
      GREETING: ${GREETING:-hi}
""",
    ".env": "GREETING=hello\n",
}, expected=("stack-dotenv",))

ROUTED_PORT = Shape("ported", {"docker-compose.yml": """\
services:
  web:
    image: {APP}
    ports:
      - "8080:80"
    healthcheck:
      test: ["CMD", "/bin/healthy"]
    labels:
      - traefik.enable=true
      - traefik.http.routers.ported.rule=Host(`${PORTED_HOST}`)
    networks: [proxy]
networks:
  proxy:
    external: true
    name: {NET}
"""}, env={"PORTED_HOST": "x"}, expected=("rollout (warning)",))

UNDEFINED = Shape("undefined", {"docker-compose.yml": """\
services:
  web:
    image: {APP}
    labels:
      - traefik.enable=true
      - traefik.http.routers.undefined.rule=Host(`${NOWHERE_HOST}`)
    networks: [proxy]
networks:
  proxy:
    external: true
    name: {NET}
"""}, expected=("label-env",))

SHAPES = (SHOP, FILES, LATEST, BUILT, DOTENV, ROUTED_PORT, UNDEFINED)


def materialise(shape: Shape, net: str = "proxy_default", app: str = APP_IMAGE
                ) -> dict[str, str]:
    """stacks/<name>/... -> text, with the placeholders filled in."""
    return {f"stacks/{shape.name}/{rel}": text.replace("{APP}", app).replace("{NET}", net)
            for rel, text in shape.files.items()}


PROXY = """\
services:
  traefik:
    image: traefik:v3.7
    command: [--providers.docker=true, --providers.docker.exposedbydefault=false]
    ports: ["80:80"]
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock:ro
networks:
  default:
    name: proxy_default
"""


def enc(*keys: str) -> str:
    """A sops-encrypted dotenv file defining `keys` (names only: values are never read)."""
    lines = [f"{k}=ENC[AES256_GCM,data:Zm9v,iv:aXY=,tag:dGFn,type:str]" for k in keys]
    lines += ["sops_age__list_0__map_recipient=age1x", "sops_lastmodified=2024-01-01T00:00:00Z",
              "sops_mac=ENC[AES256_GCM,data:bWFj,iv:aXY=,tag:dGFn,type:str]",
              "sops_unencrypted_suffix=_unencrypted", "sops_version=3.9.0"]
    return "\n".join(lines) + "\n"


def no_compose(_: Path) -> None:
    return None


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_check_finds_what_a_reviewer_would(tmp_path: Path, shape: Shape) -> None:
    files = {"proxy/docker-compose.yml": PROXY, "env/global.env": enc("TZ"),
             ".sops.yaml": "creation_rules:\n  - path_regex: env/.*\\.env$\n    age: [age1x]\n",
             **materialise(shape)}
    if shape.env:
        files[f"env/{shape.name}.env"] = enc(*shape.env)
    write_tree(tmp_path, files)
    found = check(tmp_path, Policy(), no_compose)
    mine = [f for f in found if f.path.startswith(f"stacks/{shape.name}/")]
    assert sorted(f.rule + (" (warning)" if f.severity == "warning" else "") for f in mine) == \
        sorted(shape.expected), [f.message for f in mine]
    assert not [f for f in found if f not in mine and f.severity == "error"], found
    assert all("Traceback" not in f.message for f in found)
