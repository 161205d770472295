"""Health gates, automatic rollback, images first, and zero-downtime promotion under load."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.e2e.conftest import TAG_A, Host
from tests.support.images import ensure_app_image

HEALTHCHECK = """    healthcheck:
      test: ["CMD", "/bin/healthy"]
      interval: 1s
      timeout: 3s
      retries: 2
"""


def set_stack(host: Host, tag: str, extra: str = "", top: str = "") -> None:
    """stacks/whoami with image `tag`, `extra` lines under the service, `top` at the top."""
    text = (host.repo.work / "stacks/whoami/docker-compose.yml").read_text()
    text = text.split("services:", 1)[1]
    lines = text.splitlines(keepends=True)
    out = [top, "services:"]
    for line in lines:
        if line.startswith("    image: "):
            line = f"    image: ghcr.io/vigo-example/whoami:{tag}\n" + extra
        elif line.startswith(("    healthcheck:", "      test:", "      interval:",
                              "      timeout:", "      retries:", "    environment:",
                              "      APP_FAIL:")):
            continue
        out.append(line)
    host.repo.write("stacks/whoami/docker-compose.yml", "".join(out))


def state(host: Host) -> dict:
    return json.loads((host.state / "state.json").read_text())


def test_crashing_revision_is_rolled_back_held_and_retried_after_a_new_commit(host: Host) -> None:
    host.seed()
    first = host.apply()
    assert "whoami: created" in first.stdout
    good_rev = host.repo.head()
    bad_tag = "sha-bad0001"
    ensure_app_image(bad_tag)
    set_stack(host, bad_tag, extra="    environment:\n      APP_FAIL: exit\n")
    bad_rev = host.repo.commit("promote a revision that crashes")
    res = host.apply(expect=1)
    line = next(x for x in res.stdout.splitlines() if x.startswith("whoami:"))
    assert line.startswith(f"whoami: rolled back to {good_rev[:12]}; {bad_rev[:12]} failed: "
                           "container ")
    assert "exited with code 1" in line and "APP_FAIL=exit, exiting with 1" in line
    assert "echo" not in res.stdout
    assert f"revision={TAG_A}" in host.get("whoami", TAG_A)
    record = state(host)["stacks"]["whoami"]
    assert record["failed_revision"] == bad_rev and record["outcome"] == "failed"
    # Not retried every minute: held, no compose process, still exit 1.
    res = host.vigo("apply", "-v")
    assert res.returncode == 1
    assert f"whoami: held ({bad_rev[:12]} failed and is not retried" in res.stdout
    assert " up --detach" not in res.stderr
    # `vigo retry` lets the next run try it again (and it fails again).
    assert "tries" in host.vigo("retry", "whoami").stdout
    res = host.apply(expect=1)
    assert "whoami: rolled back to" in res.stdout
    # A new commit that changes the stack is tried.
    fixed = "sha-f1e0002"
    ensure_app_image(fixed)
    set_stack(host, fixed)
    host.repo.commit("fix")
    res = host.apply()
    assert f"whoami: updated (image {TAG_A} -> {fixed})" in res.stdout
    assert f"revision={fixed}" in host.get("whoami", fixed)
    assert "failed_hash" not in state(host)["stacks"]["whoami"]


def test_never_healthy_revision_is_rolled_back_after_the_stack_timeout(host: Host) -> None:
    host.seed()
    set_stack(host, TAG_A, extra=HEALTHCHECK, top="x-vigo:\n  health_timeout: 6\n")
    # The label turns the zero-downtime rollout off: the plain recreate path is tested here.
    compose = host.repo.work / "stacks/whoami/docker-compose.yml"
    compose.write_text(compose.read_text().replace(
        "      - traefik.enable=true\n",
        "      - traefik.enable=true\n      - io.vigo.core.rollout=recreate\n"))
    host.repo.commit("healthcheck, recreate rollout, 6 s gate")
    host.apply()
    before = host.containers("whoami")[0]["Id"]
    bad = "sha-bad0003"
    ensure_app_image(bad)
    compose.write_text(compose.read_text().replace(f"whoami:{TAG_A}", f"whoami:{bad}").replace(
        "    healthcheck:", "    environment:\n      APP_FAIL: unhealthy\n    healthcheck:"))
    host.repo.commit("a revision that never turns healthy")
    t0 = time.monotonic()
    res = host.apply(expect=1)
    took = time.monotonic() - t0
    assert "whoami: rolled back to" in res.stdout
    assert "not healthy after 6s" in res.stdout
    assert took >= 6
    now = host.containers("whoami")
    assert len(now) == 1 and now[0]["Config"]["Image"].endswith(TAG_A)
    assert now[0]["Id"] != before  # recreated from the saved healthy model
    assert f"revision={TAG_A}" in host.get("whoami", TAG_A)


def test_missing_image_leaves_the_old_container_running(host: Host) -> None:
    host.seed()
    host.apply()
    before = host.containers("whoami")[0]["Id"]
    set_stack(host, "sha-00000ff")  # never built, and no registry can be reached
    host.repo.commit("promote to an image that does not exist")
    res = host.apply(expect=1)
    assert ("whoami: failed (image ghcr.io/vigo-example/whoami:sha-00000ff cannot be pulled"
            in res.stdout)
    assert "the running containers were left as they are" in res.stdout
    assert host.containers("whoami")[0]["Id"] == before
    assert host.containers("whoami")[0]["State"]["Running"]


def without_api(text: str) -> str:
    """A proxy compose file without Traefik's API (a proxy of before the rollout asked it)."""
    keep = [line for line in text.splitlines(keepends=True)
            if "--api" not in line and "entrypoints.vigo" not in line and "vigo-api" not in line
            and "traefik.enable" not in line]
    return "".join(keep).replace("    labels:\n    volumes:", "    volumes:")


