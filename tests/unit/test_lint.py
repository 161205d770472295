"""Table-driven tests of the `vigo check` rules (vigo.core.lint): inputs are small trees
in tmp_path,
outputs the exact rule ids found ("rule" for an error, "rule (warning)" for a warning)."""

import os
from pathlib import Path
from textwrap import dedent, indent

import pytest

from tests.support.tree import write_tree
from vigo.core.lint import (
    RULES,
    Finding,
    Policy,
    env_key_names,
    lint_repo_files,
    lint_stack,
    lint_tree,
)

PROXY = """\
version: "3.9"
services:
  traefik:
    image: traefik:v3.1
    command:
      - --providers.docker=true
      - --providers.docker.exposedbydefault=false
      - --entrypoints.websecure.address=:443
    ports: ["80:80", "443:443"]
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock:ro
      - ./acme/acme.json:/letsencrypt/acme.json
    restart: unless-stopped
networks:
  default:
    name: proxy_default
"""


def enc(*keys: str) -> str:
    """A sops-encrypted dotenv file defining `keys`."""
    lines = [f"{k}=ENC[AES256_GCM,data:Zm9v,iv:aXY=,tag:dGFn,type:str]" for k in keys]
    lines += [
        "sops_age__list_0__map_recipient=age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
        "sops_lastmodified=2024-01-01T00:00:00Z",
        "sops_mac=ENC[AES256_GCM,data:bWFj,iv:aXY=,tag:dGFn,type:str]",
        "sops_unencrypted_suffix=_unencrypted",
        "sops_version=3.9.0",
    ]
    return "\n".join(lines) + "\n"


BASE = {
    "proxy/docker-compose.yml": PROXY,
    "env/global.env": enc("ACME_EMAIL"),
    "env/app.env": enc("APP_HOST", "IMAGE", "DATA_DIR"),
    "env/other.env": enc("OTHER_HOST"),
}

SHA = "ghcr.io/org/app:sha-abc1234"
ROUTED = """\
labels:
  - traefik.enable=true
  - traefik.http.routers.app.rule=Host(`${APP_HOST}`)
  - traefik.http.services.app.loadbalancer.server.port=80
"""
PROXY_NET = """\
networks:
  default:
    external: true
    name: proxy_default
"""


def stack(extra: str = "", *, image: str | None = SHA, top: str = "", name: str = "app") -> dict:
    """stacks/<name>/docker-compose.yml with one service `web`: `extra` service keys, `top`
    top-level keys."""
    service = (f"image: {image}\n" if image else "") + dedent(extra)
    text = "services:\n  web:\n" + indent(service, "    ") + dedent(top)
    return {f"stacks/{name}/docker-compose.yml": text}


def routed(router: str, service: str, host: str, name: str) -> dict:
    labels = f"""\
        labels:
          - traefik.enable=true
          - traefik.http.routers.{router}.rule={host}
          - traefik.http.services.{service}.loadbalancer.server.port=80
        """
    return stack(labels, top=PROXY_NET, name=name)


def proxy(*edits: str) -> dict:
    """proxy/docker-compose.yml with (old, new) text replacements."""
    text = PROXY
    for old, new in zip(edits[::2], edits[1::2], strict=True):
        assert old in text
        text = text.replace(old, new)
    return {"proxy/docker-compose.yml": text}


CMD = "      - --providers.docker=true\n"


STRICT = Policy()


def case(name: str, files: dict, *expected: str, policy: Policy = STRICT):
    return pytest.param(files, sorted(expected), policy, id=name)




def ids(findings: list[Finding]) -> list[str]:
    return sorted(f.rule if f.severity == "error" else f"{f.rule} (warning)" for f in findings)


W = " (warning)"

