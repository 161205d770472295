"""Release jobs and order between stacks, against the real engine.

A two-stack app: `db` owns a named volume, `app` comes after it (x-vigo.after) and mounts it.
`app` carries a migration job (x-vigo.jobs, before) that writes a schema version into the
volume; its `web` service refuses to become healthy on an older schema. Each promotion checks
how often the job ran (it appends to a log in the volume) and that idle runs touch nothing."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import Host
from tests.e2e.test_idle_drift import container_events
from tests.support.infra import sh

BASE = "vigo-test/base:1"


@pytest.fixture
def app_host(host: Host):
    # app mounts the volume db creates: an external volume, which the policy allows per stack
    host.config.write_text(host.config.read_text() + 'allow_privileges = ["app:volume"]\n')
    yield host
    vols = sh("docker", "volume", "ls", "-q", "--filter", f"name=^{host.prefix}",
              check=False).stdout.split()
    host.cleanup()  # containers first: a volume in use is not removed
    if vols:
        sh("docker", "volume", "rm", *vols, check=False)


def db_compose(ok: bool = True, version: str = "1") -> str:
    start = "touch /data/ready; exec sleep 100000" if ok else "echo db broken; exit 1"
    return f"""\
services:
  db:
    image: {BASE}
    stop_signal: SIGKILL
    environment:
      DB_VERSION: "{version}"
    command: ["sh", "-c", "{start}"]
    volumes: ["data:/data"]
    healthcheck:
      test: ["CMD-SHELL", "test -f /data/ready"]
      interval: 1s
      retries: 30
volumes:
  data: {{}}
"""


def app_compose(host: Host, schema: str, needs: str, migrate: str = "",
                after: str = "[db]", web_env: str = "1") -> str:
    job = migrate or (f"echo migrating to {schema}; echo {schema} >> /data/runs; "
                      f"echo {schema} > /data/schema")
    return f"""\
x-vigo:
  after: {after}
  health_timeout: 20
  jobs:
    migrate: {{when: before, timeout: 60}}
services:
  migrate:
    image: {BASE}
    command: ["sh", "-c", "{job}"]
    volumes: ["data:/data"]
  web:
    image: {BASE}
    stop_signal: SIGKILL
    restart: unless-stopped
    environment:
      WEB_ENV: "{web_env}"
    command: ["sh", "-c", "exec sleep 100000"]
    volumes: ["data:/data"]
    healthcheck:
      test: ["CMD-SHELL", "grep -qx {needs} /data/schema"]
      interval: 1s
      retries: 5
volumes:
  data:
    external: true
    name: {host.prefix}db_data
