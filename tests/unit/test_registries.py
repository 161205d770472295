"""Registry credentials: the file's groups, the registry of an image, the merged config."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from vigo.core import registries
from vigo.core.registries import Credential, Pulls, RegistriesError
from vigo.host.engines.compose import image_ref


@pytest.mark.parametrize(("image", "registry"), [
    ("nginx:1.27", "docker.io"),
    ("library/nginx@sha256:" + "a" * 64, "docker.io"),
    ("docker.io/library/nginx:1", "docker.io"),
    ("index.docker.io/me/app:1", "docker.io"),
    ("ghcr.io/me/app:sha-1a2b3c4", "ghcr.io"),
    ("127.0.0.1:5055/app/x@sha256:" + "b" * 64, "127.0.0.1:5055"),
    ("localhost/app:1", "localhost"),
    ("me/app:1", "docker.io"),
    ("registry.example.com:5000/a/b/c:1", "registry.example.com:5000"),
])
def test_registry_of(image: str, registry: str) -> None:
    assert registries.registry_of(image) == registry


@pytest.mark.parametrize(("image", "ref"), [
    ("r:5000/app:sha-1@sha256:" + "c" * 64, "r:5000/app@sha256:" + "c" * 64),
    ("r:5000/app@sha256:" + "c" * 64, "r:5000/app@sha256:" + "c" * 64),
    ("r:5000/app", "r:5000/app:latest"),
    ("docker.io/library/nginx:1", "nginx:1"),
])
def test_image_ref_of_digest_and_tag(image: str, ref: str) -> None:
    assert image_ref(image) == ref


def test_parse_groups() -> None:
    creds = registries.parse([("GHCR_REGISTRY", "ghcr.io"), ("GHCR_USERNAME", "bot"),
                              ("GHCR_PASSWORD", "p:a=s$s"), ("LOCAL_REGISTRY", "127.0.0.1:5055"),
                              ("LOCAL_USERNAME", "ci"), ("LOCAL_PASSWORD", "x y")])
    assert set(creds) == {"ghcr.io", "127.0.0.1:5055"}
    assert base64.b64decode(creds["ghcr.io"].auth).decode() == "bot:p:a=s$s"


@pytest.mark.parametrize(("pairs", "why"), [
    ([("GHCR_REGISTRY", "ghcr.io"), ("GHCR_USERNAME", "bot")], "GHCR_PASSWORD missing"),
    ([("TOKEN", "x")], "TOKEN: not NAME_REGISTRY"),
    ([("A_REGISTRY", "bad host/x y"), ("A_USERNAME", "u"), ("A_PASSWORD", "p")],
     "A_REGISTRY is not a registry host"),
    ([("A_REGISTRY", "r.io"), ("A_USERNAME", "u:v"), ("A_PASSWORD", "p")], "A_USERNAME"),
    ([("A_REGISTRY", "r.io"), ("A_USERNAME", "u"), ("A_PASSWORD", "")], "A_PASSWORD is empty"),
    ([("A_REGISTRY", "r.io"), ("A_USERNAME", "u"), ("A_PASSWORD", "p"),
      ("B_REGISTRY", "r.io"), ("B_USERNAME", "u"), ("B_PASSWORD", "p")], "named by two"),
])
def test_parse_refuses_without_printing_values(pairs: list[tuple[str, str]], why: str) -> None:
    with pytest.raises(RegistriesError) as exc:
        registries.parse(pairs)
    assert why in str(exc.value)
    assert "u:v" not in str(exc.value)


def test_config_repo_wins_over_host_and_drops_its_helper() -> None:
    host = {"auths": {"https://ghcr.io": {"auth": "old"}, "other.io": {"auth": "keep"}},
            "credHelpers": {"ghcr.io": "pass", "third.io": "pass"}, "credsStore": "x"}
    out = registries.config(host, {"ghcr.io": Credential("ghcr.io", "u", "p")})
    assert out["auths"] == {"other.io": {"auth": "keep"},
                            "ghcr.io": {"auth": base64.b64encode(b"u:p").decode()}}
    assert out["credHelpers"] == {"third.io": "pass"} and out["credsStore"] == "x"
    hub = registries.config({}, {"docker.io": Credential("docker.io", "u", "p")})
    assert list(hub["auths"]) == ["https://index.docker.io/v1/"]


def test_host_secrets_cover_the_auth_and_its_parts() -> None:
    auth = base64.b64encode(b"user:hunter22").decode()
    assert set(registries.host_secrets({"auths": {"r": {"auth": auth}}})) == {
        auth, "user:hunter22", "hunter22"}


def test_pulls_only_for_stacks_that_need_them_and_explain() -> None:
    pulls = Pulls(Path("/run/vigo/docker"), {"127.0.0.1:5055": registries.FILE})
    assert pulls.for_images(["127.0.0.1:5055/app:1", "nginx:1"]) == Path("/run/vigo/docker")
    assert pulls.for_images(["nginx:1", ""]) is None
    assert Pulls().for_images(["127.0.0.1:5055/app:1"]) is None
    line = pulls.explain("127.0.0.1:5055/app:1", "unauthorized: authentication required")
    assert "registry 127.0.0.1:5055" in line and "env/registries.env was refused" in line
    line = Pulls().explain("r.io/app:1", "no basic auth credentials")
    assert "no credential for r.io" in line and "docker login r.io" in line
    assert "fix" not in Pulls().explain("r.io/app:1", "manifest unknown")
    line = Pulls().explain("r.io:5000/app:1", 'Get "https://r.io:5000/v2/": x509: certificate '
                           "signed by unknown authority")
    assert "/etc/docker/certs.d/r.io:5000/ca.crt" in line


def test_key_problems_for_check() -> None:
    assert registries.key_problems(["A_REGISTRY", "A_USERNAME", "A_PASSWORD"]) == []
    assert registries.key_problems(["A_REGISTRY", "A_REGISTRY", "A_USERNAME", "A_PASSWORD"]) == [
        "A_REGISTRY: set twice"]


def test_run_timeout_sets_timeout_start_sec() -> None:
    from vigo.config import Settings
    from vigo.core import units

    base = Settings(repo="/r", git_timeout=10, compose_timeout=20)
    assert units.spec(base, ["/usr/bin/vigo"], Path("/etc/vigo/vigo.toml")).timeout_start == 70
    short = units.spec(Settings(repo="/r", run_timeout=40), ["/usr/bin/vigo"],
                       Path("/etc/vigo/vigo.toml"))
    assert "TimeoutStartSec=40" in units.service(short)


def test_check_rule_names_the_incomplete_group_with_its_line(tmp_path: Path) -> None:
    from vigo.core import lint

    (tmp_path / "env").mkdir()
    (tmp_path / "hosts/web1/env").mkdir(parents=True)
    enc = "ENC[AES256_GCM,data:x,iv:y,tag:z,type:str]"
    (tmp_path / "env/registries.env").write_text(
        f"GHCR_REGISTRY={enc}\nGHCR_USERNAME={enc}\nsops_mac={enc}\n")
    (tmp_path / "hosts/web1/env/registries.env").write_text(
        f"A_REGISTRY={enc}\nA_USERNAME={enc}\nA_PASSWORD={enc}\nTOKEN={enc}\nsops_mac={enc}\n")
    found = [f for f in lint.lint_repo_files(tmp_path) if f.rule == "registries"]
    assert [(f.path, f.line) for f in found] == [("env/registries.env", None),
                                                 ("hosts/web1/env/registries.env", 4)]
    assert "GHCR_PASSWORD missing" in found[0].message
