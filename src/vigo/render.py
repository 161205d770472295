"""Render: the checkout + hosts/<host>/ overlay -> DesiredState. Reads files, writes nothing."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

from vigo.model import COMPOSE_NAMES, PROXY, DesiredState, Stack

# Bump when what vigo generates around a stack changes, so every stack is applied once again.
RENDER_VERSION = "1"
STACK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
OVERLAY_ROOTS = ("proxy/", "stacks/", "env/")
SKIP_DIRS = {".git"}
# A rendered file larger than this fails the stack that owns it (outside a stack: not copied).
# Compose files, configs and env files are kilobytes; a huge one is a mistake or an attack on the
# disk, the runtime tree and the digests every run computes.
MAX_FILE_SIZE = 16 * 1024 * 1024
GITMODULES_WARNING = ".gitmodules: submodules are never fetched; ignored"


def owner(path: str) -> str | None:
    """The stack a repo-relative path belongs to, if any."""
    parts = path.split("/")
    if parts[0] == "proxy":
        return PROXY
    if parts[0] == "stacks" and len(parts) > 2:
        return parts[1]
    if parts[0] == "env" and len(parts) == 2 and parts[1].endswith(".env"):
        name = parts[1][: -len(".env")]
        # global.env feeds every stack; registries.env holds pull credentials, no stack's
        return None if name in ("global", "registries") else name
    return None


def is_env_file(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and parts[0] == "env" and parts[1].endswith(".env")


def _walk(root: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Every file under root (relative POSIX path -> absolute path) and the refused ones."""
    files: dict[str, Path] = {}
    refused: dict[str, str] = {}
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = base / name
            rel = path.relative_to(root).as_posix()
            if not path.is_symlink():
                if name in filenames:
                    files[rel] = path
                    _check_size(path, rel, files, refused)
                continue
            target = path.resolve()
            if not target.is_relative_to(real_root):
                refused[rel] = f"{rel} is a symlink that points outside the repo"
            elif target.is_dir():
                refused[rel] = f"{rel} is a symlink to a folder (not supported: copy the files)"
            elif target.is_file():
                files[rel] = target
                _check_size(target, rel, files, refused)
            else:
                refused[rel] = f"{rel} is a broken symlink"
        dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
    return files, refused


def _check_size(path: Path, rel: str, files: dict[str, Path], refused: dict[str, str]) -> None:
    size = path.stat().st_size
    if size > MAX_FILE_SIZE:
        del files[rel]
        refused[rel] = (f"{rel} is {size / 2**20:.1f} MiB ({size} bytes), over the "
                        f"{MAX_FILE_SIZE // 2**20} MiB limit of a rendered file")


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def render(checkout: Path, host: str, revision: str) -> DesiredState:
    all_files, refused = _walk(checkout)
    files: dict[str, Path] = {}
    overlay: dict[str, Path] = {}
    warnings: list[str] = []
    prefix = f"hosts/{host}/"
    for rel, src in all_files.items():
        if rel == ".gitmodules":  # git never recurses into submodules for vigo
            warnings.append(GITMODULES_WARNING)
            continue
        if rel.startswith("hosts/"):
            if rel.startswith(prefix):
                inner = rel[len(prefix):]
                if inner.startswith(OVERLAY_ROOTS):
                    overlay[inner] = src
                else:
                    warnings.append(f"{rel}: ignored (a host overlay holds only proxy/, stacks/ "
                                    "and env/)")
            continue
        files[rel] = src
    files.update(overlay)
    for rel, why in _clashes(files, overlay, prefix).items():  # refused like a bad symlink
        del files[rel]
        refused[rel] = why
    problems: dict[str, list[str]] = {}
    blocked: set[str] = set()
    for rel, why in refused.items():
        inner = rel[len(prefix):] if rel.startswith(prefix) else rel
        if rel.startswith("hosts/") and not rel.startswith(prefix):
            continue
        name = owner(inner)
        if name is None and inner.startswith("env/global"):
            name = "*"
        if name is None:
            if f"{why}: not copied" not in warnings:  # a clash refuses two paths, says it once
                warnings.append(f"{why}: not copied")
        else:
            if why not in problems.setdefault(name, []):
                problems[name].append(why)
            blocked.add(inner)
    env_files = {rel: src for rel, src in files.items() if is_env_file(rel)}
    digests = {rel: digest(src) for rel, src in files.items()}
    found = _find_stacks(files)
    for name in problems:
        # A stack whose compose file was refused still exists: it fails, it is never pruned.
        if name not in found and name != "*" and any(
                owner(rel) == name and not is_env_file(rel) for rel in blocked):
            found[name] = ("proxy" if name == PROXY else f"stacks/{name}") + "/docker-compose.yml"
    stacks = [_stack(name, cf, files, env_files, digests, problems) for name, cf in found.items()]
    return DesiredState(
        revision=revision,
        host=host,
        files={k: v for k, v in files.items() if k not in blocked and not is_env_file(k)},
        env_files=env_files,
        stacks=tuple(sorted(stacks, key=lambda s: (s.name != PROXY, s.name))),
        blocked=frozenset(blocked),
        warnings=tuple(warnings),
    )


