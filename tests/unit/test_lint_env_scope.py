"""Rule env-file: a stack's env files are env/global.env, env/<stack>.env or files of its own
folder; include/extends never pull in another stack's files. A table over lint_tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tree import write_tree
from vigo.core.lint import lint_tree

SHA = "ghcr.io/org/app:sha-1234567"


def app(service_extra: str = "", top: str = "") -> dict[str, str]:
    return {"stacks/app/compose.yaml": f"{top}services:\n  web:\n    image: {SHA}\n"
                                       f"{service_extra}",
            "stacks/db/compose.yaml": f"services:\n  db:\n    image: {SHA}\n"
                                      "    env_file: ../../env/db.env\n"}


@pytest.mark.parametrize("files, expected", [
    pytest.param(app("    env_file: ../../env/app.env\n"), [], id="own"),
    pytest.param(app("    env_file: [../../env/global.env, ../../env/app.env]\n"), [],
                 id="global-and-own"),
    pytest.param(app("    env_file: ./local.env\n"), [], id="own-folder"),
    pytest.param(app("    env_file: ../../env/${X:-db}.env\n"), ["env-file"],
                 id="variable-with-default"),
    pytest.param(app("    env_file: ../../env/${APP}.env\n"), ["env-file"], id="variable"),
    pytest.param(app("    env_file: ../../env/db.env\n"), ["env-file"], id="another-stacks"),
    pytest.param(app("    env_file:\n      - path: ../../env/db.env\n        required: false\n"),
                 ["env-file"], id="long-form"),
    pytest.param(app("    env_file: ../db/secret.env\n"), ["env-file"],
                 id="another-stacks-folder"),
    pytest.param(app("    label_file: ../../env/db.env\n"), ["env-file"], id="label-file"),
    pytest.param(app(top="include: [../db/compose.yaml]\n"), ["env-file"],
                 id="include-another-stack"),
    pytest.param({**app("    extends: {file: ../db/compose.yaml, service: db}\n"),
                  "stacks/app/compose.yaml": "services:\n  web:\n    extends: {file: "
                                             "../db/compose.yaml, service: db}\n"},
                 ["env-file"], id="extends-another-stack"),
    pytest.param(app(top="include:\n  - path: part.yml\n    env_file: ../../env/db.env\n"),
                 ["env-file"], id="include-env-file"),
])
def test_env_file_scope(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    write_tree(tmp_path, {**files, "stacks/app/part.yml": "services: {}\n",
                          "stacks/app/local.env": "A=1\n"})
    found = [f for f in lint_tree(tmp_path) if f.rule == "env-file" and
             f.path.startswith("stacks/app/")]
    assert [f.rule for f in found] == expected, [f.message for f in found]
    for f in found:
        assert "stack 'app'" in f.message
