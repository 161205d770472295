"""Registry credentials for private images (docs/private-images.md). Pure.

In the infra repo they live in `env/registries.env` (a host overlay may replace it with
`hosts/<host>/env/registries.env`), encrypted with sops like every env file, one group of three
keys per registry:

    GHCR_REGISTRY=ghcr.io
    GHCR_USERNAME=deploy-bot
    GHCR_PASSWORD=ghp_...

On the host they come from root's `docker login` (`~/.docker/config.json`, or
`$DOCKER_CONFIG/config.json`). vigo merges both into one docker `config.json` on the secrets
tmpfs (mode 0600; the repo wins for a registry both name) and hands its folder as
`DOCKER_CONFIG` to the pulls and `compose up` of the stacks whose images come from a registry
that has a credential; nothing else sees it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from vigo.core.records import field, record

FILE = "env/registries.env"
SUFFIXES = ("_REGISTRY", "_USERNAME", "_PASSWORD")
DOCKER_HUB = "docker.io"
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")
_GROUP = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Words in a refused pull that mean the registry wants (other) credentials.
_AUTH_WORDS = ("unauthorized", "no basic auth credentials", "authentication required",
               "denied", "401", "403", "incorrect username or password")


class RegistriesError(ValueError):
    pass


@record(frozen=True)
class Credential:
    registry: str
    username: str
    password: str

    @property
    def auth(self) -> str:
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def secrets(self) -> tuple[str, ...]:
        """Every form of the credential that must never be printed."""
        return (self.password, f"{self.username}:{self.password}", self.auth)


def key_problems(names: Iterable[str]) -> list[str]:
    """What is wrong with the variable names of a registries file (they are in clear in the
    sops file, so `vigo check` can say it without the key); [] when the groups are complete."""
    groups: dict[str, set[str]] = {}
    problems = []
    for name in names:
        suffix = next((s for s in SUFFIXES if name.endswith(s)), "")
        group = name[: -len(suffix)] if suffix else ""
        if not suffix or not _GROUP.match(group):
            problems.append(f"{name}: not NAME_REGISTRY, NAME_USERNAME or NAME_PASSWORD")
            continue
        if suffix in groups.setdefault(group, set()):
            problems.append(f"{name}: set twice")
        groups[group].add(suffix)
    for group, have in sorted(groups.items()):
        missing = [group + s for s in SUFFIXES if s not in have]
        if missing:
            problems.append(f"{group}: {', '.join(missing)} missing (each registry needs "
                            f"{group}_REGISTRY, {group}_USERNAME and {group}_PASSWORD)")
    return problems


def parse(pairs: Iterable[tuple[str, str]]) -> dict[str, Credential]:
    """registry host -> credential, from the decrypted KEY=VALUE pairs of the file. Messages
    name keys, never values other than a registry host."""
    values: dict[str, str] = {}
    for key, value in pairs:
        values[key] = value
    problems = key_problems(values)
    if problems:
        raise RegistriesError("; ".join(problems))
    out: dict[str, Credential] = {}
    for group in sorted({k[: -len("_REGISTRY")] for k in values if k.endswith("_REGISTRY")}):
        host = normalize(values[group + "_REGISTRY"].strip())
        user, password = values[group + "_USERNAME"], values[group + "_PASSWORD"]
        if not _HOST.match(host):
            raise RegistriesError(f"{group}_REGISTRY is not a registry host[:port] "
                                  "(like ghcr.io or registry.example.com:5000)")
        if not user or ":" in user:
            raise RegistriesError(f"{group}_USERNAME is empty or holds ':'")
        if not password:
            raise RegistriesError(f"{group}_PASSWORD is empty")
        if host in out:
            raise RegistriesError(f"{group}_REGISTRY: {host} is named by two groups")
        out[host] = Credential(host, user, password)
    return out


def normalize(registry: str) -> str:
    """The key docker uses for a registry: Docker Hub's names fold into docker.io."""
    registry = registry.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
    if registry in ("index.docker.io", "registry-1.docker.io", "docker.io"):
        return DOCKER_HUB
    return registry