def _clashes(files: Mapping[str, Path], overlay: Mapping[str, Path], prefix: str
             ) -> dict[str, str]:
    """Paths that are a file in one tree (base or overlay) and a folder in the other: neither
    can be copied, whichever tree wins."""
    out: dict[str, str] = {}
    for rel in files:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in files:
                trees = ((prefix, "the base tree") if parent in overlay
                         else ("the base tree", prefix))
                why = f"{parent} is a file in {trees[0]} and a folder in {trees[1]}"
                out[parent] = out[rel] = why
    return out


def _find_stacks(files: Mapping[str, Path]) -> dict[str, str]:
    """stack name -> compose file, for proxy/ and every stacks/<name>/."""
    folders: dict[str, list[str]] = {}
    for rel in files:
        parts = rel.split("/")
        if parts[0] == "proxy" and len(parts) == 2 and parts[1] in COMPOSE_NAMES:
            folders.setdefault(PROXY, []).append(rel)
        elif parts[0] == "stacks" and len(parts) == 3 and parts[2] in COMPOSE_NAMES:
            folders.setdefault(parts[1], []).append(rel)
    # proxy/ always wins over a stacks/proxy/ (which is reported as a problem of the proxy).
    return {name: sorted(found, key=lambda r: (r.startswith("stacks/"),
                                               COMPOSE_NAMES.index(r.rsplit("/", 1)[1])))[0]
            for name, found in folders.items()}


def _stack(name: str, compose_file: str, files: Mapping[str, Path],
           env_files: Mapping[str, Path], digests: Mapping[str, str],
           problems: Mapping[str, list[str]]) -> Stack:
    folder = compose_file.rsplit("/", 1)[0] + "/"
    own = tuple(sorted(rel for rel in files if rel.startswith(folder)))
    issues = list(problems.get(name, [])) + list(problems.get("*", []))
    if name != PROXY and not STACK_NAME.match(name):
        issues.append(f"stack name {name!r} is not a valid compose project name "
                      "(use lowercase letters, digits, '-' and '_')")
    if name == PROXY and any(rel.startswith("stacks/proxy/") for rel in files):
        issues.append("a stack may not be called 'proxy' (that is the proxy's project name)")
    composes = [rel for rel in own if rel.count("/") == folder.count("/")
                and rel.rsplit("/", 1)[1] in COMPOSE_NAMES]
    if len(composes) > 1:
        issues.append(f"{' and '.join(composes)} both exist: keep one compose file")
    interpolation = tuple(p for p in ("env/global.env", f"env/{name}.env") if p in env_files)
    text = _read_text(files[compose_file]) if compose_file in files else ""
    mentioned = tuple(rel for rel in env_files if rel not in interpolation
                      and (name_ := rel.split("/", 1)[1]) in text  # cheap test first: O(n^2)
                      and re.search(r"(?<![\w.-])" + re.escape(name_) + r"(?![\w.-])", text))
    env = interpolation + tuple(sorted(mentioned))
    stack_digests = {rel: digests[rel] for rel in (*own, *env)}
    h = hashlib.sha256(f"vigo-render-{RENDER_VERSION}\n{name}\n".encode())
    for rel in sorted(stack_digests):
        h.update(f"{rel}\0{stack_digests[rel]}\n".encode())
    return Stack(name=name, compose_file=compose_file, files=own, env_files=env,
                 interpolation_env=interpolation, digests=stack_digests, hash=h.hexdigest(),
                 problems=tuple(issues))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
