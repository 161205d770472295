"""adapters/engine.py: which endpoint, the HTTP framing, and the parser on a recorded answer."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from vigo.adapters import engine
from vigo.core.model import Container

FIXTURE = Path(__file__).parent / "fixtures" / "engine_containers.json"


@pytest.mark.parametrize(("env", "config", "expected"), [
    ({}, None, "/var/run/docker.sock"),
    ({"DOCKER_HOST": "unix:///run/user/0/docker.sock"}, None, "/run/user/0/docker.sock"),
    ({"DOCKER_HOST": "unix:///var/run/docker.sock"}, '{"currentContext": "remote"}',
     "/var/run/docker.sock"),  # DOCKER_HOST wins over the context, as in the CLI
    ({"DOCKER_HOST": "tcp://10.0.0.5:2376"}, None, None),
    ({"DOCKER_HOST": "ssh://deploy@host"}, None, None),
    ({"DOCKER_HOST": "npipe:////./pipe/docker_engine"}, None, None),
    ({"DOCKER_HOST": "unix://relative.sock"}, None, None),
    ({"DOCKER_CONTEXT": "remote"}, None, None),
    ({"DOCKER_CONTEXT": "default"}, '{"currentContext": "remote"}', "/var/run/docker.sock"),
    ({}, '{"currentContext": "remote"}', None),
    ({}, '{"currentContext": "default", "auths": {}}', "/var/run/docker.sock"),
    ({}, '{"auths": {}}', "/var/run/docker.sock"),
    ({}, "{not json", None),  # the CLI says what is wrong with its own config
])
def test_socket_path(env: dict[str, str], config: str | None, expected: str | None) -> None:
    assert engine.socket_path(env, config) == expected


def test_cli_config_follows_docker_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"currentContext": "x"}')
    assert engine.cli_config({"DOCKER_CONFIG": str(tmp_path)}) == '{"currentContext": "x"}'
    assert engine.cli_config({"HOME": str(tmp_path / "nobody")}) is None


def test_list_query_encodes_the_filters() -> None:
    query = engine.list_query(["io.vigo.stack", "io.vigo.instance=p-"])
    assert query.startswith("/containers/json?all=1&filters=")
    assert " " not in query and '"' not in query
    from urllib.parse import parse_qs, urlsplit
    filters = json.loads(parse_qs(urlsplit(query).query)["filters"][0])
    assert filters == {"label": ["io.vigo.stack", "io.vigo.instance=p-"]}


def test_parser_gives_what_docker_ps_gives() -> None:
    """A real answer of engine 20.10 (a healthy, an exited and a created container), recorded
    with the `docker ps --no-trunc` lines of the same moment: the two paths agree, status
    string included."""
    fixture = json.loads(FIXTURE.read_text())
    from_api = engine.parse_containers(json.dumps(fixture["api"]))
    from_cli = tuple(Container(**{k: str(v or "") for k, v in json.loads(line).items()})
                     for line in fixture["docker_ps_lines"])
    assert from_api == from_cli
    assert {c.state for c in from_api} == {"running", "exited", "created"}
    assert [c.health for c in from_api if c.state == "running"] == ["healthy"]


def test_parser_takes_missing_labels_and_several_names() -> None:
    rows = [{"Id": "abc", "Names": ["/a", "/b/link"], "State": "running", "Status": "Up",
             "Image": "x:1", "Labels": None}]
    (c,) = engine.parse_containers(json.dumps(rows))
    assert (c.name, c.stack, c.config_hash) == ("a,b/link", "", "")


@pytest.mark.parametrize("body", [b"not json", b'{"message": "x"}', b"[1]"])
def test_parser_refuses_what_is_not_a_list_of_containers(body: bytes) -> None:
    with pytest.raises(engine.EngineError, match="container list"):
        engine.parse_containers(body)


@pytest.mark.parametrize(("raw", "expected"), [
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n[]", (200, "OK", b"[]")),
    (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[]\n", (200, "OK", b"[]\n")),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n[\r\n1;x=y\r\n]\r\n0\r\n\r\n",
     (200, "OK", b"[]")),
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\n\r\n{}\n\n",
     (400, "Bad Request", b"{}\n\n")),
])
def test_parse_response(raw: bytes, expected: tuple[int, str, bytes]) -> None:
    assert engine.parse_response(raw) == expected


@pytest.mark.parametrize(("raw", "why"), [
    (b"", "closed the connection"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP"),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n[]", "cut short"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n[]", "cut short"),
])
def test_parse_response_refuses_broken_answers(raw: bytes, why: str) -> None:
    with pytest.raises(engine.EngineError, match=why):
        engine.parse_response(raw)


def serve_once(path: Path, answer: bytes) -> threading.Thread:
    """A unix socket that reads one request and sends `answer` (not the engine: the framing)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_engine_error_answer_is_one_line(tmp_path: Path) -> None:
    sock = tmp_path / "d.sock"
    serve_once(sock, b'HTTP/1.0 500 Internal Server Error\r\n\r\n{"message":"boom\\n"}')
    with pytest.raises(engine.EngineError) as exc:
        engine.Engine(str(sock)).containers(["io.vigo.stack"])
    assert str(exc.value) == (f"the Docker engine at unix://{sock} answered 500 "
                              "Internal Server Error: boom")