TREE_CASES = [
    # good trees
    case("good: proxy only", {}),
    case("good: routed app as in the design", stack(ROUTED, top=PROXY_NET)),
    case(
        "good: version, x- anchors and merge keys",
        {
            "stacks/app/docker-compose.yml": "version: '3.9'\n"
            "x-defaults: &defaults\n  restart: unless-stopped\n"
            f"services:\n  web:\n    <<: *defaults\n    image: {SHA}\n"
        },
    ),
    case("good: compose.yaml", {"stacks/app/compose.yaml": "services:\n  web:\n    image: " + SHA}),
    # rule 1: structure
    case(
        "parse: invalid YAML", {"stacks/app/docker-compose.yml": "services: [\n"}, "compose-parse"
    ),
    case(
        "parse: duplicate key",
        {"stacks/app/docker-compose.yml": f"services:\n  web:\n    image: {SHA}\n    image: x\n"},
        "compose-parse",
    ),
    case("parse: not a mapping", {"stacks/app/docker-compose.yml": "- web\n"}, "compose-parse"),
    case("parse: empty file", {"stacks/app/docker-compose.yml": ""}, "compose-parse"),
    case("parse: no services", {"stacks/app/docker-compose.yml": "volumes: {}\n"}, "compose-parse"),
    case(
        "parse: service not a mapping",
        {"stacks/app/docker-compose.yml": "services:\n  web: nginx\n"},
        "compose-parse",
    ),
    case("image: missing", stack("restart: always\n", image=None), "service-image"),
    case("key: unknown top-level key", stack(top="deploy:\n  replicas: 2\n"), "compose-key"),
    # rule 2: pinned images
    case("pin: sha tag, 40 hex", stack(image="app:sha-" + "a" * 40)),
    case("pin: digest", stack(image="ghcr.io/org/app@sha256:" + "0" * 64)),
    case("pin: tag and digest", stack(image="ghcr.io/org/app:v1@sha256:" + "f" * 64)),
    case("pin: registry port and sha", stack(image="localhost:5000/app:sha-1234567")),
    case("pin: latest", stack(image="ghcr.io/org/app:latest"), "image-pinned"),
    case("pin: no tag", stack(image="nginx"), "image-pinned"),
    case("pin: registry port, no tag", stack(image="localhost:5000/app"), "image-pinned"),
    case("pin: branch tag", stack(image="ghcr.io/org/app:branch-main"), "image-pinned"),
    case("pin: bad digest", stack(image="app@sha256:abc"), "image-pinned"),
    case("pin: release tag", stack(image="ghcr.io/org/app:v1.2.3"), "image-pinned" + W),
    case("pin: sha too short", stack(image="app:sha-abc12"), "image-pinned" + W),
    case("pin: sha not hex", stack(image="app:sha-xyz1234"), "image-pinned" + W),
    case(
        "pin: allow_unpinned",
        stack(image="ghcr.io/org/app:latest"),
        policy=Policy(allow_unpinned=frozenset({"app"})),
    ),
    case(
        "pin: allow_unpinned is per stack",
        stack(image="ghcr.io/org/app:latest"),
        "image-pinned",
        policy=Policy(allow_unpinned=frozenset({"other"})),
    ),
    case("pin: ${VAR} from env cannot be checked", stack(image="${IMAGE}"), "image-pinned" + W),
    case("pin: ${VAR} undefined cannot be checked", stack(image="app:${TAG}"), "image-pinned" + W),
    case("pin: unset var, pinned default", stack(image="${WEB_IMAGE:-" + SHA + "}")),
    case("pin: unset var, latest default", stack(image="${WEB_IMAGE:-app:latest}"), "image-pinned"),
    case("pin: proxy release tag is fine", proxy("traefik:v3.1", "traefik:v3.1.2")),
    case("pin: proxy latest", proxy("traefik:v3.1", "traefik:latest"), "image-pinned" + W),
    case("pin: proxy no tag", proxy("traefik:v3.1", "traefik"), "image-pinned" + W),
    # rule 4: privileges
    case("priv: privileged", stack("privileged: true\n"), "privileged"),
    case("priv: privileged false", stack("privileged: false\n")),
    case(
        "priv: privileged through a YAML merge key",
        {
            "stacks/app/docker-compose.yml": "x-priv: &priv\n  privileged: true\n"
            f"services:\n  web:\n    <<: *priv\n    image: {SHA}\n"
        },
        "privileged",
    ),
    case("priv: pid host", stack("pid: host\n"), "host-namespace"),
    case("priv: ipc host", stack("ipc: host\n"), "host-namespace"),
    case("priv: network_mode host", stack("network_mode: host\n"), "host-namespace"),
    case("priv: userns_mode host", stack("userns_mode: host\n"), "host-namespace"),
    case("priv: uts host", stack("uts: host\n"), "host-namespace"),
    case("priv: pid of a service", stack("pid: service:db\n")),
    case("priv: devices", stack("devices: [/dev/fuse]\n"), "devices"),
    case("priv: allowed caps", stack("cap_add: [NET_BIND_SERVICE, CAP_CHOWN, kill]\n")),
    case("priv: cap SYS_ADMIN", stack("cap_add: [SYS_ADMIN]\n"), "cap-add"),
    case("priv: cap ALL", stack("cap_add: [ALL]\n"), "cap-add"),
    case(
        "priv: cap ALL even if allowed",
        stack("cap_add: [ALL]\n"),
        "cap-add",
        policy=Policy(allow_caps=frozenset({"ALL"})),
    ),
    case(
        "priv: cap allowed by policy",
        stack("cap_add: [SYS_PTRACE]\n"),
        policy=Policy(allow_caps=frozenset({"SYS_PTRACE"})),
    ),
    case(
        "sock: app mounts it",
        stack("volumes: [/var/run/docker.sock:/var/run/docker.sock:ro]\n"),
        "docker-sock",
    ),
    case(
        "sock: app mounts /run/docker.sock, long syntax",
        stack(
            """\
            volumes:
              - type: bind
                source: /run/docker.sock
                target: /var/run/docker.sock
                read_only: true
            """
        ),
        "docker-sock",
    ),
    case(
        "sock: app, sock path allowed as host path",
        stack("volumes: [/var/run/docker.sock:/s]\n"),
        "docker-sock",
        policy=Policy(allow_host_paths=frozenset({"/var/run"})),
    ),
    case(
        "sock: proxy writable",
        proxy("docker.sock:/var/run/docker.sock:ro", "docker.sock:/var/run/docker.sock"),
        "docker-sock",
    ),
    case(
        "sock: proxy, ro among options",
        proxy("docker.sock:/var/run/docker.sock:ro", "docker.sock:/var/run/docker.sock:z,ro"),
    ),
    case(
        "sock: proxy long syntax read_only",
        proxy(
            "- /var/run/docker.sock:/var/run/docker.sock:ro",
            "- {type: bind, source: /var/run/docker.sock, target: /s, read_only: true}",
        ),
    ),
    case(
        "sock: proxy long syntax writable",
        proxy(
            "- /var/run/docker.sock:/var/run/docker.sock:ro",
            "- {type: bind, source: /var/run/docker.sock, target: /s}",
        ),
        "docker-sock",
    ),
    # rule 5: paths
    case("path: bind inside the stack", stack("volumes: [./data:/data, ../../env:/e:ro]\n")),
    case("path: named and anonymous volumes", stack("volumes: [data:/data, /cache]\n")),
    case("path: bind escapes", stack("volumes: ['../../../etc:/etc']\n"), "path-escape"),
    case("path: absolute bind", stack("volumes: [/srv/data:/data]\n"), "host-path"),
    case("path: home bind", stack("volumes: ['~/data:/data']\n"), "host-path"),
    case(
        "path: absolute bind, allowed prefix",
        stack("volumes: [/srv/data/app:/data]\n"),
        policy=Policy(allow_host_paths=frozenset({"/srv/data/"})),
    ),
    case(
        "path: allowed prefix is by path component",
        stack("volumes: [/srv/database:/data]\n"),
        "host-path",
        policy=Policy(allow_host_paths=frozenset({"/srv/data"})),
    ),
    case(
        "path: long syntax bind",
        stack("volumes:\n  - {type: bind, source: /etc, target: /h}\n"),
        "host-path",
    ),
    case("path: bind from env var", stack("volumes: ['${DATA_DIR}:/data']\n"), "path-escape" + W),
    case("path: bind from unset var, default", stack("volumes: ['${X:-./data}:/data']\n")),
    case("path: env_file escapes", stack("env_file: ../../../x.env\n"), "path-escape"),
    case("env-file: own folder, global, own env", stack(
        "env_file: [./app.env, ../../env/global.env, ../../env/app.env]\n")),
    case("env-file: another stack's env", stack("env_file: [../../env/db.env]\n"), "env-file"),
    case("env-file: another stack's folder", stack("env_file: [../db/.env]\n"), "env-file"),
    case("env-file: defaulted variable name",
         stack("env_file: ['../../env/${X:-db}.env']\n"), "env-file"),
    case("env-file: encrypted variable name", {
        **stack("env_file: ['../../env/${X}.env']\n"),
        "env/app.env": "X=ENC[AES256_GCM,data:x]\n"}, "env-file"),
    case("env-file: label_file only from the stack's folder",
         stack("label_file: ../../env/app.env\n"), "env-file"),

    case("path: env_file absolute", stack("env_file: [/etc/app.env]\n"), "host-path"),
    case(
        "path: env_file long form",
        stack("env_file:\n  - path: ../../env/app.env\n  - path: ../../../x.env\n"),
        "path-escape",
    ),
    case(
        "path: secrets and configs files",
        stack(top="secrets:\n  s: {file: ../../../s.txt}\nconfigs:\n  c: {file: /etc/c}\n"),
        "host-path",
        "path-escape",
    ),
    case(
        "path: bind-mounted named volume",
        stack(
            "volumes: [data:/data]\n",
            top="volumes:\n  data:\n    driver_opts: {type: none, o: bind, device: /srv/x}\n",
        ),
        "host-path",
    ),
    case(
        "path: extends file escapes",
        stack("extends: {file: ../../../base.yml, service: web}\n"),
        "path-escape",
    ),
    case("path: build", stack("build: .\n"), "build"),
    case(
        "path: remote include",
        stack(top="include: [https://example.com/c.yml]\n"),
        "remote-include",
    ),
    case(
        "path: remote include, long form",
        stack(top="include:\n  - path: oci://registry.example.com/c:1\n"),
        "remote-include",
    ),
    case(
        "path: git include string",
        stack(top="include: git@github.com:org/repo.git\n"),
        "remote-include",
    ),
    case("path: local include escapes", stack(top="include: [../../../x.yml]\n"), "path-escape"),
    case(
        "path: included file is linted too",
        {
            **stack(top="include: [../../common/db.yml]\n"),
            "common/db.yml": f"services:\n  db:\n    image: {SHA}\n    privileged: true\n",
        },
        "privileged",
    ),
    case(
        "path: extends base is linted, partial services fine",
        {
            **stack("extends: {file: base.yml, service: base}\n", image=None),
            "stacks/app/base.yml": "services:\n  base:\n    image: app:latest\n",
        },
        "image-pinned",
    ),
    # rule 6: identity
    case("identity: name", stack(top="name: app\n"), "project-name"),
    case("identity: container_name", stack("container_name: web\n"), "container-name"),
    # rollout: routed services with a healthcheck that cannot run twice
    case("rollout: routed with healthcheck rolls",
         stack(ROUTED + "healthcheck: {test: [CMD, /bin/healthy]}\nnetworks: [proxy]\n",
               top="networks:\n  proxy:\n    external: true\n    name: proxy_default\n")),
    case("rollout: host ports block it",
         stack(ROUTED + "healthcheck: {test: [CMD, /bin/healthy]}\nports: ['8080:80']\n"
               "networks: [proxy]\n",
               top="networks:\n  proxy:\n    external: true\n    name: proxy_default\n"),
         "rollout (warning)"),
    case("rollout: opted out with the label is fine",
         stack(ROUTED + "  - io.vigo.core.rollout=recreate\nhealthcheck: {test: [CMD, x]}\n"
               "ports: ['8080:80']\nnetworks: [proxy]\n",
               top="networks:\n  proxy:\n    external: true\n    name: proxy_default\n")),
    # rule 7: Traefik
    case(
        "traefik: distinct stacks",
        {
            **routed("app", "app", "Host(`${APP_HOST}`)", "app"),
            **routed("other", "other", "Host(`${OTHER_HOST}`)", "other"),
        },
    ),
    case(
        "traefik: duplicate router",
        {
            **routed("web", "app", "Host(`${APP_HOST}`)", "app"),
            **routed("web", "other", "Host(`${OTHER_HOST}`)", "other"),
        },
        "traefik-router-unique",
    ),
    case(
        "traefik: duplicate service",
        {
            **routed("app", "web", "Host(`${APP_HOST}`)", "app"),
            **routed("other", "web", "Host(`${OTHER_HOST}`)", "other"),
        },
        "traefik-service-unique",
    ),
    case(
        "traefik: duplicate host rule text",
        {
            **routed("app", "app", "Host(`a.example.com`)", "app"),
            **routed("other", "other", "Host(`a.example.com`)", "other"),
        },
        "traefik-host-unique",
    ),
    case(
        "traefik: same placeholder text, undefined in one stack: empty there, no clash",
        {
            **routed("app", "app", "Host(`${APP_HOST}`)", "app"),
            **routed("other", "other", "Host(`${APP_HOST}`)", "other"),
        },
        "label-env",  # APP_HOST is not defined for stack "other"
    ),
    case(
        "traefik: same variable in each stack's own env file waits for the values",
        {
            **routed("app", "app", "Host(`${APP_HOST}`)", "app"),
            **routed("other", "other", "Host(`${APP_HOST}`)", "other"),
            "env/other.env": enc("APP_HOST"),
        },
        "traefik-host-unique" + W,
    ),
    case(
        "traefik: same variable from env/global.env clashes after interpolation",
        {
            **routed("app", "app", "Host(`${ACME_EMAIL}`)", "app"),
            **routed("other", "other", "Host(`${ACME_EMAIL}`)", "other"),
        },
        "traefik-host-unique",
    ),
    case(
        "traefik: a global variable in two different rules",
        {
            **routed("app", "app", "Host(`app.${ACME_EMAIL}`)", "app"),
            **routed("other", "other", "Host(`other.${ACME_EMAIL}`)", "other"),
        },
    ),
    case(
        "traefik: a stack overrides the global variable: waits for the values",
        {
            **routed("app", "app", "Host(`${ACME_EMAIL}`)", "app"),
            **routed("other", "other", "Host(`${ACME_EMAIL}`)", "other"),
            "env/other.env": enc("ACME_EMAIL"),
        },
        "traefik-host-unique" + W,
    ),
    case(
        "traefik: the same default of undefined variables clashes",
        {
            **routed("app", "app", "Host(`${WEB_HOST:-a.example.com}`)", "app"),
            **routed("other", "other", "Host(`${SITE_HOST:-a.example.com}`)", "other"),
        },
        "traefik-host-unique",
    ),
    case(
        "traefik: router and service names from each stack's own variable",
        {
            **routed("${APP_HOST}", "${APP_HOST}", "Host(`a.example.com`)", "app"),
            **routed("${APP_HOST}", "${APP_HOST}", "Host(`b.example.com`)", "other"),
            "env/other.env": enc("APP_HOST"),
        },
        "traefik-router-unique" + W,
        "traefik-service-unique" + W,
    ),
    case(
        "traefik: router names from an undefined variable's default clash",
        {
            **routed("${R:-web}", "app", "Host(`a.example.com`)", "app"),
            **routed("web", "other", "Host(`b.example.com`)", "other"),
        },
        "traefik-router-unique",
    ),
    case(
        "traefik: same host, different paths",
        {
            **routed("app", "app", "Host(`a.example.com`)", "app"),
            **routed("other", "other", "Host(`a.example.com`) && PathPrefix(`/api`)", "other"),
        },
    ),
    case(
        "traefik: duplicates of a disabled service are ignored",
        {
            **routed("app", "app", "Host(`a.example.com`)", "app"),
            **stack(
                "labels:\n  traefik.enable: false\n  traefik.http.routers.app.rule: x\n",
                name="other",
            ),
        },
    ),
    case(
        "traefik: mapping-form labels",
        {
            **routed("app", "app", "Host(`a.example.com`)", "app"),
            **stack(
                "labels:\n  traefik.enable: true\n  traefik.http.routers.app.entrypoints: web\n",
                top=PROXY_NET,
                name="other",
            ),
        },
        "traefik-router-unique",
    ),
    case("traefik: routed, not on the proxy network", stack(ROUTED), "traefik-network"),
    case(
        "traefik: external network of another name",
        stack(ROUTED, top=PROXY_NET.replace("proxy_default", "edge")),
        "traefik-network", "shared-resource" + W,  # and no stack creates `edge`
    ),
    case(
        "traefik: proxy network under another key",
        stack(
            ROUTED + "networks: [front, back]\n",
            top="networks:\n  front: {external: true, name: proxy_default}\n  back: {}\n",
        ),
    ),
    case(
        "traefik: proxy network name from the proxy file",
        {
            **proxy("name: proxy_default", "name: edge"),
            **stack(ROUTED, top=PROXY_NET.replace("proxy_default", "edge")),
        },
    ),
    case(
        "traefik: network_mode instead of networks",
        stack(ROUTED + "network_mode: none\n", top=PROXY_NET),
        "traefik-network",
    ),
    case(
        "label-env: undefined variable",
        stack("labels: ['traefik.http.routers.x.rule=Host(`${NOPE}`)']\n"),
        "label-env",
    ),
    case("label-env: bare $VAR undefined", stack("labels: [a=$NOPE]\n"), "label-env"),
    case("label-env: required ${VAR:?}", stack("labels: ['a=${NOPE:?set it}']\n"), "label-env"),
    case("label-env: malformed", stack("labels: ['a=${1x}']\n"), "label-env"),
    case("label-env: defaults and escapes", stack("labels: ['a=${NOPE:-x}$$HOME${NO-}']\n")),
    case("label-env: from env/global.env", stack("labels: ['a=${ACME_EMAIL}']\n")),
    case(
        "dashboard: insecure",
        proxy(CMD, CMD + "      - --api.insecure=true\n"),
        "traefik-dashboard",
    ),
    case(
        "dashboard: insecure flag",
        proxy(CMD, CMD + "      - --api.insecure\n"),
        "traefik-dashboard",
    ),
    case("dashboard: insecure false", proxy(CMD, CMD + "      - --api.insecure=false\n")),
    case(
        "dashboard: insecure by environment",
        proxy("    restart:", "    environment: {TRAEFIK_API_INSECURE: 'true'}\n    restart:"),
        "traefik-dashboard",
    ),
    case(
        "dashboard: no router",
        proxy(CMD, CMD + "      - --api.dashboard=true\n"),
        "traefik-dashboard" + W,
    ),
    case(
        "dashboard: behind a router",
        proxy(
            CMD,
            CMD + "      - --api.dashboard=true\n",
            "    restart:",
            "    labels:\n"
            "      - traefik.enable=true\n"
            "      - traefik.http.routers.dash.rule=Host(`traefik.example.com`)\n"
            "      - traefik.http.routers.dash.service=api@internal\n"
            "      - traefik.http.routers.dash.middlewares=auth\n"
            "    restart:",
        ),
    ),
    # a stack folder's .env
    case("dotenv: compose would read it, vigo does not: refused",
         {**stack(), "stacks/app/.env": "GREETING=hi\n"}, "stack-dotenv"),
    case("dotenv: the proxy's too", {"proxy/.env": "X=1\n"}, "stack-dotenv"),
    case("dotenv: named as env_file, plain defaults",
         {**stack("env_file: .env\n"), "stacks/app/.env": "GREETING=hi\nLOG_LEVEL=info\n"}),
    case("dotenv: named as env_file in the long form",
         {**stack("env_file:\n  - path: ./.env\n    required: false\n"),
          "stacks/app/.env": "GREETING=hi\n"}),
    case("dotenv: named as env_file, with secret-looking keys",
         {**stack("env_file: [.env]\n"),
          "stacks/app/.env": "GREETING=hi\nDB_PASSWORD=x\napi-token=y\nMONKEY=z\n"},
         "stack-dotenv" + W),
    case("dotenv: another file named .env elsewhere is not the stack's",
         {**stack("env_file: conf/.env\n"), "stacks/app/conf/.env": "A=1\n"}),
    # stacks layout and names
    case(
        "layout: both compose files",
        {**stack(), "stacks/app/compose.yaml": f"services:\n  web:\n    image: {SHA}\n"},
        "stack-layout",
    ),
    case("layout: no compose file", {"stacks/app/README.md": "x"}, "stack-layout"),
    case("layout: compose file is a folder", {"stacks/app/compose.yml/x": "x"}, "stack-layout"),
    case("layout: override file", {**stack(), "stacks/app/compose.override.yml": "x"},
         "stack-layout"),
    case("layout: compose.yml only is linted", {"stacks/app/compose.yml": "x"}, "compose-parse"),
    case("name: uppercase", stack(name="My_App"), "stack-name"),
    case("name: proxy is reserved", stack(name="proxy"), "stack-name"),
    case("name: starts with '-'", stack(name="-app"), "stack-name"),
]


