"""`vigo init` makes a repo that `vigo check` accepts and `vigo apply` serves over verified
HTTPS, with a certificate from a real ACME CA (pebble), plain HTTP redirected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import TAG_A, Host
from tests.support.infra import SOPS_ENV, free_port, sh
from tests.support.poll import wait_for

ROOT = Path(__file__).resolve().parents[2]
IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@vigo.invalid",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@vigo.invalid"}


@pytest.fixture(scope="module")
def pebble(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pebble")
    sh(str(ROOT / "scripts/pebble"), "start", str(folder))
    yield folder
    sh(str(ROOT / "scripts/pebble"), "stop", str(folder), check=False)


def vigo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "vigo", *args], cwd=cwd, text=True,
                          capture_output=True, check=False, env={**os.environ, **IDENTITY})


def test_init_refuses_non_empty_folder_and_never_overwrites_a_key(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo/notes.txt").write_text("mine\n")
    key = tmp_path / "age.txt"
    key.write_text("# public key: age1" + "q" * 58 + "\nAGE-SECRET-KEY-1KEEPME\n")
    res = vigo("init", str(tmp_path / "repo"), "--age-keygen", str(key))
    assert res.returncode == 2 and "is not empty" in res.stderr
    assert "KEEPME" in key.read_text()
    res = vigo("init", str(tmp_path / "repo2"), "--age-keygen", str(tmp_path / "repo2/k.txt"))
    assert res.returncode == 2 and "inside" in res.stderr


def test_init_check_apply_verified_tls_and_http_redirect(host: Host, pebble: Path,
                                                         tmp_path: Path) -> None:
    repo = tmp_path / "made-by-init"
    res = vigo("init", str(repo), "--age-keygen", str(host.key.path), "--domain",
               f"{host.prefix[:-1]}.test", "--email", "ops@vigo.invalid", "--image",
               f"ghcr.io/vigo-example/whoami:{TAG_A}")
    assert res.returncode == 0, res.stderr
    assert "exists, not overwritten" in res.stdout  # the host fixture made the key already
    for env in (repo / "env").iterdir():
        assert "sops_mac=ENC[" in env.read_text()
    res = vigo("check", str(repo))
    assert res.returncode == 0 and "0 error(s), 0 warning(s)" in res.stdout, res.stdout
    # Test-only overrides, as a host overlay: free ports, the local CA, this test's network.
    http, https = free_port(), free_port()
    acme_port = sh(str(ROOT / "scripts/pebble"), "port", str(pebble)).stdout.strip()
    network = f"{host.prefix}proxy"
    proxy = (repo / "proxy/docker-compose.yml").read_text()
    proxy = proxy.replace('"${HTTP_PORT:-80}:80"', '"127.0.0.1:${HTTP_PORT}:80"')
    proxy = proxy.replace('"${HTTPS_PORT:-443}:443"', '"127.0.0.1:${HTTPS_PORT}:443"')
    proxy = proxy.replace("name: proxy_default", f"name: {network}")
    proxy = proxy.replace("network=proxy_default", f"network={network}")
    proxy = proxy.replace(
        "      - --certificatesresolvers.le.acme.storage=/letsencrypt/acme.json\n",
        "      - --certificatesresolvers.le.acme.storage=/letsencrypt/acme.json\n"
        f"      - --certificatesresolvers.le.acme.caserver=https://pebble.test:{acme_port}/dir\n"
        f"      - --providers.docker.constraints=Label(`io.vigo.instance`,`{host.prefix}`)\n")
    proxy = proxy.replace(
        "    restart: unless-stopped\n",
        "    restart: unless-stopped\n"
        "    extra_hosts: [\"pebble.test:host-gateway\"]\n"
        "    environment: [LEGO_CA_CERTIFICATES=/pebble/api-ca.pem]\n")
    proxy = proxy.replace("      - ./acme/acme.json:/letsencrypt/acme.json\n",
                          "      - ./acme/acme.json:/letsencrypt/acme.json\n"
                          f"      - {pebble}/api-ca.pem:/pebble/api-ca.pem:ro\n")
    overlay = repo / "hosts/testhost"
    (overlay / "proxy").mkdir(parents=True)
    (overlay / "proxy/docker-compose.yml").write_text(proxy)
    (overlay / "stacks/whoami").mkdir(parents=True)
    (overlay / "stacks/whoami/docker-compose.yml").write_text(
        (repo / "stacks/whoami/docker-compose.yml").read_text()
        .replace("name: proxy_default", f"name: {network}")
        .replace("routers.whoami", f"routers.{host.prefix}whoami")
        .replace("services.whoami", f"services.{host.prefix}whoami"))
    (overlay / "env").mkdir()
    plain = f"TRAEFIK_ACME_EMAIL=ops@vigo.invalid\nHTTP_PORT={http}\nHTTPS_PORT={https}\n"
    encrypted = sh("sops", "--encrypt", "--input-type", "dotenv", "--output-type", "dotenv",
                   "--filename-override", "hosts/testhost/env/proxy.env", "/dev/stdin",
                   cwd=repo, env=SOPS_ENV, input=plain).stdout
    (overlay / "env/proxy.env").write_text(encrypted)
    sh("git", "-C", str(repo), "add", "-A")
    sh("git", "-C", str(repo), "commit", "-qm", "test host overlay", env=IDENTITY)
    sh("git", "-C", str(repo), "push", "-q", str(host.repo.remote), "main:main")
    host.config.write_text(host.config.read_text() + f'allow_host_paths = ["{pebble}"]\n')

    res = host.apply()
    assert "proxy: created" in res.stdout and "whoami: created" in res.stdout
    root = tmp_path / "root.pem"
    root.write_text(sh(str(ROOT / "scripts/pebble"), "root", str(pebble)).stdout)
    name = f"whoami.{host.prefix[:-1]}.test"
    wait_for(lambda: sh("curl", "-sS", "--max-time", "5", "--resolve",
                        f"{name}:{https}:127.0.0.1", "--cacert", str(root),
                        f"https://{name}:{https}/", check=False), 60, 1,
             f"verified HTTPS from whoami (revision={TAG_A})",
             ok=lambda got: got.returncode == 0 and f"revision={TAG_A}" in got.stdout)
    issuer = sh("sh", "-c", f"echo | openssl s_client -connect 127.0.0.1:{https} "
                f"-servername {name} 2>/dev/null | openssl x509 -noout -issuer").stdout
    assert "Pebble" in issuer
    redirect = sh("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                  "--resolve", f"{name}:{http}:127.0.0.1", f"http://{name}:{http}/").stdout
    code, location = redirect.split(" ", 1)
    assert code in ("301", "302", "307", "308") and location.startswith(f"https://{name}")
    # acme.json holds the certificate and survives the next runs.
    acme = host.runtime / "proxy/acme/acme.json"
    saved = wait_for(acme.read_text, 20, 0.5, f"{name}'s certificate in acme.json",
                     ok=lambda text: name in text)
    host.apply()
    host.apply("--force")
    assert acme.read_text() == saved
