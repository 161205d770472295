"""Filesystem effects: atomic writes, the rendered runtime tree, the secrets folder."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from vigo.core.records import record


class UnsafePath(OSError):
    """A path below one of vigo's folders crosses a symbolic link (or a file where a folder must
    be): the operation is refused and nothing outside the folder is touched. An OSError, so the
    callers' per-path error handling turns it into that stack's failure."""

    def __init__(self, path: Path, why: str, link: bool = False) -> None:
        super().__init__(errno.ELOOP, f"{path} {why}", str(path))
        self.path = path
        self.link = link  # a symbolic link (not a file where a folder must be)

    def __str__(self) -> str:
        return str(self.strerror)


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
PUBLIC_DIR, PRIVATE_DIR = 0o755, 0o700


def _parts(path: Path, root: Path) -> tuple[str, ...]:
    """The components of path below root; a path that is not below root is refused."""
    if not path.is_absolute() or not root.is_absolute():
        path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        raise UnsafePath(path, f"is not inside {root}") from None
    if any(p in ("..", ".") for p in parts):
        raise UnsafePath(path, f"is not inside {root}")
    return parts


def _refusal(path: Path, dir_fd: int, name: str) -> UnsafePath:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return UnsafePath(path, "changed while vigo walked it")
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError:
            target = "?"
        return UnsafePath(path, f"is a symbolic link (to {target}): vigo never follows a link "
                                "in its own folders (a container may have planted it); remove it",
                          link=True)
    return UnsafePath(path, "is not a folder: remove it, vigo will create the folder")


def _fix_mode(fd: int, mode: int | None) -> None:
    """Folders vigo makes or walks get their mode whatever the umask: private ones exactly,
    public ones at least (a folder a container tightened keeps the bits it added)."""
    if mode is None:
        return
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        return
    current = stat.S_IMODE(st.st_mode)
    wanted = mode if mode == PRIVATE_DIR else current | mode
    if current != wanted:
        os.fchmod(fd, wanted)


def open_root(root: Path, mode: int | None = None, create: bool = True) -> int:
    """An fd of one of vigo's root folders (runtime, secrets, state). The root itself and its
    parents come from the settings and may be links the operator made (/var/lib/vigo ->
    /data/vigo): they are followed. Everything below is walked by `open_dir`, never followed."""
    if create and not os.path.isdir(root):
        os.makedirs(root, mode=mode or PUBLIC_DIR, exist_ok=True)
        if mode is not None:
            os.chmod(root, mode)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if mode == PRIVATE_DIR:
            _fix_mode(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir(root: Path, folder: Path, mode: int | None = None, create: bool = True) -> int:
    """An fd of `folder` (root or below it), walked one component at a time with O_NOFOLLOW:
    a component that is a link or not a folder raises UnsafePath naming it. Missing folders
    are made with `mode` (whatever the umask) when `create`, else FileNotFoundError."""
    parts = _parts(folder, root)
    fd = open_root(root, mode, create)
    here = Path(os.path.abspath(root))
    try:
        for name in parts:
            here = here / name
            nfd = _step(fd, name, here, mode, create)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _step(fd: int, name: str, here: Path, mode: int | None, create: bool) -> int:
    try:
        nfd = os.open(name, _DIR, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refusal(here, fd, name) from None
        raise
    else:
        try:
            _fix_mode(nfd, mode)
        except BaseException:
            os.close(nfd)
            raise
        return nfd
    try:
        os.mkdir(name, mode or PUBLIC_DIR, dir_fd=fd)
        made = True
    except FileExistsError:
        made = False
    try:
        nfd = os.open(name, _DIR, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refusal(here, fd, name) from None
        raise
    try:
        if made and mode is not None:
            os.fchmod(nfd, mode)
        else:
            _fix_mode(nfd, mode)
    except BaseException:
        os.close(nfd)
        raise
    return nfd


def first_link(path: Path, root: Path) -> Path | None:
    """The first component of path below root that is a symbolic link (None when there is
    none; missing components end the walk). A path outside root is its own answer."""
    try:
        parts = _parts(path, root)
    except UnsafePath:
        return path
    here = Path(os.path.abspath(root))
    for name in parts:
        here = here / name
        try:
            st = os.lstat(here)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(st.st_mode):
            return here
    return None


def crossed_link(path: Path, runtime: Path, allowed: Iterable[Path] = ()) -> Path | None:
    """The first link `path` crosses: below the runtime tree, or from an allowed host path
    (itself included: a prefix the operator allowed that became a link points elsewhere) down.
    None when it crosses none, or when neither holds it (the policy judges those paths)."""
    path = Path(os.path.abspath(path))
    runtime = Path(os.path.abspath(runtime))
    if path.is_relative_to(runtime):
        return first_link(path, runtime)
    prefixes = [Path(os.path.abspath(p)) for p in allowed]
    prefixes = [p for p in prefixes if path.is_relative_to(p) and p != p.parent]
    if not prefixes:
        return None
    prefix = min(prefixes, key=lambda p: len(p.parts))  # the widest allowed prefix
    return first_link(path, prefix.parent)


def _write_at(dir_fd: int, name: str, data: bytes, mode: int, sync: bool = True) -> None:
    """Write name in the folder dir_fd through a temp file and a rename (the rename replaces
    a link at `name` itself, never its target)."""
    tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def atomic_write(path: Path, data: bytes, mode: int = 0o644, dir_mode: int = 0o755,
                 *, root: Path | None = None, sync: bool = True) -> None:
    """Write data to path through a temp file in the same folder and a rename; the mode is
    `mode` whatever the umask. With `root`, the folders from root down to the file are walked
    without following links (and made with dir_mode); without it the file's folder is the
    root (a settings path: the metrics file, a unit file)."""
    fd = open_dir(root, path.parent, dir_mode) if root is not None else open_root(
        path.parent, dir_mode)
    try:
        _write_at(fd, path.name, data, mode, sync)
    finally:
        os.close(fd)


def write_json(path: Path, obj: object, mode: int = 0o600, *, root: Path | None = None,
               sync: bool = True) -> None:
    """`sync=False`: no fsync (still a whole file or the old one, but after a power cut
    possibly an empty one): for a file whose loss costs nothing."""
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), mode,
                 dir_mode=PRIVATE_DIR, root=root or path.parent, sync=sync)


def read_json(path: Path) -> object | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def private_dir(path: Path, *, root: Path | None = None) -> Path:
    """Create (or tighten) a folder readable only by its owner. With `root`, the folders
    below root are walked without following links (UnsafePath when one is a link)."""
    os.close(open_dir(root or path, path, PRIVATE_DIR))
    return path


def write_secret(path: Path, text: str, *, root: Path | None = None) -> None:
    """A 0600 file in 0700 folders. With `root` (the secrets folder) nothing below it is
    followed; without it the file's folder is the root."""
    atomic_write(path, text.encode(), mode=0o600, dir_mode=PRIVATE_DIR,
                 root=root or path.parent)


