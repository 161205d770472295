"""adapters/traefik.py: where a Traefik container serves its API, what its answer says, and the
client against a real HTTP server on loopback."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from vigo.adapters import traefik

API_LABELS = {
    "traefik.enable": "true",
    "traefik.http.routers.vigo-api.rule": "PathPrefix(`/api`)",
    "traefik.http.routers.vigo-api.entrypoints": "vigo",
    "traefik.http.routers.vigo-api.service": "api@internal",
}
TEMPLATE_CMD = ["--providers.docker=true", "--providers.docker.network=proxy_default",
                "--entrypoints.web.address=:80", "--api=true", "--api.dashboard=false",
                "--entrypoints.vigo.address=:8082"]


def doc(cmd=(), labels=None, env=(), networks=None) -> dict:
    nets = {"proxy_default": {"IPAddress": "172.20.0.2"}} if networks is None else networks
    return {"Config": {"Entrypoint": ["/entrypoint.sh"], "Cmd": list(cmd),
                       "Labels": dict(labels or {}), "Env": list(env)},
            "NetworkSettings": {"Networks": nets}}


@pytest.mark.parametrize(("case", "inspect", "want"), [
    ("the templates' proxy", doc(TEMPLATE_CMD, API_LABELS), "http://172.20.0.2:8082"),
    ("no API", doc(TEMPLATE_CMD[:3], {}), None),
    ("--api=false", doc([*TEMPLATE_CMD[:3], "--api=false", "--entrypoints.vigo.address=:8082"],
                        API_LABELS), None),
    ("API but no router to api@internal", doc(TEMPLATE_CMD, {"traefik.enable": "true"}), None),
    ("router's entrypoint not declared", doc(TEMPLATE_CMD[:5], API_LABELS), None),
    ("entrypoint on the container's loopback",
     doc([*TEMPLATE_CMD[:5], "--entrypoints.vigo.address=127.0.0.1:8082"], API_LABELS), None),
    ("--api.insecure: the traefik entrypoint, :8080 by default",
     doc(["--api.insecure=true"]), "http://172.20.0.2:8080"),
    ("--api.insecure with its entrypoint declared",
     doc(["--api.insecure", "--entrypoints.traefik.address=:9000"]), "http://172.20.0.2:9000"),
    ("options in the environment",
     doc([], API_LABELS, env=["TRAEFIK_API=true", "TRAEFIK_ENTRYPOINTS_VIGO_ADDRESS=:8082"]),
     "http://172.20.0.2:8082"),
    ("the provider's network first",
     doc(TEMPLATE_CMD, API_LABELS, networks={"a_other": {"IPAddress": "10.0.0.5"},
                                             "proxy_default": {"IPAddress": "172.20.0.9"}}),
     "http://172.20.0.9:8082"),
    ("no address on any network", doc(TEMPLATE_CMD, API_LABELS, networks={}), None),
    ("an entrypoint name in capitals",
     doc([*TEMPLATE_CMD[:5], "--entryPoints.vigo.address=:8082"], API_LABELS),
     "http://172.20.0.2:8082"),
])
def test_endpoint(case: str, inspect: dict, want: str | None) -> None:
    assert traefik.endpoint(inspect) == want, case


def services_answer() -> list[dict]:
    return [
        {"name": "whoami@docker", "loadBalancer": {"servers": [
            {"url": "http://172.20.0.3:80"}, {"url": "http://172.20.0.4:80"}]}},
        {"name": "api@internal"},
        {"name": "weird@docker", "loadBalancer": {"servers": "nope"}},
        "not a service",
    ]


def test_parse_services_and_holding() -> None:
    svcs = traefik.parse_services(json.dumps(services_answer()))
    assert svcs == {"whoami@docker": frozenset({"172.20.0.3:80", "172.20.0.4:80"}),
                    "api@internal": frozenset(), "weird@docker": frozenset()}
    assert traefik.holding(svcs, {"172.20.0.4"}) == {"whoami@docker"}
    assert traefik.holding(svcs, {"172.20.0.40"}) == frozenset()  # not a prefix match
    assert traefik.holding(svcs, {""}) == frozenset()
    with pytest.raises(traefik.TraefikError, match="not JSON"):
        traefik.parse_services("<html>")
    with pytest.raises(traefik.TraefikError, match="not a list"):
        traefik.parse_services("{}")


def test_addresses() -> None:
    d = doc(networks={"a": {"IPAddress": "172.20.0.3", "GlobalIPv6Address": ""},
                      "b": {"IPAddress": "10.1.0.7", "GlobalIPv6Address": "fd00::7"}})
    assert traefik.addresses(d) == {"172.20.0.3", "10.1.0.7", "fd00::7"}
    assert traefik.addresses({}) == frozenset()


class _Handler(BaseHTTPRequestHandler):
    pages: ClassVar[dict[str, tuple[int, dict[str, str], bytes]]] = {}
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        code, headers, body = self.pages.get(self.path, (404, {}, b"404 page not found"))
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    _Handler.pages, _Handler.seen = {}, []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def page(n: int) -> str:
    return f"/api/http/services?per_page={traefik.PER_PAGE}&page={n}"


def test_api_follows_the_pages(server: str) -> None:
    first, second = services_answer()[:1], [{"name": "echo@docker", "loadBalancer": {
        "servers": [{"url": "http://172.20.0.9:8080"}]}}]
    _Handler.pages = {page(1): (200, {"X-Next-Page": "2"}, json.dumps(first).encode()),
                      page(2): (200, {"X-Next-Page": "1"}, json.dumps(second).encode())}
    api = traefik.Api(server)
    assert api.slowest == 0.0
    got = api.services()
    assert api.slowest > 0.0  # how long Traefik took to answer: the rollout's grace grows with it
    assert got == {"whoami@docker": frozenset({"172.20.0.3:80", "172.20.0.4:80"}),
                   "echo@docker": frozenset({"172.20.0.9:8080"})}
    assert _Handler.seen == [page(1), page(2)]


def test_api_errors_are_one_line(server: str) -> None:
    _Handler.pages = {page(1): (401, {}, b"401 Unauthorized\n")}
    with pytest.raises(traefik.TraefikError, match=r"answered 401$"):
        traefik.Api(server).services()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(traefik.TraefikError, match="does not answer"):
        traefik.Api(f"http://127.0.0.1:{port}").services()


def test_api_that_does_not_answer_in_time() -> None:
    with socket.socket() as listener:  # accepts (the backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        api = traefik.Api(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.3)
        with pytest.raises(traefik.TraefikError, match=r"did not answer within 0\.3s"):
            api.services()
