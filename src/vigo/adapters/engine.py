"""The Docker engine's API on its unix socket: one HTTP request to list vigo's containers.

An idle run asks the engine one question; through the docker CLI that costs a process whose own
start is most of its 40-50 ms. Here it is one HTTP/1.0 request on the socket (the answer ends
when the engine closes the connection), written on `socket` alone: `http.client` would import
`ssl` and the `email` package (about 20 ms) on every idle run. Only unix:// endpoints are spoken
to directly; for tcp:// (TLS options), ssh:// and docker contexts (`socket_path` says None) the
same exchange goes through `docker system dial-stdio` (`Dialed`): the CLI makes the connection.
A deploy's image check (GET /images/json) and the inspects of the health gate and the rollout
(GET /containers/{id}/json, every poll) ask here too on the socket; the CLI stays for
everything else (compose, logs, exec, stop, rm).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vigo.core.model import (
    COMPOSE_CONFIG_HASH,
    COMPOSE_PROJECT,
    COMPOSE_SERVICE,
    LABEL_INSTANCE,
    LABEL_STACK,
    Container,
)

DEFAULT_SOCKET = "/var/run/docker.sock"
MAX_ANSWER = 64 * 1024 * 1024  # a list of containers larger than this is not an answer


class EngineError(Exception):
    """The engine could not be asked or gave no usable answer (one line: where and why)."""


class NotFound(EngineError):
    """The engine answered 404: no such container (or image)."""


def socket_path(env: Mapping[str, str], config_json: str | None = None) -> str | None:
    """The unix socket to ask, or None when the docker CLI must decide the endpoint: DOCKER_HOST
    is tcp:// or ssh:// (or anything but unix://), or a docker context other than `default` is
    chosen by DOCKER_CONTEXT or by `currentContext` in the CLI's config.json (`config_json`: its
    text, None when there is none)."""
    host = env.get("DOCKER_HOST", "")
    if host:
        if not host.startswith("unix://"):
            return None
        path = host[len("unix://"):]
        return path if path.startswith("/") else None
    context = env.get("DOCKER_CONTEXT", "")
    if not context and config_json:
        try:
            data = json.loads(config_json)
        except ValueError:
            return None  # the CLI will say what is wrong with its config
        context = str(data.get("currentContext") or "") if isinstance(data, dict) else ""
    return DEFAULT_SOCKET if context in ("", "default") else None


def cli_config(env: Mapping[str, str]) -> str | None:
    """The text of the docker CLI's config.json (DOCKER_CONFIG or ~/.docker), None if absent."""
    folder = env.get("DOCKER_CONFIG") or os.path.join(env.get("HOME") or "/root", ".docker")
    try:
        return (Path(folder) / "config.json").read_text(errors="replace")
    except OSError:
        return None


def list_query(labels: list[str]) -> str:
    """The request path for every container (running or not) that has all `labels`."""
    filters = json.dumps({"label": labels}, separators=(",", ":"))
    return f"/containers/json?all=1&filters={quote(filters, safe='')}"


def parse_containers(body: bytes | str) -> tuple[Container, ...]:
    """The engine's answer to GET /containers/json, as `docker ps --no-trunc` shows it: names
    without the leading slash (joined by commas), the full id, the image as given, the status
    string verbatim ("Up 3 minutes (healthy)")."""
    try:
        rows = json.loads(body)
    except ValueError as exc:
        raise EngineError(f"the engine's container list is not JSON: {exc}") from None
    if not isinstance(rows, list):
        raise EngineError("the engine's container list is not a list")
    out = []
    for row in rows:
        if not isinstance(row, dict):
            raise EngineError("the engine's container list holds a non-object")
        labels = row.get("Labels") or {}
        if not isinstance(labels, dict):
            labels = {}
        names = row.get("Names") or []
        out.append(Container(
            id=str(row.get("Id") or ""),
            name=",".join(str(n).lstrip("/") for n in names) if isinstance(names, list) else "",
            state=str(row.get("State") or ""), status=str(row.get("Status") or ""),
            image=str(row.get("Image") or ""),
            stack=str(labels.get(LABEL_STACK) or ""),
            instance=str(labels.get(LABEL_INSTANCE) or ""),
            project=str(labels.get(COMPOSE_PROJECT) or ""),
            service=str(labels.get(COMPOSE_SERVICE) or ""),
            config_hash=str(labels.get(COMPOSE_CONFIG_HASH) or "")))
    return tuple(out)


class TooLarge(Exception):
    """An answer longer than the caller's limit."""


