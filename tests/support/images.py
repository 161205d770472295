"""Local test images: build a demo app image for any tag on the fly.

Nothing can be pulled on the test machines, so every image a test names must exist locally.
``scripts/build-images`` makes the base image and the default app tags; tests that need
another revision call :func:`ensure_app_image`, which takes about a second per new tag.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

APP_REPOSITORY = "ghcr.io/vigo-example/whoami"
BASE_IMAGE = "vigo-test/base:1"
APP_CONTEXT = Path(__file__).resolve().parents[2] / "images" / "app"


def image_exists(ref: str) -> bool:
    """Whether the local engine has an image called ``ref``."""
    result = subprocess.run(["docker", "image", "inspect", ref], capture_output=True, check=False)
    return result.returncode == 0


def ensure_app_image(tag: str) -> str:
    """Return ``ghcr.io/vigo-example/whoami:<tag>``, building it first if it is missing.

    The image serves ``hostname=<container hostname>`` and ``revision=<tag>`` on port 80.
    """
    ref = f"{APP_REPOSITORY}:{tag}"
    if image_exists(ref):
        return ref
    if not image_exists(BASE_IMAGE):
        raise RuntimeError(f"{BASE_IMAGE} is missing: run scripts/build-images first")
    build = ["docker", "build", "-q", "--force-rm", "--build-arg", f"REVISION={tag}", "-t", ref]
    result = subprocess.run(
        [*build, str(APP_CONTEXT)],
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"building {ref} failed:\n{result.stdout}{result.stderr}")
    return ref