@pytest.mark.parametrize(("files", "expected", "policy"), TREE_CASES)
def test_tree_rules(tmp_path: Path, files: dict, expected: list[str], policy: Policy) -> None:
    write_tree(tmp_path, {**BASE, **files})
    found = lint_tree(tmp_path, policy)
    assert ids(found) == expected, [f.message for f in found]
    assert {f.rule for f in found} <= set(RULES)
    assert all(f.severity in ("error", "warning") and f.message and f.fix for f in found)


SOPS = "creation_rules:\n  - path_regex: env/.*\\.env$\n    age: [age1xyz]\n"

REPO_CASES = [
    case(
        "good repo",
        {
            ".sops.yaml": SOPS,
            "env/app.env": enc("A"),
            "env/global.env": enc("B", "NOTE_unencrypted"),
            "hosts/README.md": "per-host overlays",
            "hosts/h1/env/app.env": enc("A"),
            "hosts/h1/stacks/app/docker-compose.yml": "services: {}\n",
            "hosts/h1/proxy/docker-compose.yml": "services: {}\n",
            "proxy/docker-compose.yml": PROXY,
        },
    ),
    case("env: plaintext", {".sops.yaml": SOPS, "env/app.env": "A=1\n"}, "env-encrypted"),
    case(
        "env: plaintext host env",
        {".sops.yaml": SOPS, "hosts/h1/env/a.env": "A=1\n"},
        "env-encrypted",
    ),
    case(
        "env: empty file is not encrypted", {".sops.yaml": SOPS, "env/a.env": ""}, "env-encrypted"
    ),
    case(
        "env: clear value added to an encrypted file",
        {".sops.yaml": SOPS, "env/app.env": enc("A") + "B=clear\n"},
        "env-encrypted",
    ),
    case(
        "env: unencrypted suffix kept in clear",
        {".sops.yaml": SOPS, "env/app.env": enc("A") + "MODE_unencrypted=dev\n"},
    ),
    case("sops: no .sops.yaml", {"env/app.env": enc("A")}, "sops-coverage"),
    case("sops: no env files, no .sops.yaml", {"proxy/docker-compose.yml": PROXY}),
    case(
        "sops: file not matched",
        {
            ".sops.yaml": "creation_rules:\n  - path_regex: ^env/[^/]+\\.env$\n",
            "env/app.env": enc("A"),
            "hosts/h1/env/app.env": enc("A"),
        },
        "sops-coverage",
    ),
    case(
        "sops: rule without path_regex matches all",
        {".sops.yaml": "creation_rules:\n  - age: [age1xyz]\n", "env/app.env": enc("A")},
    ),
    case(
        "sops: invalid regex",
        {".sops.yaml": "creation_rules:\n  - path_regex: '(env'\n", "env/app.env": enc("A")},
        "sops-coverage",
        "sops-coverage",
    ),
    case(
        "sops: no creation_rules",
        {".sops.yaml": "stores: {}\n", "env/app.env": enc("A")},
        "sops-coverage",
    ),
    case("overlay: other folder", {"hosts/h1/ops/deploy.sh": "x"}, "overlay-shape"),
    case("overlay: file at the top", {"hosts/h1/README.md": "x"}, "overlay-shape"),
    case("overlay: env as a file", {"hosts/h1/env": "x"}, "overlay-shape"),
]


