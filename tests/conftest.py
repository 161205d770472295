"""Suite-wide setup.

- Every test under tests/e2e/ carries the `e2e` marker (a conftest's `pytestmark` is not applied
  to the tests beside it), so `pytest -m "not e2e"` is the fast loop.
- `python -m vigo` started by a test runs the code of this checkout (also from a git worktree
  whose src/ is not the editable install's).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT / "tests" / "e2e"

os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(E2E):
            item.add_marker(pytest.mark.e2e)
