"""How a zero-downtime rollout's waits end (host/engines/compose.py `_await`), against a real
HTTP server standing in for Traefik's API: as soon as the API shows the change, at the bound
when it never does, and the rest of the bound when the API stops answering."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from vigo.adapters import traefik
from vigo.core.model import Paths
from vigo.host.engines.compose import PROBE, Deployer


class _Traefik(BaseHTTPRequestHandler):
    """/api/http/services: `answers` in turn (the last one repeats); None: close the socket."""

    answers: ClassVar[list[list[dict] | None]] = []
    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.asked.append(self.path)
        answer = self.answers[min(len(self.asked), len(self.answers)) - 1]
        if answer is None:
            self.close_connection = True
            self.connection.close()
            return
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Traefik)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Traefik.answers, _Traefik.asked = [], []
    yield traefik.Api(f"http://127.0.0.1:{srv.server_address[1]}", timeout=1.0)
    srv.shutdown()
    srv.server_close()


def service(*ips: str) -> list[dict]:
    return [{"name": "whoami@docker",
             "loadBalancer": {"servers": [{"url": f"http://{ip}:80"} for ip in ips]}}]


def deployer(tmp_path: Path, lines: list[str], slept: list[float]) -> Deployer:
    import time

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    paths = Paths(tmp_path / "r", tmp_path / "s", tmp_path / "o", tmp_path / "rendered.json")
    return Deployer(None, "x-", paths, 30, lines.append, sleep=sleep)  # type: ignore[arg-type]


def routed(svcs: dict[str, frozenset[str]]) -> bool:
    return bool(traefik.holding(svcs, {"10.0.0.3"}))


def test_ends_when_the_api_shows_the_new_server(tmp_path: Path, api: traefik.Api) -> None:
    _Traefik.answers = [service("10.0.0.2"), service("10.0.0.2"), service("10.0.0.2", "10.0.0.3")]
    lines: list[str] = []
    slept: list[float] = []
    how = deployer(tmp_path, lines, slept)._await(api, 30.0, routed)
    assert how.startswith("traefik, ")
    assert len(_Traefik.asked) == 3
    assert slept == [PROBE, PROBE]  # two probes apart, not the 30 s bound
    assert lines == []


def test_ends_at_the_bound_when_the_api_never_shows_it(tmp_path: Path,
                                                       api: traefik.Api) -> None:
    _Traefik.answers = [service("10.0.0.2")]
    slept: list[float] = []
    how = deployer(tmp_path, [], slept)._await(api, 1.0, routed)
    assert how == "not seen in Traefik's API within 1s"
    assert len(_Traefik.asked) >= 2 and all(s == PROBE for s in slept)


def test_the_rest_of_the_bound_when_the_api_stops_answering(tmp_path: Path,
                                                            api: traefik.Api) -> None:
    _Traefik.answers = [service("10.0.0.2"), None]
    lines: list[str] = []
    slept: list[float] = []
    how = deployer(tmp_path, lines, slept)._await(api, 1.0, routed)
    assert how == "after 1s"
    assert len(_Traefik.asked) >= 3  # asked again while silent, one probe apart
    assert all(0 < s <= PROBE for s in slept) and 0.9 <= sum(slept) <= 1.0 + 1e-9
    assert len(lines) == 1  # said once, not at every probe
    assert lines[0].startswith(f"Traefik's API: the Traefik API at {api.base} ")
    assert lines[0].endswith("; the rollout asks again, and waits its fixed times while it "
                             "does not answer")


def test_an_api_that_misses_one_answer_is_asked_again(tmp_path: Path,
                                                      api: traefik.Api) -> None:
    _Traefik.answers = [service("10.0.0.2"), None, service("10.0.0.2", "10.0.0.3")]
    how = deployer(tmp_path, [], [])._await(api, 30.0, routed, blind=3.0)
    assert how.startswith("traefik, ") and len(_Traefik.asked) == 3


def test_no_api_waits_the_bound(tmp_path: Path) -> None:
    slept: list[float] = []
    assert deployer(tmp_path, [], slept)._await(None, 0.3, routed) == "after 0.3s"
    assert len(slept) == 1 and 0 < slept[0] <= 0.3


def test_a_long_bound_waits_only_the_blind_bound_without_answers(tmp_path: Path,
                                                                 api: traefik.Api) -> None:
    """The wait for a new container with the old one's labels may be long (the health timeout)
    while the API answers; when it stops answering, only the fixed ROUTE_DELAY-like bound."""
    _Traefik.answers = [service("10.0.0.2"), None]
    slept: list[float] = []
    how = deployer(tmp_path, [], slept)._await(api, 30.0, routed, blind=0.5)
    assert how == "after 0.5s"
    assert sum(slept) <= 0.5


def test_a_long_bound_ends_when_routed(tmp_path: Path, api: traefik.Api) -> None:
    _Traefik.answers = [service("10.0.0.2")] * 8 + [service("10.0.0.2", "10.0.0.3")]
    slept: list[float] = []
    how = deployer(tmp_path, [], slept)._await(api, 30.0, routed, blind=0.5)
    assert how.startswith("traefik, ") and len(_Traefik.asked) == 9  # past the blind 0.5 s


@pytest.mark.parametrize(("old", "new", "same"), [
    ({"traefik.enable": "true", "a": "1"}, {"traefik.enable": "true", "a": "2"}, True),
    ({"traefik.http.routers.w.rule": "Host(`a`)"}, {"traefik.http.routers.w.rule": "Host(`b`)"},
     False),
    ({"traefik.enable": "true"}, {"traefik.enable": "true", "traefik.http.routers.x.rule": "y"},
     False),
    ({}, {}, True),
])
def test_labels_compares_only_traefiks(old: dict, new: dict, same: bool) -> None:
    doc = lambda labels: {"Config": {"Labels": labels}}  # noqa: E731
    assert (traefik.labels(doc(old)) == traefik.labels(doc(new))) is same
    assert traefik.labels({"Config": None}) == {} == traefik.labels({"Config": {"Labels": None}})