@pytest.mark.parametrize(("files", "expected", "policy"), REPO_CASES)
def test_repo_rules(tmp_path: Path, files: dict, expected: list[str], policy: Policy) -> None:
    write_tree(tmp_path, files)
    found = lint_repo_files(tmp_path)
    assert ids(found) == expected, [f.message for f in found]
    assert {f.rule for f in found} <= set(RULES)


@pytest.mark.parametrize(
    ("link", "target", "expected_path"),
    [
        ("stacks/app/docker-compose.yml", "/etc/hostname", "stacks/app/docker-compose.yml"),
        ("hosts/h1/env", "../../env", "hosts/h1/env"),
        ("env/app.env", "global.env", "env/app.env"),
    ],
)
def test_symlinks(tmp_path: Path, link: str, target: str, expected_path: str) -> None:
    write_tree(tmp_path, {".sops.yaml": SOPS, "env/global.env": enc("A"), "stacks/app/x": ""})
    (tmp_path / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, tmp_path / link)
    found = lint_repo_files(tmp_path)
    assert [(f.rule, f.path) for f in found] == [("symlink", expected_path)]


def test_git_folder_is_not_walked(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    os.symlink("/etc", tmp_path / ".git" / "link")
    assert lint_repo_files(tmp_path) == []


def test_findings_never_show_env_values(tmp_path: Path) -> None:
    secrets = ["hunter2-SECRET", "c3VwZXJzZWNyZXQ=", "postgres://u:pw-XYZ@db/x", "MIIEvQIBADAN"]
    plaintext = (
        f"DB_PASSWORD={secrets[0]}\n"
        f"export TOKEN={secrets[1]}\n"
        f"URL={secrets[2]}\n"
        "-----BEGIN PRIVATE KEY-----\n"
        f"{secrets[3]}Bgkq=\n"
        "-----END PRIVATE KEY-----\n"
    )
    write_tree(
        tmp_path,
        {
            **BASE,
            ".sops.yaml": SOPS,
            "env/app.env": plaintext,
            "hosts/h1/env/app.env": enc("A") + plaintext,
            "hosts/h1/stray.txt": plaintext,
            **stack("labels: ['traefik.http.routers.x.rule=Host(`${DB_PASSWORD}${NOPE}`)']\n"),
        },
    )
    found = lint_repo_files(tmp_path) + lint_tree(tmp_path)
    assert {f.rule for f in found} >= {"env-encrypted", "overlay-shape", "label-env"}
    for finding in found:
        text = " ".join(str(v) for v in vars(finding).values())
        for secret in secrets:
            assert secret not in text
    # the plaintext file is reported once, at its first variable, without naming keys
    [plain] = [f for f in found if f.path == "env/app.env"]
    assert plain.line == 1 and "DB_PASSWORD" not in plain.message


def test_env_key_names(tmp_path: Path) -> None:
    path = tmp_path / "app.env"
    path.write_text("# comment=x\n\nA=ENC[...]\nexport B=1\n C = 2\nNOVALUE\n" + enc("D"))
    assert env_key_names(path) == {"A", "B", "C", "D"}
    assert env_key_names(tmp_path / "missing.env") == set()


def test_finding_fields(tmp_path: Path) -> None:
    write_tree(tmp_path, {**BASE, **stack(image="ghcr.io/org/app:latest")})
    [finding] = lint_tree(tmp_path)
    assert finding == Finding(
        rule="image-pinned",
        severity="error",
        path="stacks/app/docker-compose.yml",
        line=3,
        message=finding.message,
        fix=finding.fix,
    )
    assert "stack 'app'" in finding.message and "service 'web'" in finding.message
    assert "'latest'" in finding.message


def test_lint_stack_relative_and_absolute_path(tmp_path: Path) -> None:
    write_tree(tmp_path, {**BASE, **stack("labels: ['a=${APP_HOST}', 'b=${NOPE}']\n")})
    rel = Path("stacks/app/docker-compose.yml")
    by_rel = lint_stack(tmp_path, "app", rel, {"APP_HOST"}, Policy())
    by_abs = lint_stack(tmp_path, "app", tmp_path / rel, {"APP_HOST"}, Policy())
    assert by_rel == by_abs
    assert [(f.rule, f.path, f.line) for f in by_rel] == [
        ("label-env", "stacks/app/docker-compose.yml", 4)
    ]


def test_lint_stack_proxy_may_mount_the_socket(tmp_path: Path) -> None:
    write_tree(tmp_path, BASE)
    compose = Path("proxy/docker-compose.yml")
    assert lint_stack(tmp_path, "proxy", compose, set(), Policy()) == []
    as_app = lint_stack(tmp_path, "app", compose, set(), Policy())
    assert ids(as_app) == ["docker-sock", "image-pinned (warning)"]


def test_parse_error_has_line(tmp_path: Path) -> None:
    write_tree(tmp_path, {**BASE, "stacks/app/docker-compose.yml": "services:\n  web:\n   - [\n"})
    [finding] = lint_tree(tmp_path)
    assert finding.rule == "compose-parse" and finding.line is not None


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "infra"


def test_example_infra_repo_is_clean() -> None:
    """The example repo, encrypted by the real sops, passes every rule."""
    assert lint_repo_files(EXAMPLE) == []
    assert lint_tree(EXAMPLE) == []


def test_dotenv_findings_name_lines_never_keys_or_values(tmp_path: Path) -> None:
    write_tree(tmp_path, {**BASE, **stack("env_file: .env\n"),
                          "stacks/app/.env": "GREETING=hi\nDB_PASSWORD=hunter2\n"})
    (found,) = [f for f in lint_tree(tmp_path) if f.rule == "stack-dotenv"]
    assert (found.path, found.line) == ("stacks/app/.env", 2)
    assert "hunter2" not in found.message + found.fix
    assert "DB_PASSWORD" not in found.message + found.fix


def test_dotenv_is_refused_by_the_per_stack_rules_apply_runs(tmp_path: Path) -> None:
    write_tree(tmp_path, {**BASE, **stack(), "stacks/app/.env": "GREETING=hi\n"})
    found = lint_stack(tmp_path, "app", Path("stacks/app/docker-compose.yml"), set(), STRICT)
    (dotenv,) = [f for f in found if f.rule == "stack-dotenv"]
    assert dotenv.severity == "error" and "env/app.env" in dotenv.fix


def test_every_family_module_is_registered_and_ids_are_unique() -> None:
    """A rule family is one module of vigo.core.lint named in FAMILIES (a module left out
    would never run); an id registered twice is refused when the module loads."""
    import pkgutil

    import vigo.core.lint as lint_pkg
    from vigo.core.lint import FAMILIES
    from vigo.core.lint.base import describe

    modules = {m.name for m in pkgutil.iter_modules(lint_pkg.__path__)} - {"base", "doc"}
    assert modules == set(FAMILIES)
    with pytest.raises(ValueError, match="'image-pinned' is registered twice"):
        describe({"image-pinned": "again"})


def test_a_family_reads_the_x_vigo_options_of_a_compose_file(tmp_path: Path) -> None:
    """ComposeFile.x_vigo: the one parser's options, for a family whose rules depend on them."""
    from vigo.core.lint.base import ComposeFile

    cf = ComposeFile("app", "stacks/app/compose.yaml",
                     {"services": {}, "x-vigo": {"after": ["db"], "health_timeout": 30}})
    assert cf.x_vigo.after == ("db",) and cf.x_vigo.health_timeout == 30
    assert ComposeFile("app", "stacks/app/compose.yaml", {"services": {}}).x_vigo.after == ()
