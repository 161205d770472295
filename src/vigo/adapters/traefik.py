"""Which servers Traefik has loaded: a thin client for its read-only API.

A zero-downtime rollout asks it two questions (host/engines/compose.py): is the new container's
server in the load balancer of every service the old one serves, and is the old one's gone?
Traefik's Docker provider lists a container as a server only while it is running and, when it
has a healthcheck, healthy; the API answers from the same configuration the routers were built
from.

Where the API is: the proxy stack serves it through a router on an entrypoint of its own, with
no published port (docs/deploys.md, the proxy templates):

    --api=true  --api.dashboard=false  --entrypoints.vigo.address=:8082
    labels: traefik.http.routers.vigo-api.{rule=PathPrefix(`/api`), entrypoints=vigo,
            service=api@internal}

vigo reads that from the Traefik container's own arguments and labels (`endpoint`, pure) and
asks the container's address on the proxy network (a Linux bridge the host reaches). When the
proxy does not serve the API, a remote engine makes the address unreachable, or Traefik does not
answer in time, `endpoint` or `services` say so: the rollout asks again, and waits its fixed
times while the API stays silent. `labels` tells a new container that routes as the old one.
Nothing here writes: the API is read-only (GET).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from vigo.adapters.engine import EngineError, TooLarge, exchange, parse_response

API_SERVICE = "api@internal"
MAX_ANSWER = 16 * 1024 * 1024
PER_PAGE = 1000


class TraefikError(Exception):
    """The API could not be asked or gave no usable answer (one line: where and why)."""


def _flags(args: Iterable[object]) -> dict[str, str]:
    """Traefik's static options from its arguments (`--a.b=c`, `--a.b c`, `--flag`): lower-cased
    names (Traefik's are case-insensitive) to values ("true" for a bare flag)."""
    out: dict[str, str] = {}
    tokens = [str(a) for a in args]
    for i, token in enumerate(tokens):
        if not token.startswith("--"):
            continue
        name, eq, value = token[2:].partition("=")
        if not eq:
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            value = nxt if nxt and not nxt.startswith("--") else "true"
        out[name.lower()] = value
    return out


def _env_flags(env: Iterable[object]) -> dict[str, str]:
    """TRAEFIK_API_INSECURE=true and the like, as the names `_flags` gives."""
    out: dict[str, str] = {}
    for item in env:
        key, eq, value = str(item).partition("=")
        if eq and key.upper().startswith("TRAEFIK_"):
            out[key[8:].lower().replace("_", ".")] = value
    return out


def _port(address: str) -> int | None:
    """The port of an entrypoint address (":8082", "0.0.0.0:8082/tcp"); None for one bound to
    the container's loopback (unreachable from the host) or malformed."""
    address = address.split("/", 1)[0].strip()
    host, _, port = address.rpartition(":")
    if not port.isdigit() or host.strip("[]") in ("127.0.0.1", "localhost", "::1"):
        return None
    return int(port)


def endpoint(doc: Mapping[str, object], network: str = "") -> str | None:
    """The base URL of the API of one Traefik container (a `docker inspect` document), or None
    when it serves none vigo can reach: `--api` off, no router to api@internal (or
    `--api.insecure`'s `traefik` entrypoint), an entrypoint on loopback, no address."""
    config = doc.get("Config") if isinstance(doc.get("Config"), dict) else {}
    assert isinstance(config, dict)
    args = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    flags = {**_env_flags(config.get("Env") or []), **_flags(args)}
    api = flags.get("api")
    if (api or "").lower() != "true" and (api is not None or not any(
            k.startswith("api.") for k in flags)):
        return None  # --api=true, or an --api.* option without --api=false, turns it on
    labels = config.get("Labels") or {}
    assert isinstance(labels, dict)
    entrypoint = ""
    for key, value in sorted(labels.items()):
        parts = str(key).split(".")
        if (len(parts) == 5 and parts[:3] == ["traefik", "http", "routers"]
                and parts[4] == "service" and str(value).strip() == API_SERVICE):
            eps = str(labels.get(f"traefik.http.routers.{parts[3]}.entrypoints") or "")
            entrypoint = eps.split(",")[0].strip()
            if entrypoint:
                break
    if not entrypoint and flags.get("api.insecure", "").lower() == "true":
        entrypoint = "traefik"
    if not entrypoint:
        return None
    address = flags.get(f"entrypoints.{entrypoint.lower()}.address",
                        ":8080" if entrypoint == "traefik" else "")
    port = _port(address)
    if port is None:
        return None
    settings = doc.get("NetworkSettings") if isinstance(doc.get("NetworkSettings"), dict) else {}
    assert isinstance(settings, dict)
    networks = settings.get("Networks") or {}
    assert isinstance(networks, dict)
    wanted = network or flags.get("providers.docker.network", "")
    ips = [str((networks.get(wanted) or {}).get("IPAddress") or "")] if wanted in networks else []
    ips += [str((n or {}).get("IPAddress") or "") for _, n in sorted(networks.items())]
    ip = next((i for i in ips if i), "")
    return f"http://{ip}:{port}" if ip else None


def parse_services(body: bytes | str) -> dict[str, frozenset[str]]:
    """service name -> the hosts ("ip:port") of the servers in its load balancer, from the
    answer of /api/http/services."""
    try:
        items = json.loads(body)
    except ValueError:
        raise TraefikError("the Traefik API's answer is not JSON") from None
    if not isinstance(items, list):
        raise TraefikError("the Traefik API's answer is not a list of services")
    out: dict[str, frozenset[str]] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        lb = item.get("loadBalancer") if isinstance(item.get("loadBalancer"), dict) else {}
        servers = lb.get("servers") if isinstance(lb, dict) else None
        urls = [str(s.get("url") or "") for s in servers or () if isinstance(s, dict)]
        out[str(item.get("name") or "")] = frozenset(
            netloc for netloc in (urlsplit(u).netloc for u in urls if u) if netloc)
    return out


def holding(services: Mapping[str, frozenset[str]], ips: Iterable[str]) -> frozenset[str]:
    """The services with a server at one of `ips` (any port)."""
    wanted = {ip for ip in ips if ip}
    return frozenset(name for name, hosts in services.items()
                     if any(h.rsplit(":", 1)[0].strip("[]") in wanted for h in hosts))


def labels(doc: Mapping[str, object]) -> dict[str, str]:
    """The `traefik.*` labels of one container (a `docker inspect` document): what Traefik's
    docker provider makes its routers and services of."""
    config = doc.get("Config") if isinstance(doc.get("Config"), dict) else {}
    found = (config.get("Labels") if isinstance(config, dict) else None) or {}
    return {str(k): str(v) for k, v in found.items() if str(k).startswith("traefik.")} \
        if isinstance(found, dict) else {}


def addresses(doc: Mapping[str, object]) -> frozenset[str]:
    """Every IP address a container has on its networks (a `docker inspect` document)."""
    settings = doc.get("NetworkSettings") if isinstance(doc.get("NetworkSettings"), dict) else {}
    networks = (settings.get("Networks") if isinstance(settings, dict) else None) or {}
    return frozenset(str((n or {}).get(k) or "") for n in networks.values() if isinstance(n, dict)
                     for k in ("IPAddress", "GlobalIPv6Address")) - {""}


class Api:
    """GET /api/http/services of one Traefik, one HTTP/1.0 request per page."""

    def __init__(self, base: str, timeout: float = 2.0) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.slowest = 0.0  # the longest an answer took, in seconds: how starved Traefik is

    def services(self) -> dict[str, frozenset[str]]:
        out: dict[str, frozenset[str]] = {}
        page = 1
        while page:
            start = time.monotonic()
            code, headers, body = self._get(f"/api/http/services?per_page={PER_PAGE}&page={page}")
            self.slowest = max(self.slowest, time.monotonic() - start)
            if code != 200:
                raise TraefikError(f"the Traefik API at {self.base} answered {code}")
            out.update(parse_services(body))
            nxt = headers.get("x-next-page", "")
            page = int(nxt) if nxt.isdigit() and int(nxt) > page else 0
        return out

    def _get(self, target: str) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(self.base)
        host, port = parts.hostname or "", parts.port or 80
        try:
            with socket.create_connection((host, port), timeout=self.timeout) as sock:
                sock.settimeout(self.timeout)
                raw = exchange(sock, target, parts.netloc, MAX_ANSWER)
        except TooLarge:
            raise TraefikError(f"the Traefik API at {self.base} sent more than "
                               f"{MAX_ANSWER >> 20} MB") from None
        except TimeoutError:
            raise TraefikError(f"the Traefik API at {self.base} did not answer within "
                               f"{self.timeout:g}s") from None
        except OSError as exc:
            raise TraefikError(f"the Traefik API at {self.base} does not answer: "
                               f"{exc.strerror or exc}") from None
        try:
            code, _, body = parse_response(raw)
        except EngineError:
            raise TraefikError(f"the Traefik API at {self.base} gave no HTTP answer") from None
        head = raw.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head)}
        return code, headers, body