def test_engine_reads_a_whole_answer(tmp_path: Path) -> None:
    sock = tmp_path / "d.sock"
    rows = [{"Id": f"{i:064x}", "Names": [f"/c{i}"], "State": "running",
             "Status": "Up 2 hours", "Image": "x:1", "Labels": {"io.vigo.stack": "s"}}
            for i in range(2000)]  # larger than one recv
    serve_once(sock, b"HTTP/1.0 200 OK\r\n\r\n" + json.dumps(rows).encode())
    found = engine.Engine(str(sock)).containers(["io.vigo.stack"])
    assert len(found) == 2000 and found[-1].name == "c1999"


def test_engine_missing_socket_says_where(tmp_path: Path) -> None:
    with pytest.raises(engine.EngineError, match=r"does not answer at unix://.*is dockerd"):
        engine.Engine(str(tmp_path / "none.sock")).containers([])


def test_images_parser_names_what_docker_images_names() -> None:
    """GET /images/json as `docker images --digests --format '{{.Repository}}:{{.Tag}}
    {{.Repository}}@{{.Digest}}'` lists it, without the `<none>` of untagged images."""
    body = json.dumps([
        {"RepoTags": ["ghcr.io/org/app:sha-1", "ghcr.io/org/app:latest"],
         "RepoDigests": ["ghcr.io/org/app@sha256:" + "a" * 64]},
        {"RepoTags": None, "RepoDigests": ["redis@sha256:" + "b" * 64]},  # pulled by digest
        {"RepoTags": ["<none>:<none>"], "RepoDigests": ["<none>@<none>"]},  # dangling
        {"RepoTags": ["traefik:v3.1"]},
    ])
    assert engine.parse_images(body) == {
        "ghcr.io/org/app:sha-1", "ghcr.io/org/app:latest", "ghcr.io/org/app@sha256:" + "a" * 64,
        "redis@sha256:" + "b" * 64, "traefik:v3.1"}


@pytest.mark.parametrize("body", [b"{}", b"not json"])
def test_images_parser_refuses_what_is_not_a_list(body: bytes) -> None:
    with pytest.raises(engine.EngineError):
        engine.parse_images(body)


def serve_each(path: Path, answers: dict[str, bytes]) -> threading.Thread:
    """A unix socket that answers each request by its path (404 for the ones not named)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)

    def run() -> None:
        with server:
            for _ in range(len(answers) + 1):
                conn, _ = server.accept()
                with conn:
                    target = conn.recv(65536).split(b" ", 2)[1].decode()
                    conn.sendall(answers.get(target, b'HTTP/1.0 404 Not Found\r\n\r\n'
                                                     b'{"message":"No such container: x"}'))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_inspect_leaves_out_the_gone_ones_as_the_cli_does(tmp_path: Path) -> None:
    sock = tmp_path / "d.sock"
    doc = {"Id": "a" * 64, "State": {"Health": {"Status": "healthy"}}}
    serve_each(sock, {f"/containers/{'a' * 64}/json":
                      b"HTTP/1.0 200 OK\r\n\r\n" + json.dumps(doc).encode()})
    assert engine.Engine(str(sock)).inspect(["a" * 64, "gone"]) == [doc]