def registry_of(image: str) -> str:
    """The registry an image reference is pulled from (docker's rule: the first path part is
    a registry when it has a '.' or ':' or is localhost)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return normalize(first)
    return DOCKER_HUB


def config(host: Mapping[str, object], repo: Mapping[str, Credential]) -> dict[str, object]:
    """The docker config.json for pulls: the host's (its credential helpers too) with the
    repo's credentials on top. A registry the repo names drops a host helper for it, or the
    helper would win over the repo's credential."""
    out = dict(host)
    auths = dict(out.get("auths") or {}) if isinstance(out.get("auths"), dict) else {}
    helpers = dict(out.get("credHelpers") or {}) if isinstance(out.get("credHelpers"),
                                                               dict) else {}
    for key in list(auths):
        if normalize(key) in repo:
            del auths[key]
    for registry, cred in repo.items():
        name = "https://index.docker.io/v1/" if registry == DOCKER_HUB else registry
        auths[name] = {"auth": cred.auth}
        helpers = {k: v for k, v in helpers.items() if normalize(k) != registry}
    out["auths"] = auths
    if helpers:
        out["credHelpers"] = helpers
    else:
        out.pop("credHelpers", None)
    return out


def host_registries(host: Mapping[str, object]) -> set[str]:
    """The registries root's docker login has a credential for (a store holds some we cannot
    see: `credsStore` answers for every registry)."""
    found = set()
    for key in ("auths", "credHelpers"):
        value = host.get(key)
        if isinstance(value, dict):
            found |= {normalize(str(k)) for k in value}
    return found


def host_secrets(host: Mapping[str, object]) -> list[str]:
    """The auth strings (and the user:pass inside them) of a host config, for the masker."""
    out = []
    auths = host.get("auths")
    for entry in (auths.values() if isinstance(auths, dict) else ()):
        if isinstance(entry, dict):
            for key in ("auth", "password", "identitytoken", "registrytoken"):
                value = entry.get(key)
                if isinstance(value, str) and value:
                    out.append(value)
                    if key == "auth":
                        try:
                            plain = base64.b64decode(value).decode()
                        except (ValueError, UnicodeDecodeError):
                            continue
                        out += [plain, plain.partition(":")[2]]
    return out


def is_tls_failure(error: str) -> bool:
    low = error.lower()
    return "x509:" in low or "certificate signed by unknown authority" in low


def is_auth_failure(error: str) -> bool:
    low = error.lower()
    return any(word in low for word in _AUTH_WORDS)


@record(frozen=True)
class Pulls:
    """What one run's pulls get: the DOCKER_CONFIG folder (None: no credential anywhere), the
    registries it has a credential for and where each came from, and why the repo's file
    could not be used ('' when it could)."""

    docker_config: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict)  # registry -> where from
    everything: bool = False  # a credsStore: every registry may have one
    problem: str = ""

    def for_images(self, images: Iterable[str]) -> Path | None:
        """The DOCKER_CONFIG folder for a stack with these images, None when it needs none."""
        if self.docker_config is None:
            return None
        if self.everything or any(registry_of(i) in self.sources for i in images if i):
            return self.docker_config
        return None

    def explain(self, image: str, error: str) -> str:
        """One line for an image that cannot be pulled: the registry, the image, where the
        credential came from and the fix (the error is already masked)."""
        registry = registry_of(image)
        line = f"image {image} cannot be pulled from registry {registry}: {error}"
        if is_tls_failure(error):
            return (f"{line}; the engine does not trust the registry's TLS certificate; fix: "
                    f"put the CA that signed it at /etc/docker/certs.d/{registry}/ca.crt "
                    "(read at each pull, no engine restart)")
        if not is_auth_failure(error) and not self.problem:
            return line
        source = self.sources.get(registry)
        said = (f"the credential from {source} was refused" if source else
                f"no credential for {registry} in {FILE} nor in root's docker login")
        fix = (f"fix: set {registry} in {FILE} (sops) or run `docker login {registry}` as "
               "root")
        return "; ".join(x for x in (line, said, self.problem, fix) if x)
