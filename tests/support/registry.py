"""A real private registry for end-to-end tests: Debian's `docker-registry` (Distribution 2.8)
with htpasswd auth and TLS from a local CA that the shared engine trusts through
/etc/docker/certs.d/HOST:PORT/ca.crt (read at each pull: no engine restart).

It listens on the docker0 gateway (172.17.0.1), not on loopback: the engine treats 127.0.0.0/8
registries as insecure and would never check the certificate. Images are pushed from the
locally built test images, tagged for the registry, and the registry-tagged names are removed
from the engine again, so a later pull really goes to the registry.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.infra import sh

GATEWAY = "172.17.0.1"
CERTS_D = Path("/etc/docker/certs.d")


def _free_port(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self, root: Path, user: str = "vigo-ci", password: str = "Pa55-w0rd:reg!") -> None:
        self.root = root
        self.user, self.password = user, password
        self.port = _free_port(GATEWAY)
        self.host = f"{GATEWAY}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pushed: list[str] = []
        root.mkdir(parents=True, exist_ok=True)
        self.ca = root / "ca.crt"
        self.login_dir = root / "docker-login"  # the tests' own DOCKER_CONFIG for pushes

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Registry:
        r = self.root
        sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
           "-subj", "/CN=vigo test registry CA", "-keyout", str(r / "ca.key"),
           "-out", str(self.ca))
        (r / "san.cnf").write_text(f"subjectAltName=IP:{GATEWAY}\n"
                                   "basicConstraints=CA:FALSE\n"
                                   "extendedKeyUsage=serverAuth\n")
        sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={GATEWAY}",
           "-keyout", str(r / "server.key"), "-out", str(r / "server.csr"))
        sh("openssl", "x509", "-req", "-in", str(r / "server.csr"), "-CA", str(self.ca),
           "-CAkey", str(r / "ca.key"), "-CAcreateserial", "-days", "2",
           "-extfile", str(r / "san.cnf"), "-out", str(r / "server.crt"))
        htpasswd = sh("htpasswd", "-Bbn", self.user, self.password).stdout
        (r / "htpasswd").write_text(htpasswd)
        (r / "config.yml").write_text(json.dumps({
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(r / "data")},
                        "delete": {"enabled": True}},
            "http": {"addr": self.host,
                     "tls": {"certificate": str(r / "server.crt"),
                             "key": str(r / "server.key")}},
            "auth": {"htpasswd": {"realm": "vigo-test", "path": str(r / "htpasswd")}},
        }))
        trust = CERTS_D / self.host
        trust.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.ca, trust / "ca.crt")
        log = open(r / "registry.log", "wb")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen(["docker-registry", "serve", str(r / "config.yml")],
                                     stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        ctx = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"https://{self.host}/v2/", context=ctx, timeout=2)
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # up, and asking for credentials
                    break
            except (urllib.error.URLError, OSError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("docker-registry did not start:\n"
                                     + (r / "registry.log").read_text())
            time.sleep(0.2)
        self.login_dir.mkdir(exist_ok=True)
        sh("docker", "login", "-u", self.user, "--password-stdin", self.host,
           input=self.password, env={"DOCKER_CONFIG": str(self.login_dir)})
        return self

    def stop(self) -> None:
        for ref in self.pushed:
            sh("docker", "image", "rm", ref, check=False)
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(CERTS_D / self.host, ignore_errors=True)

    # -- images ---------------------------------------------------------------------------

    def push(self, local: str, name: str) -> tuple[str, str]:
        """Push a local image as HOST/name; returns (tag ref, digest ref). Both are removed
        from the engine afterwards: the next pull of either goes to the registry."""
        ref = f"{self.host}/{name}"
        sh("docker", "tag", local, ref)
        sh("docker", "push", "-q", ref, env={"DOCKER_CONFIG": str(self.login_dir)})
        digests = json.loads(sh("docker", "image", "inspect", "--format",
                                "{{json .RepoDigests}}", ref).stdout)
        repo = ref.rsplit(":", 1)[0]
        digest = next(d for d in digests if d.startswith(repo + "@"))
        self.forget(ref, digest)
        self.pushed += [ref, digest]
        return ref, digest

    def forget(self, *refs: str) -> None:
        """Untag registry names in the engine (the image itself stays under its local name)."""
        for ref in refs:
            sh("docker", "image", "rm", ref, check=False)

    def has_locally(self, ref: str) -> bool:
        return sh("docker", "image", "inspect", ref, check=False).returncode == 0

    def secrets(self) -> list[str]:
        pair = f"{self.user}:{self.password}"
        return [self.password, pair, base64.b64encode(pair.encode()).decode()]