def request(target: str, host: str) -> bytes:
    """One HTTP/1.0 GET (the server closes the connection after its answer)."""
    return (f"GET {target} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: vigo\r\n"
            "Accept: application/json\r\n\r\n").encode()


IMAGES = "/images/json"


def parse_images(body: bytes | str) -> set[str]:
    """The engine's answer to GET /images/json as `docker images --digests` names them: every
    repo:tag and repo@digest it holds (the `<none>` ones of untagged images left out)."""
    try:
        rows = json.loads(body)
    except ValueError as exc:
        raise EngineError(f"the engine's image list is not JSON: {exc}") from None
    if not isinstance(rows, list):
        raise EngineError("the engine's image list is not a list")
    out: set[str] = set()
    for row in rows:
        if not isinstance(row, dict):
            continue
        for ref in [*(row.get("RepoTags") or []), *(row.get("RepoDigests") or [])]:
            if isinstance(ref, str) and ref and "<none>" not in ref:
                out.add(ref)
    return out


def exchange(sock: socket.socket, target: str, host: str, limit: int) -> bytes:
    """One HTTP/1.0 GET on a connected socket: the whole raw answer (the server closes the
    connection after it), TooLarge past `limit` bytes. The engine and Traefik clients share it."""
    sock.sendall(request(target, host))
    return receive(sock, limit)


def receive(sock: socket.socket, limit: int) -> bytes:
    """The rest of an answer, to the server's close; TooLarge past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while data := sock.recv(65536):
        chunks.append(data)
        size += len(data)
        if size > limit:
            raise TooLarge
    return b"".join(chunks)


def parse_response(raw: bytes) -> tuple[int, str, bytes]:
    """(status code, reason, body) of a whole HTTP/1.x answer; a chunked body is joined."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise EngineError("the engine closed the connection before its answer was complete")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise EngineError(f"the engine's answer is not HTTP: {lines[0][:80]!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _unchunk(body)
    elif (length := headers.get("content-length", "")).isdigit():
        if len(body) < int(length):
            raise EngineError("the engine's answer was cut short")
        body = body[:int(length)]
    return int(parts[1]), parts[2] if len(parts) > 2 else "", body


def _unchunk(body: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = body.find(b"\r\n", pos)
        size_text = body[pos:end].split(b";", 1)[0].strip() if end >= 0 else b""
        try:
            size = int(size_text, 16)
        except ValueError:
            raise EngineError("the engine's chunked answer is malformed") from None
        if size == 0:
            return b"".join(out)
        chunk = body[end + 2:end + 2 + size]
        if len(chunk) < size:
            raise EngineError("the engine's answer was cut short")
        out.append(chunk)
        pos = end + 2 + size + 2


def local_cpus() -> int:
    """The CPUs this process may use (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def local_capacity() -> tuple[int, int | None]:
    """This host's CPUs (the ones this process may use) and its available memory in MB (None
    when /proc/meminfo does not say): what concurrent compose processes share."""
    cpus = local_cpus()
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return cpus, int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return cpus, None


class Reads:
    """The reads vigo makes, on any transport with a `get(target) -> body` (`Engine` on the
    socket, `Dialed` through the docker CLI)."""

    def get(self, target: str) -> bytes:
        raise NotImplementedError

    def containers(self, labels: list[str]) -> tuple[Container, ...]:
        """Every container, running or not, that carries all `labels` (`key` or `key=value`)."""
        return parse_containers(self.get(list_query(labels)))

    def inspect(self, ids: list[str]) -> list[dict[str, object]]:
        """`docker inspect --type container` of each id: the engine's own JSON of each
        container (the CLI prints it as it comes), one GET each; the ones that are gone are
        left out, as the CLI leaves them out."""
        out: list[dict[str, object]] = []
        for cid in ids:
            try:
                doc = json.loads(self.get(f"/containers/{quote(cid, safe='')}/json"))
            except NotFound:
                continue
            except ValueError as exc:
                raise EngineError(f"the engine's inspect of {cid[:12]} is not JSON: {exc}"
                                  ) from None
            if isinstance(doc, dict):
                out.append(doc)
        return out

    def images(self) -> set[str]:
        """Every image reference the engine holds (`parse_images`)."""
        return parse_images(self.get(IMAGES))


class Engine(Reads):
    """GET requests to the engine's API on a unix socket."""

    def __init__(self, path: str, timeout: float = 60) -> None:
        self.path = path
        self.timeout = timeout

    def get(self, target: str) -> bytes:
        """The body of a 200 answer to GET `target`; EngineError otherwise."""
        return self.ask(target).result()

    def ask(self, target: str) -> Asked:
        """Send GET `target` now, read its answer later (`Asked.result`): the engine works on
        it while vigo does something else. Never raises: a failure is `result`'s."""
        return Asked(self, target)