"""


def runs(host: Host) -> list[str]:
    out = sh("docker", "run", "--rm", "-v", f"{host.prefix}db_data:/data", BASE, "sh", "-c",
             "cat /data/runs /data/schema 2>/dev/null; true").stdout.split()
    return out


def web_id(host: Host) -> str:
    [web] = [c for c in host.containers("app") if c["Config"]["Labels"].get(
        "com.docker.compose.service") == "web"]
    assert web["State"]["Status"] == "running"
    return str(web["Id"])


def idle_is_quiet(host: Host) -> None:
    since = time.time()
    res = host.apply()
    assert "nothing to do" in res.stdout, res.stdout
    time.sleep(1.1)  # docker events has one-second resolution at the edges
    assert container_events(host, since) == []


def test_migration_runs_once_then_the_app_promotes(app_host: Host) -> None:
    host = app_host
    host.repo.write("stacks/db/docker-compose.yml", db_compose())
    host.repo.write("stacks/app/docker-compose.yml", app_compose(host, "v1", "v1"))
    host.repo.commit("db, and an app after it with a migration")
    plan = host.vigo("plan")
    assert "runs job migrate before any container is replaced" in plan.stdout, plan.stdout
    res = host.apply()
    assert "db: created" in res.stdout and "app: created" in res.stdout, res.stdout
    assert res.stdout.index("db: created") < res.stdout.index("app: created")
    assert "job migrate: migrating to v1" in res.stdout, res.stdout  # the job's output
    assert runs(host) == ["v1", "v1"]
    idle_is_quiet(host)

    # The promotion: the new web needs schema v2; the job migrates first, once.
    host.repo.write("stacks/app/docker-compose.yml", app_compose(host, "v2", "v2"))
    host.repo.commit("app v2 with its migration")
    res = host.apply()
    assert "app: updated" in res.stdout and "ran job migrate (before" in res.stdout, res.stdout
    assert runs(host) == ["v1", "v2", "v2"]
    promoted = web_id(host)
    idle_is_quiet(host)

    # A commit that leaves the job as it was does not run it again.
    host.repo.write("stacks/app/docker-compose.yml", app_compose(host, "v2", "v2", web_env="2"))
    host.repo.commit("web only")
    assert "runs job" not in host.vigo("plan").stdout
    res = host.apply()
    assert "app: updated" in res.stdout and "ran job" not in res.stdout, res.stdout
    assert runs(host) == ["v1", "v2", "v2"]
    assert web_id(host) != promoted
    serving = web_id(host)

    # A failing migration: nothing is replaced, the old web serves, the revision is held.
    host.repo.write("stacks/app/docker-compose.yml", app_compose(
        host, "v3", "v3", migrate="echo boom: no such column; exit 3"))
    host.repo.commit("a broken migration")
    res = host.apply(expect=1)
    assert "app: failed (job migrate (before): exited with code 3" in res.stdout, res.stdout
    assert "boom: no such column" in res.stdout and "nothing was replaced" in res.stdout
    assert web_id(host) == serving
    assert runs(host) == ["v1", "v2", "v2"]
    held = host.apply(expect=1)
    assert "app: held" in held.stdout, held.stdout
    assert runs(host) == ["v1", "v2", "v2"]  # a held revision runs no job
    assert "app" in host.vigo("retry", "app").stdout
    again = host.apply(expect=1)
    assert "job migrate (before): exited with code 3" in again.stdout, again.stdout
    assert web_id(host) == serving
    # Back to the last good revision: its migration ran already and is not run again.
    host.repo.write("stacks/app/docker-compose.yml", app_compose(host, "v2", "v2", web_env="2"))
    host.repo.commit("revert the broken migration")
    res = host.apply()
    assert "ran job" not in res.stdout, res.stdout
    assert runs(host) == ["v1", "v2", "v2"]
    idle_is_quiet(host)
    status = host.vigo("status")
    assert "job migrate" in status.stdout, status.stdout


def after_compose(host: Host, web_env: str, notify: str, timeout: int = 60) -> str:
    return f"""\
x-vigo:
  health_timeout: 20
  jobs:
    notify: {{when: after, timeout: {timeout}}}
services:
  notify:
    image: {BASE}
    command: ["sh", "-c", "echo {web_env} >> /data/notified; {notify}"]
    volumes: ["data:/data"]
  web:
    image: {BASE}
    stop_signal: SIGKILL
    restart: unless-stopped
    environment:
      WEB_ENV: "{web_env}"
    command: ["sh", "-c", "exec sleep 100000"]
    volumes: ["data:/data"]
volumes:
  data: {{}}
