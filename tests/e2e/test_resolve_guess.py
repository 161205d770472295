"""The rollout's `compose config --hash` asked beside the model (host/resolve.py, Resolver._guess).

Real `docker compose`: a stack with a zero-downtime service is resolved three times. The first
time there is no override of a last deploy, so the hash is asked after the model; the second
time (a new image tag) the override comes out the same bytes and the answer asked beside the
model is taken; the third time the healthcheck changes, so the override does too, the guess is
dropped and compose is asked again. Each time the hashes must equal those of an ordinary
`compose config --hash` of the files as they are at the end.
"""

from __future__ import annotations

import threading
from pathlib import Path

from vigo.adapters.compose import Compose
from vigo.adapters.run import Masker, Runner
from vigo.config import Settings
from vigo.core.model import Paths, Stack
from vigo.host.resolve import Resolver

COMPOSE = """\
services:
  web:
    image: ghcr.io/vigo-example/whoami:{tag}
    healthcheck:
      test: ["CMD", "{probe}"]
      interval: 1s
    labels:
      - traefik.enable=true
"""


class Counting(Compose):
    """The real adapter, noting each `config --hash` process: beside the model (another
    thread) or after it (the caller's)."""

    def __init__(self) -> None:
        super().__init__(Runner())
        self.asked: list[str] = []

    def config_hashes(self, project, files, env_files) -> dict[str, str]:  # type: ignore[override]
        main = threading.current_thread() is threading.main_thread()
        self.asked.append("after" if main else "beside")
        return super().config_hashes(project, files, env_files)


def test_the_hash_asked_beside_the_model_is_taken_only_for_the_same_override(
        tmp_path: Path) -> None:
    compose = Counting()
    settings = Settings(repo="x", host="h", project_prefix="guess-")
    resolver = Resolver(settings, compose, Masker(), lambda _: None, lambda _: None)
    paths = Paths(tmp_path / "rt", tmp_path / "sec", tmp_path / "ov", tmp_path / "man")
    (paths.runtime / "stacks/web").mkdir(parents=True)
    paths.overrides.mkdir()
    stack = Stack("web", "stacks/web/compose.yaml", (), (), (), {}, "h")
    files = [paths.runtime / stack.compose_file, paths.overrides / "guess-web.json"]

    def resolve(tag: str, probe: str) -> tuple[dict[str, str], list[str]]:
        (paths.runtime / stack.compose_file).write_text(COMPOSE.format(tag=tag, probe=probe))
        compose.asked.clear()
        res = resolver.resolve(stack, paths, {stack.compose_file})
        assert not res.error and not res.policy, (res.error, res.policy)
        assert res.config_hashes == Compose(Runner()).config_hashes("guess-web", files, [])
        return dict(res.config_hashes), list(compose.asked)

    first, asked = resolve("sha-1a2b3c4", "true")
    assert asked == ["after"] and set(first) == {"web"}  # no last override yet
    second, asked = resolve("sha-5d6e7f8", "true")
    assert asked == ["beside"] and second != first  # a new tag: the same override
    third, asked = resolve("sha-5d6e7f8", "/bin/true")
    assert asked == ["beside", "after"] and third != second  # a new healthcheck, a new override