@pytest.mark.parametrize("api", [True, False], ids=["traefik-api", "fixed-waits"])
def test_zero_downtime_promotion_under_load(host: Host, api: bool) -> None:
    """No request lost, whether the rollout asks Traefik's API when the new container is routed
    and the old one dropped, or (a proxy without the API) waits its fixed times."""
    host.seed()
    set_stack(host, TAG_A, extra=HEALTHCHECK)
    if not api:
        proxy = host.repo.work / "proxy/docker-compose.yml"
        host.repo.write("proxy/docker-compose.yml", without_api(proxy.read_text()))
        assert "--api" not in (host.repo.work / "proxy/docker-compose.yml").read_text()
    host.repo.commit("healthcheck")
    host.apply()
    assert f"revision={TAG_A}" in host.get("whoami", TAG_A)
    stop = threading.Event()
    results: list[str] = []
    progress: list[str] = []

    def load() -> None:
        while not stop.is_set():
            req = urllib.request.Request(f"http://127.0.0.1:{host.port}/",
                                         headers={"Host": host.hostname("whoami")})
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    body = resp.read().decode()
                    results.append(body.split("revision=")[1].strip())
            except (urllib.error.URLError, OSError, IndexError) as exc:
                results.append(f"error {exc}")

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for tag in ("sha-2e11001", "sha-2e11002"):
            ensure_app_image(tag)
            set_stack(host, tag, extra=HEALTHCHECK)
            host.repo.commit(f"promote {tag}")
            res = host.apply("-v")
            assert "web replaced without downtime" in res.stdout, res.stdout
            progress.append(res.stderr)
            time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    errors = [r for r in results if r.startswith("error")]
    assert len(results) > 200
    assert errors == [], f"{len(errors)} of {len(results)} requests failed: {errors[:3]}"
    assert results[-1] == "sha-2e11002"
    assert len(host.containers("whoami")) == 1
    for text in progress:  # how each wait ended
        if api:
            assert "web: routed (traefik, " in text, text
            assert "web: drained (traefik, " in text, text
        else:
            assert "web: routed (after 3s)" in text, text
            assert "web: drained (5s after unhealthy)" in text, text


def test_failed_zero_downtime_rollout_keeps_the_old_container(host: Host) -> None:
    host.seed()
    set_stack(host, TAG_A, extra=HEALTHCHECK, top="x-vigo:\n  health_timeout: 5\n")
    host.repo.commit("healthcheck")
    host.apply()
    old = host.containers("whoami")[0]
    bad = "sha-bad0004"
    ensure_app_image(bad)
    set_stack(host, bad, extra="    environment:\n      APP_FAIL: unhealthy\n" + HEALTHCHECK,
              top="x-vigo:\n  health_timeout: 5\n")
    host.repo.commit("never healthy")
    res = host.apply(expect=1)
    assert "whoami: rolled back to" in res.stdout
    assert f"({old['Name'].lstrip('/')} kept serving)" in res.stdout
    now = host.containers("whoami")
    assert [c["Id"] for c in now] == [old["Id"]]
    assert f"revision={TAG_A}" in host.get("whoami", TAG_A)
