"""Filesystem effects: atomic writes, the rendered runtime tree, the secrets folder."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o644, dir_mode: int = 0o755) -> None:
    """Write data to path through a temp file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: object, mode: int = 0o600) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), mode,
                 dir_mode=0o700)


def read_json(path: Path) -> object | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def private_dir(path: Path) -> Path:
    """Create (or tighten) a folder readable only by its owner."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_secret(path: Path, text: str) -> None:
    private_dir(path.parent)
    atomic_write(path, text.encode(), mode=0o600, dir_mode=0o700)


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def ensure_private_file(path: Path) -> str:
    """A file that must exist with mode 0600 before a container mounts it (acme.json).
    Never truncates it. Returns an error text, or ''."""
    if path.is_dir() and not path.is_symlink():
        return (f"{path} is a folder (Docker creates one when the file is missing at start): "
                "remove it, vigo will create the file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    return ""


def filesystem_type(path: Path) -> str:
    """The type of the filesystem that holds path (or would hold it), from /proc/mounts."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    path = path.resolve()
    best, kind = "", ""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ")
        if (path == Path(mount) or path.is_relative_to(mount)) and len(mount) >= len(best):
            best, kind = mount, parts[2]
    return kind


def _same_file(dst: Path, data: bytes, mode: int) -> bool:
    try:
        st = dst.lstat()
    except (FileNotFoundError, NotADirectoryError):  # a file where a folder must be: an error
        return False
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != mode or st.st_size != len(data):
        return False
    return dst.read_bytes() == data


@dataclass(frozen=True)
class Synced:
    changed: list[str]  # paths written or removed
    errors: dict[str, str]  # paths that could not be written, and why
    warning: str = ""  # the manifest could not be saved (a full state folder)


def sync_tree(root: Path, files: Mapping[str, Path], links: Mapping[str, Path],
              keep: Iterable[str], manifest: Path) -> Synced:
    """Make root hold `files` (copies) and `links` (symlinks), removing what vigo wrote
    before and no longer renders. Paths vigo never wrote (acme.json, data folders) and the
    paths in `keep` are left alone. A path that cannot be written does not stop the others."""
    root.mkdir(parents=True, exist_ok=True, mode=0o755)
    keep = set(keep)
    old = read_json(manifest) or {}
    assert isinstance(old, dict)
    changed: list[str] = []
    errors: dict[str, str] = {}
    for rel in sorted(set(old) - set(files) - set(links) - keep, reverse=True):
        dst = root / rel
        if dst.is_symlink() or dst.is_file():
            dst.unlink()
            changed.append(rel)
        _prune_empty(dst.parent, root)
    for rel, src in files.items():
        if rel in keep:
            continue
        dst = root / rel
        data = src.read_bytes()
        mode = 0o755 if os.access(src, os.X_OK) else 0o644
        if _same_file(dst, data, mode):
            continue
        if dst.is_dir() and not dst.is_symlink():
            errors[rel] = (f"{dst} is a folder (Docker creates one when a mounted file is "
                           "missing at start): remove it, vigo will write the file")
            continue
        if dst.is_symlink():
            dst.unlink()
        try:
            atomic_write(dst, data, mode)
            changed.append(rel)
        except OSError as exc:
            errors[rel] = f"cannot write {dst}: {exc.strerror or exc}"
    for rel, target in links.items():
        dst = root / rel
        if dst.is_symlink() and os.readlink(dst) == str(target):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.link")
        remove(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, dst)
        changed.append(rel)
    recorded = {rel: "file" for rel in files if rel not in errors} | {
        rel: "link" for rel in links}
    recorded |= {rel: old[rel] for rel in keep if rel in old}
    if recorded != old:
        try:
            write_json(manifest, recorded)
        except OSError as exc:  # the next run may leave a file vigo no longer renders
            return Synced(changed, errors, f"cannot save {manifest}: {exc.strerror or exc}")
    return Synced(changed, errors)


def _prune_empty(folder: Path, root: Path) -> None:
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