class Asked:
    """One GET sent on the engine's socket, its answer not read yet. `result` reads it (the
    errors of `Engine.get`, also those of the connect); `close` drops it unread."""

    def __init__(self, engine: Engine, target: str) -> None:
        self.engine = engine
        self.target = target
        self.sock: socket.socket | None = None
        self.error: Exception | None = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(engine.timeout)
            sock.connect(engine.path)
            sock.sendall(request(target, "docker"))
            self.sock = sock
        except OSError as exc:  # TimeoutError is one
            sock.close()
            self.error = exc

    def result(self) -> bytes:
        where = f"unix://{self.engine.path}"
        try:
            if self.error is not None:
                raise self.error
            assert self.sock is not None
            raw = receive(self.sock, MAX_ANSWER)
        except TooLarge:
            raise EngineError(f"the engine at {where} sent more than {MAX_ANSWER >> 20} MB "
                              f"for {self.target.split('?')[0]}") from None
        except TimeoutError:
            raise EngineError(f"the Docker engine at {where} did not answer within "
                              f"{self.engine.timeout:.0f}s") from None
        except OSError as exc:
            hint = (" (is dockerd running? DOCKER_HOST names another socket)"
                    if isinstance(exc, (FileNotFoundError, ConnectionRefusedError)) else
                    " (vigo must run as root or in the docker group)"
                    if isinstance(exc, PermissionError) else "")
            raise EngineError(f"the Docker engine does not answer at {where}: "
                              f"{exc.strerror or exc}{hint}") from None
        finally:
            self.close()
        return answer(raw, where)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def answer(raw: bytes, where: str) -> bytes:
    """The body of a whole raw 200 answer; EngineError (one line) for any other."""
    code, reason, body = parse_response(raw)
    if code != 200:
        try:
            message = str(json.loads(body).get("message") or "")
        except (ValueError, AttributeError):
            message = body[:200].decode("utf-8", "replace")
        kind = NotFound if code == 404 else EngineError
        raise kind(f"the Docker engine at {where} answered {code} {reason}".rstrip()
                   + (f": {message.strip()}" if message.strip() else ""))
    return body


# -- every other endpoint: the docker CLI's own connection -----------------------------------

DIAL_ARGV = ("docker", "system", "dial-stdio")


def endpoint(env: Mapping[str, str], config_json: str | None = None) -> str:
    """Where the engine reads go, as the runs say it: `unix://<path>` (asked directly), or
    `docker system dial-stdio (<what chose the endpoint>)`: the docker CLI connects to whatever
    DOCKER_HOST or the docker context names (tcp:// with its TLS options, ssh://, a context)
    and pipes the raw API on its stdin and stdout."""
    sock = socket_path(env, config_json)
    if sock:
        return f"unix://{sock}"
    if env.get("DOCKER_HOST"):
        chosen = f"DOCKER_HOST={env['DOCKER_HOST'].split('://', 1)[0]}://..."
    elif env.get("DOCKER_CONTEXT"):
        chosen = f"docker context {env['DOCKER_CONTEXT']}"
    else:
        chosen = "the docker CLI's current context"
    return f"{' '.join(DIAL_ARGV)} ({chosen})"


class Dialed(Reads):
    """GET requests to the engine through `docker system dial-stdio`, one process a request,
    started by the one runner (adapters/run.py): the same HTTP/1.0 exchange as on the socket
    (the engine closes the connection after its answer, and the CLI exits)."""

    def __init__(self, runner: Any, timeout: float = 60) -> None:
        self.runner = runner
        self.timeout = timeout

    def get(self, target: str) -> bytes:
        where = "the docker CLI's endpoint (docker system dial-stdio)"
        code, raw, err = self.runner.pipe(DIAL_ARGV, request(target, "docker"),
                                          timeout=self.timeout, limit=MAX_ANSWER)
        if len(raw) > MAX_ANSWER:
            raise EngineError(f"the engine at {where} sent more than {MAX_ANSWER >> 20} MB "
                              f"for {target.split('?')[0]}")
        if not raw:
            lines = [line.strip() for line in err.strip().splitlines() if line.strip()]
            raise EngineError(f"the Docker engine does not answer at {where}: "
                              + (" | ".join(lines[-3:]) or f"exit {code}"))
        return answer(raw, where)
