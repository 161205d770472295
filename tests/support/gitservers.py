"""Real git servers for the private-repo tests, started by the tests on free loopback ports:
Debian's OpenSSH sshd with a deploy key limited by git-shell, and `git http-backend` behind
lighttpd with TLS from a local CA and basic auth. Nothing here writes under ~/.ssh."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.infra import free_port, sh
from tests.support.poll import wait_for


def _wait_port(port: int, proc: subprocess.Popen[bytes] | None, log: Path,
               what: str, addr: str = "127.0.0.1") -> None:
    def listens() -> bool:
        try:
            with socket.create_connection((addr, port), timeout=1):
                return True
        except OSError:
            return False

    wait_for(listens, 20, 0.05, f"{what} to listen on {addr}:{port}",
             abort=lambda: proc is not None and proc.poll() is not None and
             f"it exited {proc.poll()}",
             detail=lambda: log.read_text() if log.exists() else "")


def _free_port_on(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str = "vigo-test") -> str:
    """A new ed25519 key without a passphrase; returns the public line."""
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
    os.chmod(path, 0o600)
    return path.with_name(path.name + ".pub").read_text().strip()


def fingerprint(public_line: str) -> str:
    return sh("ssh-keygen", "-l", "-E", "sha256", "-f", "-", input=public_line + "\n"
              ).stdout.split()[1]


class SshGitServer:
    """sshd on 127.0.0.1:<free port> serving bare repos by absolute path to deploy keys whose
    only command is git-shell. `rekey()` gives the server a new host key (a changed key).
    `addr`: where it listens; the docker0 gateway (172.17.0.1) for a client in a container."""

    def __init__(self, root: Path, addr: str = "127.0.0.1") -> None:
        self.root = root
        self.addr = addr
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port() if addr == "127.0.0.1" else _free_port_on(addr)
        self.host_key = root / "ssh_host_ed25519_key"
        self.host_public = keygen(self.host_key, "host")
        self.authorized = root / "authorized_keys"
        self.authorized.write_text("")
        self.config = root / "sshd_config"
        self.pidfile = root / "sshd.pid"
        self.log = root / "sshd.log"
        self.config.write_text(
            f"Port {self.port}\nListenAddress {addr}\nHostKey {self.host_key}\n"
            f"AuthorizedKeysFile {self.authorized}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            f"StrictModes no\nUsePAM no\nPidFile {self.pidfile}\nLogLevel VERBOSE\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.start()

    def start(self) -> None:
        sh("/usr/sbin/sshd", "-t", "-f", str(self.config))
        sh("/usr/sbin/sshd", "-f", str(self.config), "-E", str(self.log))
        _wait_port(self.port, None, self.log, "sshd", self.addr)

    def stop(self) -> None:
        try:
            pid = int(self.pidfile.read_text())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)

    def allow(self, public_line: str) -> None:
        """A read/write deploy key limited to git (git-shell runs the only command)."""
        with self.authorized.open("a") as f:
            f.write(f'command="git-shell -c \\"$SSH_ORIGINAL_COMMAND\\"",restrict '
                    f"{public_line}\n")

    def url(self, repo: Path) -> str:
        return f"ssh://root@{self.addr}:{self.port}{repo}"

    def known_hosts(self, path: Path) -> Path:
        kind, key = self.host_public.split()[:2]
        path.write_text(f"[{self.addr}]:{self.port} {kind} {key}\n")
        return path

    def fingerprint(self) -> str:
        return fingerprint(self.host_public)

    def rekey(self) -> None:
        """A new host key and a restart: the pinned key no longer matches."""
        self.stop()
        self.host_key.unlink()
        self.host_key.with_name(self.host_key.name + ".pub").unlink()
        self.host_public = keygen(self.host_key, "host")
        self.start()


def local_ca(root: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1")
             ) -> tuple[Path, Path, Path]:
    """(CA cert, server cert, server key) from a new CA; the server cert names `names`."""
    ca, ca_key = root / "ca.pem", root / "ca.key"
    cert, key = root / "server.pem", root / "server.key"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sh("openssl", "req", "-x509", *ec, "-days", "30", "-subj", "/CN=vigo test git CA",
       "-keyout", str(ca_key), "-out", str(ca))
    sh("openssl", "req", *ec, "-subj", "/CN=localhost", "-keyout", str(key),
       "-out", str(root / "server.csr"))
    san = ",".join(("IP:" if n[0].isdigit() else "DNS:") + n for n in names)
    ext = root / "san.ext"
    ext.write_text(f"subjectAltName={san}\n")
    sh("openssl", "x509", "-req", "-in", str(root / "server.csr"), "-CA", str(ca), "-CAkey",
       str(ca_key), "-CAcreateserial", "-days", "30", "-extfile", str(ext), "-out", str(cert))
    return ca, cert, key


class HttpsGitServer:
    """`git http-backend` (CGI) behind lighttpd on https://127.0.0.1:<free port>/git/<name>,
    TLS from a local CA (`ca`), basic auth: user `user`, password `token`."""

    def __init__(self, root: Path, projects: Path, user: str, token: str) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.ca, cert, key = local_ca(root)
        users = root / "users"
        users.write_text(f"{user}:{token}\n")
        self.log = root / "lighttpd.log"
        self.access = root / "access.log"
        conf = root / "lighttpd.conf"
        conf.write_text(f"""
server.modules = ("mod_openssl", "mod_auth", "mod_authn_file", "mod_alias", "mod_setenv",
                  "mod_cgi", "mod_accesslog")
server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {self.port}
server.errorlog = "{self.log}"
accesslog.filename = "{self.access}"
server.pid-file = "{root}/lighttpd.pid"
ssl.engine = "enable"
ssl.pemfile = "{cert}"
ssl.privkey = "{key}"
auth.backend = "plain"
auth.backend.plain.userfile = "{users}"
$HTTP["url"] =~ "^/git/" {{
  auth.require = ("" => ("method" => "basic", "realm" => "git", "require" => "valid-user"))
  alias.url = ("/git/" => "/usr/lib/git-core/git-http-backend/")
  cgi.assign = ("" => "")
  setenv.set-environment = ("GIT_PROJECT_ROOT" => "{projects}", "GIT_HTTP_EXPORT_ALL" => "1")
}}
""")
        self.proc = subprocess.Popen(["lighttpd", "-D", "-f", str(conf)],
                                     stdout=self.log.open("a"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, self.log, "lighttpd")

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/git/{name}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
