"""Render: the checkout + hosts/<host>/ overlay -> DesiredState. Reads files, writes nothing."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from vigo.core.model import (
    COMPOSE_NAMES,
    OVERRIDE_NAMES,
    PROXY,
    STACK_NAME,  # noqa: F401  (re-exported: the grammar lives in model)
    DesiredState,
    Stack,
    is_stack_name,
)

try:  # CPython's own SHA-256, as `random` takes it: an idle run loads no OpenSSL (~3 ms)
    from _sha256 import sha256
except ImportError:  # 3.12 and later name it _sha2; a build without either has hashlib's
    try:
        from _sha2 import sha256  # type: ignore[import-not-found, no-redef]
    except ImportError:
        from hashlib import sha256  # type: ignore[assignment]
BIG_FILE = 1 << 20  # files larger than this are hashed by OpenSSL (hashlib): faster per byte

# Bump when what vigo generates around a stack changes, so every stack is applied once again.
RENDER_VERSION = "1"
OVERLAY_ROOTS = ("proxy/", "stacks/", "env/")
SKIP_DIRS = {".git"}
# A rendered file larger than this fails the stack that owns it (outside a stack: not copied).
# Compose files, configs and env files are kilobytes; a huge one is a mistake or an attack on the
# disk, the runtime tree and the digests every run computes.
MAX_FILE_SIZE = 16 * 1024 * 1024
GITMODULES_WARNING = ".gitmodules: submodules are never fetched; ignored"
# Folders deeper than this under the repo root are refused (no config tree is that deep; the
# walk never recurses, so a deeper one cannot crash a run).
MAX_DEPTH = 32


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


def shown(rel: str) -> str:
    """A path as a line may print it: bytes that are not UTF-8 and control characters (a newline
    in a file name) escaped, so no name can break or forge an output line."""
    text = os.fsencode(rel).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _odd_name(name: str) -> str:
    """Why a file name cannot be rendered ('' when it can)."""
    if name.isascii() and name.isprintable():  # nearly every name: no scan per character
        return ""
    if any("\udc80" <= c <= "\udcff" for c in name):
        return "its name is not UTF-8"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "its name holds a control character (a newline, a tab, ...)"
    return ""


def _walk(root: Path) -> tuple[dict[str, Path], dict[str, str], set[str]]:
    """Every file under root (relative POSIX path -> absolute path), the refused paths (-> why)
    and which of the refused are folders. Never follows a link to a folder, never recurses
    (a tree MAX_DEPTH deep is refused), never raises for what it finds."""
    files: dict[str, Path] = {}
    refused: dict[str, str] = {}
    refused_dirs: set[str] = set()
    real_root = root.resolve()
    pending: list[tuple[Path | str, str, int]] = [(root, "", 0)]
    while pending:
        folder, rel_dir, depth = pending.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            where = f"{shown(rel_dir)}/" if rel_dir else "the repo"
            refused[rel_dir] = (f"{where} cannot be read ({exc.strerror or exc}): fix its owner "
                                "and permissions")
            refused_dirs.add(rel_dir)
            continue
        for entry in entries:
            name = entry.name
            if name in SKIP_DIRS:
                continue
            rel = f"{rel_dir}/{name}" if rel_dir else name
            odd = _odd_name(name)
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                if odd:
                    refused[rel] = f"{shown(rel)}: {odd}; rename it"
                elif entry.is_symlink():
                    _link(Path(entry.path), rel, real_root, files, refused)
                elif is_dir:
                    if depth + 1 >= MAX_DEPTH:
                        refused[rel] = (f"{shown(rel)}/: folders nest more than {MAX_DEPTH} "
                                        "levels deep; flatten the tree")
                    else:
                        pending.append((entry.path, rel, depth + 1))
                        continue
                elif entry.is_file(follow_symlinks=False):
                    files[rel] = Path(entry.path)
                    _over_size(entry.stat(follow_symlinks=False).st_size, rel, files, refused)
                else:
                    refused[rel] = (f"{rel} is not a regular file (a FIFO, socket or device); "
                                    "remove it")
            except OSError as exc:
                refused[rel] = f"{shown(rel)} cannot be read ({exc.strerror or exc})"
                is_dir = False
            if rel in refused and is_dir:
                refused_dirs.add(rel)
    return files, refused, refused_dirs


def _link(path: Path, rel: str, real_root: Path, files: dict[str, Path],
          refused: dict[str, str]) -> None:
    try:
        target = path.resolve(strict=True)
    except FileNotFoundError:
        refused[rel] = f"{rel} is a broken symlink"
        return
    except RuntimeError:  # a loop of links (Python before 3.13)
        refused[rel] = f"{rel} is a symlink loop"
        return
    except OSError as exc:
        refused[rel] = (f"{rel} is a symlink loop" if exc.errno == errno.ELOOP
                        else f"{rel} is a symlink that cannot be followed ({exc.strerror})")
        return
    if not target.is_relative_to(real_root):
        refused[rel] = f"{rel} is a symlink that points outside the repo"
    elif target.is_dir():
        refused[rel] = f"{rel} is a symlink to a folder (not supported: copy the files)"
    elif target.is_file():
        files[rel] = target
        _check_size(target, rel, files, refused)
    else:
        refused[rel] = f"{rel} is a symlink to something that is not a regular file"


def _check_size(path: Path, rel: str, files: dict[str, Path], refused: dict[str, str]) -> None:
    _over_size(path.stat().st_size, rel, files, refused)


def _over_size(size: int, rel: str, files: dict[str, Path], refused: dict[str, str]) -> None:
    if size > MAX_FILE_SIZE:
        del files[rel]
        refused[rel] = (f"{rel} is {size / 2**20:.1f} MiB ({size} bytes), over the "
                        f"{MAX_FILE_SIZE // 2**20} MiB limit of a rendered file")


def digest(path: Path) -> str:
    with open(path, "rb") as f:
        data = f.read(BIG_FILE + 1)
        if len(data) <= BIG_FILE:
            return sha256(data).hexdigest()
        import hashlib  # a large file: OpenSSL's SHA-256, read in chunks

        h = hashlib.sha256(data)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def render(checkout: Path, host: str, revision: str, engine: str = "compose") -> DesiredState:
    """`engine`: the host's default engine (the `engine` setting): a stack on Swarm gets the
    files of its placement folders (other hosts' hosts/<node>/stacks/<name>/) in its digest."""
    all_files, refused, refused_dirs = _walk(checkout)
    files: dict[str, Path] = {}
    overlay: dict[str, Path] = {}
    others: dict[str, dict[str, tuple[str, str, Path]]] = {}  # stack -> rel -> node, inner
    warnings: list[str] = []
    errors: list[str] = []
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
                    warnings.append(f"{shown(rel)}: ignored (a host overlay holds only proxy/, "
                                    "stacks/ and env/)")
            else:
                parts = rel.split("/", 4)
                if len(parts) == 5 and parts[2] == "stacks":  # another host's stack folder
                    others.setdefault(parts[3], {})[rel] = (parts[1], parts[4], src)
            continue
        files[rel] = src
    base = set(files)
    files.update(overlay)
    for rel, why in _clashes(files, overlay, prefix).items():  # refused like a bad symlink
        del files[rel]
        refused[rel] = why
    digests: dict[str, str] = {}
    texts: dict[str, str] = {}  # the compose files' text, read once with their digest
    for rel, src in list(files.items()):
        try:
            if rel.rsplit("/", 1)[-1] in COMPOSE_NAMES:
                data = src.read_bytes()
                digests[rel] = sha256(data).hexdigest()
                texts[rel] = _text(data)
            else:
                digests[rel] = digest(src)
        except OSError as exc:  # unreadable (EACCES, EIO): refused like a bad symlink
            del files[rel]
            refused[(prefix + rel) if rel in overlay else rel] = (
                f"{shown(prefix + rel if rel in overlay else rel)} cannot be read "
                f"({exc.strerror or exc}): fix its owner and permissions")
    problems: dict[str, list[str]] = {}
    blocked: set[str] = set()
    for rel, why in refused.items():
        inner = rel[len(prefix):] if rel.startswith(prefix) else rel
        if rel.startswith("hosts/") and not rel.startswith(prefix) and rel != prefix[:-1]:
            continue
        is_dir = rel in refused_dirs
        name = owner(inner + "/x" if is_dir else inner)
        if name is None and inner.startswith("env/global"):
            name = "*"
        if name is None and is_dir and _holds_stacks(inner, prefix):
            errors.append(why)  # stacks may hide in it: the run changes nothing
        elif name is None:
            if f"{why}: not copied" not in warnings:  # a clash refuses two paths, says it once
                warnings.append(f"{why}: not copied")
        else:
            if why not in problems.setdefault(name, []):
                problems[name].append(why)
            blocked.add(inner)
    env_files = {rel: src for rel, src in files.items() if is_env_file(rel)}
    found = _find_stacks(files, blocked)
    index = _Index(files, blocked, env_files)  # each stack's files without a scan of all
    stacks = [_stack(name, cf, files, env_files, digests, problems, blocked,
                     others.get(name, {}), engine, index, texts)
              for name, cf in found.items()]
    base_folders = {_top_folder(rel) for rel in base}
    overlay_only = frozenset(s.name for s in stacks if s.folder not in base_folders)
    return DesiredState(
        revision=revision,
        host=host,
        files={k: v for k, v in files.items() if k not in blocked and not is_env_file(k)},
        env_files=env_files,
        stacks=tuple(sorted(stacks, key=lambda s: (s.name != PROXY, s.name))),
        blocked=frozenset(blocked),
        warnings=tuple(warnings),
        has_overlay=bool(overlay) or any(r.startswith(prefix) for r in all_files),
        overlay_stacks=overlay_only,
        error="; ".join(errors),
        digests=digests,
    )


def _holds_stacks(inner: str, prefix: str) -> bool:
    """A folder that holds (or is) where stacks and env files live: unreadable, it would hide
    stacks, and a hidden stack must never look removed."""
    return inner in ("", "stacks", "env", "hosts", prefix[:-1], prefix + "stacks",
                     prefix + "env")


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


def _find_stacks(files: Mapping[str, Path], blocked: set[str]) -> dict[str, str]:
    """stack name -> compose file, for proxy/ and every stacks/<name>/ that holds anything
    (a file, or a refused path): a folder without a usable compose file is a failing stack,
    never a removed one. Its compose file is the first of COMPOSE_NAMES present (more than one
    is a problem of the stack), else the name it would have."""
    folders: dict[str, set[str]] = {}
    for rel in [*files, *(b + "/" for b in blocked)]:  # a blocked stacks/<name>: a folder
        parts = rel.split("/")
        if parts[0] == "proxy" and len(parts) >= 2:
            folders.setdefault(PROXY, set()).add("proxy")
        elif parts[0] == "stacks" and len(parts) >= 3:
            folders.setdefault(parts[1], set()).add(f"stacks/{parts[1]}")
    out = {}
    for name, where in folders.items():
        folder = sorted(where)[0]  # proxy/ wins over stacks/proxy/ (a problem of the proxy)
        present = compose_files(folder, lambda rel: rel in files or rel in blocked)
        out[name] = present[0] if present else f"{folder}/{COMPOSE_NAMES[0]}"
    return out


def compose_files(folder: str, exists: Callable[[str], bool]) -> list[str]:
    """The compose files of a stack folder (`exists(repo-relative path)`), in compose's order
    of preference: the first is the one the stack uses, more than one is a problem
    (compose_problems). The one home of which compose file a stack uses: render, lint, check
    and promote call it."""
    return [f"{folder}/{n}" for n in COMPOSE_NAMES if exists(f"{folder}/{n}")]


def engine_named(text: str) -> str:
    """The engine a compose file's top-level `x-vigo` block names ('' when none), read from
    its text: render parses no YAML (an idle run imports no YAML parser)."""
    block = re.search(r"^x-vigo[\"']?\s*:(.*(?:\n(?:[ \t].*|\s*#.*|\s*))*)", text, re.M)
    found = re.findall(r"\bengine[\"']?\s*:\s*[\"']?(swarm|compose)\b", block.group(1)
                       ) if block else []
    return found[-1] if found else ""


def _placement(others: Mapping[str, tuple[str, str, Path]]
               ) -> tuple[tuple[tuple[str, str, str], ...], dict[str, str]]:
    """(node, path in the folder, sha256) of each placement folder file; rel -> sha256."""
    out, sums = [], {}
    for rel, (node, inner, src) in sorted(others.items()):
        try:
            sha = digest(src)
        except OSError:
            sha = "unreadable"
        out.append((node, inner, sha))
        sums[rel] = sha
    return tuple(out), sums


def _top_folder(rel: str) -> str:
    """The stack folder a path is in ('proxy', 'stacks/<name>'), else ''."""
    parts = rel.split("/", 2)
    if parts[0] == "proxy" and len(parts) >= 2:
        return "proxy"
    if parts[0] == "stacks" and len(parts) >= 3:
        return f"stacks/{parts[1]}"
    return ""


# An env file's name as a compose file mentions it: not inside a longer name (`app.env` is not
# mentioned by `my-app.env` or `app.env.bak`).
_NAME_CHARS = re.compile(r"[\w.-]+")


class _Index:
    """The files and blocked paths of each stack folder, and the env files by name, built
    once per render: each stack's share is a lookup, so a render of n stacks stays O(n)."""

    def __init__(self, files: Mapping[str, Path], blocked: set[str],
                 env_files: Mapping[str, Path]) -> None:
        self.files: dict[str, list[str]] = {}
        self.blocked: dict[str, list[str]] = {}
        for rel in files:
            self.files.setdefault(_top_folder(rel), []).append(rel)
        for rel in blocked:
            self.blocked.setdefault(_top_folder(rel + "/"), []).append(rel)
        self.proxy_in_stacks = any(rel.startswith("stacks/proxy/") for rel in [*files, *blocked])
        self.plain: dict[str, str] = {}  # env file name -> rel, names of [\w.-] only
        self.odd: list[tuple[str, str]] = []  # (name, rel) of the others: a search each
        for rel in env_files:
            name = rel.split("/", 1)[1]
            if _NAME_CHARS.fullmatch(name):
                self.plain[name] = rel
            else:
                self.odd.append((name, rel))

    def mentioned(self, text: str) -> set[str]:
        """The env files (rel) whose name the text holds as a whole name."""
        out = {self.plain[w] for w in set(_NAME_CHARS.findall(text)) if w in self.plain}
        out.update(rel for name, rel in self.odd if name in text and re.search(
            r"(?<![\w.-])" + re.escape(name) + r"(?![\w.-])", text))
        return out


def _stack(name: str, compose_file: str, files: Mapping[str, Path],
           env_files: Mapping[str, Path], digests: Mapping[str, str],
           problems: Mapping[str, list[str]], blocked: set[str],
           others: Mapping[str, tuple[str, str, Path]],
           engine: str, index: _Index, texts: Mapping[str, str]) -> Stack:
    folder = compose_file.rsplit("/", 1)[0] + "/"
    own = tuple(sorted(index.files.get(folder[:-1], ())))
    issues = list(problems.get(name, [])) + list(problems.get("*", []))
    if name != PROXY and not is_stack_name(name):
        issues.append(f"stack name {name!r} is not a valid compose project name "
                      "(use lowercase letters, digits, '-' and '_')")
    if name == PROXY and index.proxy_in_stacks:
        issues.append("a stack may not be called 'proxy' (that is the proxy's project name)")
    if folder[:-1] not in blocked:  # an unreadable folder says so, once
        issues += compose_problems(folder[:-1], set(own) | {
            b for b in index.blocked.get(folder[:-1], ()) if b.startswith(folder)})
    interpolation = tuple(p for p in ("env/global.env", f"env/{name}.env") if p in env_files)
    text = texts.get(compose_file, "")  # read with its digest; "" when it could not be
    mentioned = tuple(index.mentioned(text) - set(interpolation)) if text else ()
    env = interpolation + tuple(sorted(mentioned))
    stack_digests = {rel: digests[rel] for rel in (*own, *env)}
    placement: tuple[tuple[str, str, str], ...] = ()
    if others and name != PROXY and (engine_named(text) or engine) == "swarm":
        placement, sums = _placement(others)
        stack_digests.update(sums)  # a placement change is a change of the stack
    h = sha256(f"vigo-render-{RENDER_VERSION}\n{name}\n".encode())
    for rel in sorted(stack_digests):
        h.update(f"{rel}\0{stack_digests[rel]}\n".encode())
    return Stack(name=name, compose_file=compose_file, files=own, env_files=env,
                 interpolation_env=interpolation, digests=stack_digests, hash=h.hexdigest(),
                 problems=tuple(issues), placement=placement)


def compose_problems(folder: str, paths: set[str]) -> list[str]:
    """What is wrong with the compose files of a stack folder (repo-relative paths of everything
    in it): none usable, a folder named like one, more than one, an override compose would merge.
    The one home of compose file discovery (lint and check call it too)."""
    top = {rel[len(folder) + 1:].split("/", 1)[0]: "/" in rel[len(folder) + 1:] for rel in paths}
    main = compose_files(folder, lambda rel: top.get(rel[len(folder) + 1:]) is False)
    out = [f"{folder}/{n} is a folder, not a compose file: make it a file"
           for n in (*COMPOSE_NAMES, *OVERRIDE_NAMES) if top.get(n)]
    if len(main) > 1:
        out.append(f"{' and '.join(sorted(main))} {'both' if len(main) == 2 else 'all'} exist: "
                   "keep one compose file")
    elif not main and not out:
        out.append(f"{folder}/ has no compose file ({', '.join(COMPOSE_NAMES)}): add one, or "
                   "remove the folder to remove the stack (its containers keep running until "
                   "then)")
    for n in OVERRIDE_NAMES:
        if n in top and not top[n]:
            out.append(f"{folder}/{n}: compose would merge this override file and vigo does "
                       f"not: fold it into {main[0] if main else 'the compose file'}, or use a "
                       "hosts/<host>/ overlay")
    return out


def _text(data: bytes) -> str:
    """A file's bytes as `Path.read_text(errors="replace")` reads them (UTF-8, universal
    newlines)."""
    return data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")


def yaml_problems(desired: DesiredState, names: list[str]) -> dict[str, str]:
    """Stacks (of `names`) with a YAML file over the caps of yamlsafe (an alias bomb, 64 levels
    of nesting, a compose file over its size limit): they fail before `docker compose` reads
    them (compose expands every alias; seen at 19 GB). Only for stacks that may change, so an
    idle run parses nothing."""
    if not names:
        return {}
    from vigo.core import yamlsafe  # ruamel.yaml: never imported by an idle run

    out: dict[str, str] = {}
    for name in names:
        stack = desired.stack(name)
        if stack is None:
            continue
        for rel in stack.files:
            if not rel.endswith((".yml", ".yaml")) or rel not in desired.files:
                continue
            compose = rel.rsplit("/", 1)[1] in (*COMPOSE_NAMES, *OVERRIDE_NAMES)
            try:
                data = desired.files[rel].read_bytes()
                if len(data) > yamlsafe.MAX_BYTES and not compose:
                    continue  # a data file, not compose's business (lint reads what includes)
                yamlsafe.scan(data.decode("utf-8", "replace"))
            except OSError as exc:
                out[name] = f"{rel} cannot be read ({exc.strerror or exc})"
                break
            except yamlsafe.YamlRefused as exc:
                out[name] = f"{rel}" + (f":{exc.line}" if exc.line else "") + f": {exc.what}"
                break
    return out


# -- the render of an intact checkout, kept (host/source.py) ---------------------------------

CACHE_VERSION = 1


def cache_key(commit: str, tree_stamp: str, host: str, engine: str) -> str:
    """What a kept render is a render of: the commit and the checkout's recording (an intact
    tree: adapters/git.tree_stamp), the host and its engine, RENDER_VERSION and this code
    (`_code`)."""
    return "\0".join((str(CACHE_VERSION), RENDER_VERSION, commit, tree_stamp, host, engine,
                      _code()))


def _code() -> str:
    """What names the render code that made a kept render: vigo's version and the files of
    this module and core/model.py (an upgrade rewrites them)."""
    from vigo import __version__
    from vigo.core import model

    parts = [__version__]
    for name in (__file__, model.__file__ or ""):
        try:
            st = os.stat(name)
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append("?")
    return "/".join(parts)


def to_cache(desired: DesiredState, key: str) -> dict:
    """A render as JSON (`from_cache` gives back an equal DesiredState)."""
    return {"key": key, "revision": desired.revision, "host": desired.host,
            "files": {rel: str(p) for rel, p in desired.files.items()},
            "env_files": {rel: str(p) for rel, p in desired.env_files.items()},
            "stacks": [[s.name, s.compose_file, list(s.files), list(s.env_files),
                        list(s.interpolation_env), dict(s.digests), s.hash, list(s.problems),
                        [list(p) for p in s.placement]] for s in desired.stacks],
            "blocked": sorted(desired.blocked), "warnings": list(desired.warnings),
            "has_overlay": desired.has_overlay, "overlay_stacks": sorted(desired.overlay_stacks),
            "error": desired.error, "digests": dict(desired.digests)}


def from_cache(data: object, key: str) -> DesiredState | None:
    """The kept render when it is one of `key` and whole; None otherwise (render again)."""
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    try:
        stacks = tuple(Stack(
            name=str(name), compose_file=str(cf), files=tuple(map(str, files)),
            env_files=tuple(map(str, env)), interpolation_env=tuple(map(str, interp)),
            digests={str(k): str(v) for k, v in digests.items()}, hash=str(h),
            problems=tuple(map(str, problems)),
            placement=tuple((str(a), str(b), str(c)) for a, b, c in placement))
            for name, cf, files, env, interp, digests, h, problems, placement
            in data["stacks"])
        return DesiredState(
            revision=str(data["revision"]), host=str(data["host"]),
            files={str(k): Path(v) for k, v in data["files"].items()},
            env_files={str(k): Path(v) for k, v in data["env_files"].items()},
            stacks=stacks, blocked=frozenset(map(str, data["blocked"])),
            warnings=tuple(map(str, data["warnings"])), has_overlay=bool(data["has_overlay"]),
            overlay_stacks=frozenset(map(str, data["overlay_stacks"])), error=str(data["error"]),
            digests={str(k): str(v) for k, v in data["digests"].items()})
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
