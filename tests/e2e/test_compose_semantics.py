"""Compose as people write it, against the real engine: one-shot services, scale and profiles,
the order of a rename, every file that reaches a container. Each test has a control (a stack or
service that must keep its container id) and checks that idle runs record no docker events."""

from __future__ import annotations

import time
import urllib.request

from tests.e2e.conftest import TAG_A, TAG_B, Host
from tests.e2e.test_idle_drift import container_events
from tests.support.infra import free_port, sh

BASE = "vigo-test/base:1"


def ids(host: Host, stack: str) -> dict[str, str]:
    return {c["Name"].lstrip("/"): c["Id"] for c in host.containers(stack)}


def idle_is_quiet(host: Host) -> None:
    since = time.time()
    res = host.apply()
    assert "nothing to do" in res.stdout, res.stdout
    time.sleep(1.1)  # docker events has one-second resolution at the edges
    assert container_events(host, since) == []


def oneshot_compose(host: Host, init: str = "echo migrated", web_env: str = "1") -> str:
    return f"""\
services:
  init:
    image: {BASE}
    restart: "no"
    command: ["sh", "-c", "{init}"]
  web:
    image: ghcr.io/vigo-example/whoami:{TAG_A}
    restart: unless-stopped
    environment:
      WEB_VERSION: "{web_env}"
    depends_on:
      init:
        condition: service_completed_successfully
    labels:
      - traefik.enable=true
      - traefik.http.routers.{host.prefix}oneshot.rule=Host(`{host.hostname("oneshot")}`)
      - traefik.http.routers.{host.prefix}oneshot.entrypoints=web
      - traefik.http.services.{host.prefix}oneshot.loadbalancer.server.port=80
networks:
  default:
    external: true
    name: {host.prefix}proxy
"""


def test_one_shot_runs_once_per_definition(host: Host) -> None:
    host.seed({"echo": TAG_B})
    host.repo.write("stacks/oneshot/docker-compose.yml", oneshot_compose(host))
    host.repo.commit("a stack with a one-shot init")
    res = host.apply()
    assert "oneshot: created" in res.stdout
    init = f"{host.prefix}oneshot-init-1"
    first = ids(host, "oneshot")
    control = ids(host, "echo")
    status = host.vigo("status").stdout
    assert "completed" in status and "exited" not in status, status
    # Idle runs: the exited init is converged, not drift; nothing runs again.
    idle_is_quiet(host)
    idle_is_quiet(host)
    # web changes, init does not: init is not run again (same container, no start event).
    host.repo.write("stacks/oneshot/docker-compose.yml", oneshot_compose(host, web_env="2"))
    host.repo.commit("web changes")
    since = time.time()
    res = host.apply()
    assert "oneshot: updated" in res.stdout, res.stdout
    time.sleep(1.1)
    events = container_events(host, since)
    assert not [e for e in events if e.endswith(init)], events
    assert ids(host, "oneshot")[init] == first[init]
    idle_is_quiet(host)
    # init changes: it runs again, once.
    host.repo.write("stacks/oneshot/docker-compose.yml",
                    oneshot_compose(host, init="echo migrated v2", web_env="2"))
    host.repo.commit("init changes")
    res = host.apply()
    assert "oneshot: updated" in res.stdout
    assert ids(host, "oneshot")[init] != first[init]
    idle_is_quiet(host)
    # A failing one-shot fails the gate and is held; web keeps serving the last good revision.
    host.repo.write("stacks/oneshot/docker-compose.yml",
                    oneshot_compose(host, init="echo broken; exit 3", web_env="3"))
    host.repo.commit("init fails")
    res = host.apply(expect=1)
    assert "oneshot: rolled back to" in res.stdout, res.stdout
    assert 'service "init" didn\'t complete successfully: exit 3' in res.stdout
    assert "oneshot: held" in host.apply(expect=1).stdout
    assert "WEB_VERSION=2" in " ".join(
        next(c for c in host.containers("oneshot") if "web" in c["Name"])["Config"]["Env"])
    assert ids(host, "echo") == control


def test_scale_profiles_and_replicas_converge(host: Host) -> None:
    host.seed({"echo": TAG_B})
    host.repo.write("stacks/shapes/docker-compose.yml", f"""\
services:
  web:
    image: ghcr.io/vigo-example/whoami:{TAG_A}
    restart: unless-stopped
    scale: 2
  spare:
    image: ghcr.io/vigo-example/whoami:{TAG_A}
    restart: unless-stopped
    deploy:
      replicas: 0
  debug:
    image: {BASE}
    profiles: [debug]
    command: ["sleep", "3600"]
  job:
    image: {BASE}
    command: ["true"]
""")
    host.repo.commit("scale, replicas 0, a profile, a job nothing waits for")
    res = host.apply()
    assert "shapes: created" in res.stdout, res.stdout
    names = sorted(ids(host, "shapes"))
    assert names == sorted(f"{host.prefix}shapes-{n}" for n in ("web-1", "web-2", "job-1"))
    control = ids(host, "echo")
    idle_is_quiet(host)
    assert sorted(ids(host, "shapes")) == names
    assert ids(host, "echo") == control