"""


def notified(host: Host) -> list[str]:
    return sh("docker", "run", "--rm", "-v", f"{host.prefix}app_data:/data", BASE, "sh", "-c",
              "cat /data/notified 2>/dev/null; true").stdout.split()


def web_env(host: Host) -> str:
    [web] = [c for c in host.containers("app") if c["Config"]["Labels"].get(
        "com.docker.compose.service") == "web"]
    return next(e for e in web["Config"]["Env"] if e.startswith("WEB_ENV="))


def test_a_failing_after_job_rolls_back(app_host: Host) -> None:
    host = app_host
    host.repo.write("stacks/app/docker-compose.yml", after_compose(host, "1", "true"))
    host.repo.commit("app with an after job")
    res = host.apply()
    assert "ran job notify (after" in res.stdout, res.stdout
    assert notified(host) == ["1"]
    host.repo.write("stacks/app/docker-compose.yml", after_compose(host, "2", "exit 4"))
    host.repo.commit("its after job fails")
    res = host.apply(expect=1)
    assert "app: rolled back to" in res.stdout and "job notify (after): exited with code 4" \
        in res.stdout, res.stdout
    assert web_env(host) == "WEB_ENV=1"
    assert notified(host) == ["1", "2"]  # the rollback ran no job
    assert "held" in host.apply(expect=1).stdout
    # A job over its timeout is stopped, its container removed, the stack rolled back.
    host.repo.write("stacks/app/docker-compose.yml",
                    after_compose(host, "3", "exec sleep 1000", timeout=3))
    host.repo.commit("its after job hangs")
    res = host.apply(expect=1)
    assert "job notify (after): did not finish within 3s" in res.stdout, res.stdout
    assert web_env(host) == "WEB_ENV=1"
    assert [c for c in host.containers("app") if c["State"]["Status"] == "running"
            and c["Config"]["Labels"]["com.docker.compose.service"] == "notify"] == []


def test_db_failing_skips_the_stacks_after_it(app_host: Host) -> None:
    """Here app names no `after`: it uses the volume db creates, an implicit order."""
    host = app_host
    host.repo.write("stacks/db/docker-compose.yml", db_compose())
    host.repo.write("stacks/app/docker-compose.yml", app_compose(host, "v1", "v1", after="[]"))
    host.repo.commit("db and app")
    host.apply()
    serving = web_id(host)
    host.repo.write("stacks/db/docker-compose.yml", db_compose(ok=False))
    host.repo.write("stacks/app/docker-compose.yml", app_compose(host, "v2", "v2", after="[]"))
    host.repo.commit("a broken db and an app that needs it")
    res = host.apply(expect=1)
    assert "db: rolled back" in res.stdout, res.stdout
    assert "app: not attempted (db did not converge in this run" in res.stdout, res.stdout
    check = host.vigo("check", str(host.repo.work))
    assert "shared-resource" not in check.stdout, check.stdout  # db creates the volume
    assert web_id(host) == serving
    assert runs(host) == ["v1", "v1"]  # app's migration did not run


def test_a_cycle_is_refused(app_host: Host) -> None:
    host = app_host
    host.repo.write("stacks/db/docker-compose.yml",
                    db_compose().replace("services:", "x-vigo: {after: [app]}\nservices:", 1))
    host.repo.write("stacks/app/docker-compose.yml", app_compose(host, "v1", "v1"))
    host.repo.commit("a cycle")
    check = host.vigo("check", str(host.repo.work))
    assert check.returncode != 0
    assert "app -> db -> app" in check.stdout + check.stderr, check.stdout + check.stderr
    res = host.apply(expect=1)
    assert "x-vigo.after makes a cycle" in res.stdout, res.stdout
    assert host.containers() == []


def backup_compose(schema: str) -> str:
    return f"""\
x-vigo:
  health_timeout: 20
  jobs:
    backup: before
    migrate: before
services:
  backup:
    image: {BASE}
    environment: {{SCHEMA: "{schema}"}}
    command: ["sh", "-c", "tar cf /backup/before-$${{SCHEMA}}.tar -C /data ."]
    volumes: ["data:/data:ro", "{{BACKUPS}}:/backup"]
  migrate:
    image: {BASE}
    environment: {{SCHEMA: "{schema}"}}
    command: ["sh", "-c", "echo $${{SCHEMA}} > /data/schema"]
    volumes: ["data:/data"]
  web:
    image: {BASE}
    stop_signal: SIGKILL
    command: ["sh", "-c", "exec sleep 100000"]
    volumes: ["data:/data"]
    healthcheck:
      test: ["CMD-SHELL", "grep -qx {schema} /data/schema"]
      interval: 1s
      retries: 5
volumes:
  data: {{}}
"""


def test_a_backup_job_dumps_the_volume_before_the_migration(app_host: Host) -> None:
    host = app_host
    backups = host.root / "backups"
    backups.mkdir()
    host.config.write_text(host.config.read_text() + f'allow_host_paths = ["{backups}"]\n')
    text = lambda schema: backup_compose(schema).replace("{BACKUPS}", str(backups))  # noqa: E731
    host.repo.write("stacks/app/docker-compose.yml", text("1"))
    host.repo.commit("app with a backup and a migration")
    res = host.apply()
    assert "ran job backup (before" in res.stdout and "migrate (before" in res.stdout, res.stdout
    host.repo.write("stacks/app/docker-compose.yml", text("2"))
    host.repo.commit("schema 2")
    host.apply()
    # the dump taken before the migration to 2 holds schema 1: backup ran first
    dump = sh("tar", "xOf", str(backups / "before-2.tar"), "./schema").stdout
    assert dump.strip() == "1"
    assert sorted(p.name for p in backups.iterdir()) == ["before-1.tar", "before-2.tar"]