def set_link(path: Path, target: Path | None, *, root: Path) -> None:
    """Make `path` (below root, nothing on the way followed) a symlink to `target`, or remove
    what is there when `target` is None. A link that already points there is left alone."""
    fd = open_dir(root, path.parent, create=False)
    try:
        try:
            current: str | None = os.readlink(path.name, dir_fd=fd)
        except FileNotFoundError:
            current = None
        except OSError:  # there, and not a link
            current = ""
        if target is not None and current == str(target):
            return
        if current is not None:
            os.unlink(path.name, dir_fd=fd)
        if target is not None:
            os.symlink(target, path.name, dir_fd=fd)
    finally:
        os.close(fd)


def remove(path: Path, *, root: Path | None = None) -> None:
    """Remove a file (or a link itself, never its target); a missing one is fine. With `root`,
    the folders below root are walked without following links."""
    try:
        fd = open_dir(root or path.parent, path.parent, create=False)
    except FileNotFoundError:
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.name, dir_fd=fd)
    finally:
        os.close(fd)


def ensure_private_file(path: Path, root: Path | None = None) -> str:
    """A file that must exist with mode 0600 before a container mounts it (acme.json): made
    without following a link (below `root`, default its folder), 0600, never truncated. A
    link or a folder at its place is refused. Returns an error text, or ''."""
    try:
        fd = open_dir(root or path.parent, path.parent, PUBLIC_DIR if root else None)
    except OSError as exc:
        return f"cannot create {path}: {exc.strerror or exc}"
    try:
        try:
            st = os.stat(path.name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            return (f"{path} is a folder (Docker creates one when the file is missing at "
                    "start): remove it, vigo will create the file")
        if st is not None and not stat.S_ISREG(st.st_mode):
            return str(_refusal(path, fd, path.name)) if stat.S_ISLNK(st.st_mode) else (
                f"{path} is not a regular file: remove it, vigo will create the file")
        try:
            ffd = os.open(path.name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                          | os.O_NONBLOCK, 0o600, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return str(_refusal(path, fd, path.name))
            return f"cannot create {path}: {exc.strerror or exc}"
        try:
            if stat.S_IMODE(os.fstat(ffd).st_mode) != 0o600:
                os.fchmod(ffd, 0o600)
        finally:
            os.close(ffd)
    finally:
        os.close(fd)
    return ""


def filesystem_type(path: Path) -> str:
    """The type of the filesystem that holds path (or would hold it), from /proc/mounts."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        mounts = Path("/proc/mounts").read_text()
    except OSError:
        return ""
    return mount_type(str(path.resolve()), mounts)


def mount_type(where: str, mounts: str) -> str:
    """The type of the innermost mount of /proc/mounts' text that holds the resolved absolute
    path `where`. Compared as strings (a resolved path has no `.`, `..` or `//`): a host with
    100 containers lists hundreds of mounts, and two Path objects for each cost ms per run."""
    best, kind = "", ""
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ")
        inside = where == mount or where.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, parts[2]
    return kind


def _same_file(dir_fd: int, name: str, data: bytes, mode: int) -> bool:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != mode or st.st_size != len(data):
        return False
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        return f.read(len(data) + 1) == data


@record(frozen=True)
class Synced:
    changed: list[str]  # paths written or removed
    errors: dict[str, str]  # paths that could not be written, and why
    warning: str = ""  # the manifest could not be saved (a full state folder)


def sync_tree(root: Path, files: Mapping[str, Path], links: Mapping[str, Path],
              keep: Iterable[str], manifest: Path, *, sync: bool = True,
              keys: Mapping[str, str] | None = None) -> Synced:
    """Make root hold `files` (copies) and `links` (symlinks), removing what vigo wrote
    before and no longer renders. Paths vigo never wrote (acme.json, data folders) and the
    paths in `keep` are left alone. A path that cannot be written does not stop the others.
    Nothing below root is followed: a folder on the way that is a link (a container with a
    writable mount may plant one) fails that path, and nothing outside root is touched.
    Folders are 0755 and files 0644 (0755 when executable) whatever the umask, so a container
    that does not run as root can read its mounted config. `sync=False` skips the fsyncs (a
    scratch tree nobody depends on after a crash: vigo check's).

    `keys` (rel -> what the source file holds: its digest) let a sync that would change nothing
    skip reading the tree: after a sync without errors, the lstat data of every path it wrote
    and the mode and inode of every folder on the way are stamped beside the manifest; the next
    call with the same keys, links and keep, whose paths all still lstat the same, returns at
    once (any write, chmod, rename or replacement changes a file's ctime or inode, which no
    tool sets back; a folder replaced by a link changes its mode). Files whose times are within
    STAMP_RACY_NS of the stamp are not trusted: that call syncs in full and stamps again."""
    keep = set(keep)
    stamp_path = manifest.with_name(manifest.name + STAMP_SUFFIX)
    want = _wanted(files, links, keep, keys) if keys is not None else None
    if want is not None and _stamp_holds(root, stamp_path, manifest, want):
        return Synced([], {})
    if want is not None:
        with contextlib.suppress(OSError):
            stamp_path.unlink()  # stale from here on, whatever the sync does
    dirs = _Dirs(root, PUBLIC_DIR)
    try:
        synced = _sync(root, dirs, files, links, keep, manifest, sync)
    finally:
        dirs.close()
    if want is not None and not synced.errors and not synced.warning:
        _stamp(root, stamp_path, manifest, want)
    return synced


STAMP_SUFFIX = ".stamp"  # beside the manifest: rendered.json.stamp
STAMP_RACY_NS = 2_000_000_000  # coarse file timestamps (1-2 s on some file systems)


def _wanted(files: Mapping[str, Path], links: Mapping[str, Path], keep: set[str],
            keys: Mapping[str, str]) -> dict | None:
    """What a stamp is of: each file's key and executable bit, each link's target, keep."""
    try:
        out = {rel: keys[rel] + ("+x" if os.access(src, os.X_OK) else "")
               for rel, src in files.items()}
    except KeyError:  # a file without a key: always in full
        return None
    return {"files": out, "links": {rel: str(t) for rel, t in links.items()},
            "keep": sorted(keep)}


def lstat_key(path: str | Path) -> list[int] | None:
    """mode, size, inode, mtime and ctime (ns) of a path itself; None when it is missing."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return [st.st_mode, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def _tree_stat(root: Path, rels: Iterable[str]) -> tuple[dict, dict]:
    """lstat data of each path, and (mode, inode) of each folder on the way (root's too)."""
    base = os.path.abspath(root)
    paths: dict[str, list[int] | None] = {}
    folders: dict[str, list[int] | None] = {}
    for rel in rels:
        paths[rel] = lstat_key(f"{base}/{rel}")
        parts = rel.split("/")[:-1]
        for i in range(len(parts) + 1):
            folder = "/".join(parts[:i])
            if folder not in folders:
                st = lstat_key(f"{base}/{folder}" if folder else base)
                folders[folder] = st and st[:1] + st[2:3]
    return paths, folders


def _stamp(root: Path, stamp_path: Path, manifest: Path, want: dict) -> None:
    """Best effort: without a stamp the next call syncs in full."""
    recorded = time.time_ns()
    paths, folders = _tree_stat(root, [*want["files"], *want["links"]])
    try:
        atomic_write(stamp_path, json.dumps(
            {"want": want, "paths": paths, "folders": folders,
             "manifest": lstat_key(str(manifest)), "recorded_ns": recorded},
            separators=(",", ":")).encode(), 0o600, dir_mode=PRIVATE_DIR,
            root=stamp_path.parent, sync=False)
    except OSError:
        with contextlib.suppress(OSError):
            stamp_path.unlink()


def _stamp_holds(root: Path, stamp_path: Path, manifest: Path, want: dict) -> bool:
    try:
        data = read_json(stamp_path)
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(data, dict) or data.get("want") != want \
            or not isinstance(data.get("recorded_ns"), int):
        return False
    recorded = data.get("paths")
    if not isinstance(recorded, dict):
        return False
    limit = data["recorded_ns"] - STAMP_RACY_NS
    for st in [*recorded.values(), data.get("manifest")]:
        if not (isinstance(st, list) and len(st) == 5 and all(type(v) is int for v in st)) \
                or max(st[3], st[4]) >= limit:
            return False
    try:
        return lstat_key(str(manifest)) == data["manifest"] and _tree_stat(
            root, [*want["files"], *want["links"]]) == (recorded, data.get("folders"))
    except OSError:
        return False


class _Dirs:
    """Folder descriptors below a root, each opened once per call by `_step` from its parent's
    (never following a link), so a tree of many files costs one open per folder."""

    def __init__(self, root: Path, mode: int) -> None:
        self.root = Path(os.path.abspath(root))
        self.mode = mode
        self.fds: dict[Path, int] = {self.root: open_root(self.root, mode)}

    def get(self, folder: Path, create: bool = True) -> int:
        folder = Path(os.path.abspath(folder))
        fd = self.fds.get(folder)
        if fd is not None:
            return fd
        _parts(folder, self.root)  # refuses a folder outside the root
        parent = self.get(folder.parent, create)
        fd = self.fds[folder] = _step(parent, folder.name, folder, self.mode, create)
        return fd

    def forget(self, folder: Path) -> None:
        """folder was removed: drop it and what was below it."""
        for path in [p for p in self.fds if p == folder or p.is_relative_to(folder)]:
            os.close(self.fds.pop(path))

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _sync(root: Path, dirs: _Dirs, files: Mapping[str, Path], links: Mapping[str, Path],
          keep: set[str], manifest: Path, sync: bool = True) -> Synced:
    old = read_json(manifest) or {}
    assert isinstance(old, dict)
    changed: list[str] = []
    errors: dict[str, str] = {}
    for rel in sorted(set(old) - set(files) - set(links) - keep, reverse=True):
        dst = root / rel
        try:
            if _remove_stale(dirs, dst):
                changed.append(rel)
        except OSError as exc:
            errors[rel] = f"cannot remove {dst}: {exc.strerror or exc}"
            continue
        _prune_empty(dst.parent, dirs)
    for rel, src in files.items():
        if rel in keep:
            continue
        dst = root / rel
        data = src.read_bytes()
        mode = 0o755 if os.access(src, os.X_OK) else 0o644
        try:
            if _put_file(dirs, dst, data, mode, sync):
                changed.append(rel)
        except _Folder:
            errors[rel] = (f"{dst} is a folder (Docker creates one when a mounted file is "
                           "missing at start): remove it, vigo will write the file")
        except OSError as exc:
            errors[rel] = f"cannot write {dst}: {exc.strerror or exc}"
    for rel, target in links.items():
        dst = root / rel
        try:
            if _put_link(dirs, dst, str(target)):
                changed.append(rel)
        except OSError as exc:
            errors[rel] = f"cannot write {dst}: {exc.strerror or exc}"
    recorded = {rel: "file" for rel in files if rel not in errors} | {
        rel: "link" for rel in links if rel not in errors}
    recorded |= {rel: old[rel] for rel in keep if rel in old}
    recorded |= {rel: old[rel] for rel in errors if rel in old and rel not in recorded}
    if recorded != old:
        try:
            write_json(manifest, recorded)
        except OSError as exc:  # the next run may leave a file vigo no longer renders
            return Synced(changed, errors, f"cannot save {manifest}: {exc.strerror or exc}")
    return Synced(changed, errors)


class _Folder(Exception):
    """A folder where vigo must write a file."""


def _remove_stale(dirs: _Dirs, dst: Path) -> bool:
    try:
        fd = dirs.get(dst.parent, create=False)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except UnsafePath as exc:
        if exc.link:  # what is below the link is not vigo's to remove: an error, kept
            raise
        return False  # a file where its folder was: the old file is gone already
    try:
        st = os.stat(dst.name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        return False
    os.unlink(dst.name, dir_fd=fd)  # a file or a link itself, never a link's target
    return True


def _put_file(dirs: _Dirs, dst: Path, data: bytes, mode: int, sync: bool = True) -> bool:
    fd = dirs.get(dst.parent)
    if _same_file(fd, dst.name, data, mode):
        return False
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.stat(dst.name, dir_fd=fd, follow_symlinks=False).st_mode):
            raise _Folder()
    _write_at(fd, dst.name, data, mode, sync)  # replaces a link itself, never through it
    return True


def _put_link(dirs: _Dirs, dst: Path, target: str) -> bool:
    fd = dirs.get(dst.parent)
    with contextlib.suppress(OSError):
        if os.readlink(dst.name, dir_fd=fd) == target:
            return False
    tmp = f".{dst.name}.link"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=fd)
    os.symlink(target, tmp, dir_fd=fd)
    os.replace(tmp, dst.name, src_dir_fd=fd, dst_dir_fd=fd)
    return True


def _prune_empty(folder: Path, dirs: _Dirs) -> None:
    """Remove folder and its parents up to the root while they are empty (rmdir never
    follows a link)."""
    folder = Path(os.path.abspath(folder))
    while folder != dirs.root and folder.is_relative_to(dirs.root):
        try:
            os.rmdir(folder.name, dir_fd=dirs.get(folder.parent, create=False))
        except OSError:
            return
        dirs.forget(folder)
        folder = folder.parent