def ported_compose(host: Host, router: str, port: int, tag: str = TAG_A) -> str:
    return f"""\
services:
  web:
    image: ghcr.io/vigo-example/whoami:{tag}
    restart: unless-stopped
    ports:
      - "127.0.0.1:{port}:80"
    labels:
      - traefik.enable=true
      - traefik.http.routers.{host.prefix}{router}.rule=Host(`{host.hostname(router)}`)
      - traefik.http.routers.{host.prefix}{router}.entrypoints=web
      - traefik.http.services.{host.prefix}{router}.loadbalancer.server.port=80
networks:
  default:
    external: true
    name: {host.prefix}proxy
"""


def direct(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        return resp.read().decode()


def test_rename_keeping_its_port_and_router_converges_in_one_run(host: Host) -> None:
    port = free_port()
    host.seed({"echo": TAG_B})
    host.repo.write("stacks/site/docker-compose.yml", ported_compose(host, "site", port))
    host.repo.commit("site publishes a host port")
    host.apply()
    control = ids(host, "echo")
    host.repo.remove("stacks/site/docker-compose.yml")
    host.repo.write("stacks/web2/docker-compose.yml", ported_compose(host, "site", port, TAG_B))
    host.repo.commit("site is renamed web2, same port, same router")
    res = host.apply()
    assert "site: removed (no longer in the repo)" in res.stdout, res.stdout
    assert "web2: created" in res.stdout
    assert res.stdout.index("site: removed") < res.stdout.index("web2: created")
    assert f"revision={TAG_B}" in direct(port)
    assert f"revision={TAG_B}" in host.get("site", TAG_B)
    assert ids(host, "echo") == control
    idle_is_quiet(host)


def test_an_update_releases_a_port_a_new_stack_takes_in_the_same_run(host: Host) -> None:
    p1, p2 = free_port(), free_port()
    host.seed({"echo": TAG_B})
    host.repo.write("stacks/a/docker-compose.yml", ported_compose(host, "a", p1))
    host.repo.commit("a on p1")
    host.apply()
    control = ids(host, "echo")
    host.repo.write("stacks/a/docker-compose.yml", ported_compose(host, "a", p2))
    host.repo.write("stacks/b/docker-compose.yml", ported_compose(host, "b", p1, TAG_B))
    host.repo.commit("a moves to p2, b takes p1")
    res = host.apply()
    assert "a: updated" in res.stdout and "b: created" in res.stdout, res.stdout
    assert f"revision={TAG_A}" in direct(p2)
    assert f"revision={TAG_B}" in direct(p1)
    assert ids(host, "echo") == control
    idle_is_quiet(host)


APP = f"ghcr.io/vigo-example/whoami:{TAG_A}"
FILES_STACK = {
    "stacks/files/docker-compose.yml": f"""\
include:
  - inc/side.yml
x-app: &app
  image: {APP}
  restart: unless-stopped
services:
  web:
    <<: *app
    configs:
      - source: app
        target: /etc/app.conf
    secrets: [pw]
  ext:
    extends:
      file: base.yml
      service: common
  control:
    <<: *app
configs:
  app:
    file: ./app.conf
secrets:
  pw:
    file: ./pw.txt
""",
    "stacks/files/inc/side.yml": f"""\
services:
  side:
    image: {APP}
    restart: unless-stopped
    environment:
      SIDE: "1"
""",
    "stacks/files/base.yml": f"""\
services:
  common:
    image: {APP}
    restart: unless-stopped
    environment:
      FROM_BASE: "1"
""",
    "stacks/files/app.conf": "greeting=hello\n",
    "stacks/files/pw.txt": "one\n",
}


def test_every_file_that_reaches_a_container_counts(host: Host) -> None:
    host.seed({"echo": TAG_B})
    for rel, text in FILES_STACK.items():
        host.repo.write(rel, text)
    host.repo.commit("configs, secrets, include, extends")
    host.apply()
    idle_is_quiet(host)
    name = f"{host.prefix}files-" + "{}-1"
    for rel, old, new, service in (
            ("stacks/files/app.conf", "hello", "goodbye", "web"),
            ("stacks/files/pw.txt", "one", "two", "web"),
            ("stacks/files/inc/side.yml", 'SIDE: "1"', 'SIDE: "2"', "side"),
            ("stacks/files/base.yml", 'FROM_BASE: "1"', 'FROM_BASE: "2"', "ext")):
        before = ids(host, "files")
        control = ids(host, "echo")
        text = (host.repo.work / rel).read_text()
        host.repo.write(rel, text.replace(old, new))
        host.repo.commit(f"{rel} changes")
        res = host.apply()
        assert "files: updated" in res.stdout, res.stdout
        after = ids(host, "files")
        changed = {n for n in before if before[n] != after.get(n)}
        assert changed == {name.format(service)}, (rel, changed)
        assert ids(host, "echo") == control
    assert "goodbye" in sh("docker", "exec", name.format("web"), "cat", "/etc/app.conf").stdout
    assert "two" in sh("docker", "exec", name.format("web"), "cat", "/run/secrets/pw").stdout
    idle_is_quiet(host)


def test_a_stacks_dotenv_is_refused_at_check_and_apply_never_ignored(host: Host) -> None:
    host.seed({"whoami": TAG_A, "echo": TAG_B})
    host.apply()
    control = ids(host, "echo")
    before = ids(host, "whoami")
    host.repo.write("stacks/whoami/.env", "GREETING=hello\n")
    host.repo.commit("a .env beside the compose file")
    check = host.vigo("check", str(host.repo.work))
    assert check.returncode == 1, check.stdout + check.stderr
    assert "stacks/whoami/.env" in check.stdout + check.stderr
    assert "[stack-dotenv]" in check.stdout + check.stderr
    res = host.apply(expect=1)
    line = next(x for x in res.stdout.splitlines() if x.startswith("whoami:"))
    assert "stack-dotenv" in line and "env/whoami.env" in line, line
    assert "Traceback" not in res.stdout + res.stderr
    assert ids(host, "whoami") == before and ids(host, "echo") == control
    # Named as an env_file it is a plain container env file: accepted.
    compose = host.repo.work / "stacks/whoami/docker-compose.yml"
    compose.write_text(compose.read_text().replace(
        "      - ../../env/global.env\n", "      - ../../env/global.env\n      - .env\n"))
    host.repo.commit("the .env is the service's env_file")
    host.apply()
    env = next(iter(host.containers("whoami")))["Config"]["Env"]
    assert "GREETING=hello" in env
    assert ids(host, "echo") == control
    idle_is_quiet(host)


def test_realworld_shapes_apply_end_to_end(host: Host) -> None:
    from tests.unit.test_realworld import SHAPES, materialise

    runnable = [s for s in SHAPES if s.runs]
    host.seed({})
    for shape in runnable:
        for rel, text in materialise(shape, net=f"{host.prefix}proxy").items():
            host.repo.write(rel, text)
        env = {k: (host.hostname(shape.name) if k.endswith("_HOST") else v)
               for k, v in shape.env.items()}
        if env:
            host.repo.write_env(f"env/{shape.name}.env", env)
    host.repo.commit("real-world shapes")
    check = host.vigo("check", str(host.repo.work))
    assert check.returncode == 0, check.stdout + check.stderr
    res = host.apply()
    for shape in runnable:
        assert f"{shape.name}: created" in res.stdout, res.stdout
    assert f"revision={TAG_A}" in host.get("shop", TAG_A)
    names = sorted(n.removeprefix(host.prefix) for n in ids(host, "files"))
    assert names == ["files-web-1", "files-worker-1", "files-worker-2"]
    assert sorted(n.removeprefix(host.prefix) for n in ids(host, "shop")) == [
        "shop-db-1", "shop-migrate-1", "shop-web-1"]
    web = f"{host.prefix}files-web-1"
    assert "greeting=hello" in sh("docker", "exec", web, "cat", "/etc/app.conf").stdout
    idle_is_quiet(host)
    shop = ids(host, "shop")
    before = ids(host, "files")
    host.repo.write("stacks/files/app.conf", "greeting=goodbye\n")
    host.repo.commit("a config file changes")
    host.apply()
    after = ids(host, "files")
    assert {n for n in before if before[n] != after[n]} == {web}
    assert "goodbye" in sh("docker", "exec", web, "cat", "/etc/app.conf").stdout
    assert ids(host, "shop") == shop
    idle_is_quiet(host)


def test_a_new_stack_blocked_by_a_foreign_port_is_not_held(host: Host) -> None:
    port = free_port()
    host.seed({"echo": TAG_B})
    host.apply()
    control = ids(host, "echo")
    squatter = f"{host.prefix}squatter"  # not vigo's: it holds the port the new stack wants
    sh("docker", "run", "-d", "--name", squatter, "-p", f"127.0.0.1:{port}:80", APP)
    host.repo.write("stacks/site/docker-compose.yml", ported_compose(host, "site", port))
    host.repo.commit("site wants a port that is taken")
    res = host.apply(expect=1)
    assert "site: failed" in res.stdout and "already allocated" in res.stdout, res.stdout
    again = host.apply(expect=1)
    assert "site: held" not in again.stdout and "already allocated" in again.stdout
    sh("docker", "rm", "-f", squatter)
    res = host.apply()  # compose left the container it could not start: "updated"
    assert "site: created" in res.stdout or "site: updated" in res.stdout, res.stdout
    assert f"revision={TAG_A}" in direct(port)
    assert ids(host, "echo") == control
    idle_is_quiet(host)
