"""Reading a compose document and the text around it: lines of keys, services, labels, paths,
bind mounts, `${VAR}` interpolation as far as it is certain offline, dotenv key names."""

import posixpath
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vigo.core.lint.base import ComposeFile

REMOTE = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*://|git@|github\.com/)")


DOCKER_SOCKS = frozenset({"/var/run/docker.sock", "/run/docker.sock"})


INTERP = re.compile(
    r"\$(?:(?P<esc>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<bad>\{))"
)


def resolve(text: str, env_keys: frozenset[str]) -> str | None:
    """Interpolate `text` where the result is certain without knowing any value: a variable
    that no env file defines takes its default. None when a value would be needed."""
    out, pos = [], 0
    for m in INTERP.finditer(text):
        out.append(text[pos : m.start()])
        pos = m.end()
        if m["esc"]:
            out.append("$")
            continue
        name, op, arg = m["name"] or m["bare"], m["op"] or "", m["arg"] or ""
        if name is None or name in env_keys or "$" in arg:
            return None
        if op in (":-", "-"):
            out.append(arg)
        elif op not in (":+", "+"):
            return None  # unset and no default: empty string or an error at deploy time
    out.append(text[pos:])
    return "".join(out)


def undefined(text: str, env_keys: frozenset[str]) -> Iterator[str | None]:
    """Variables of `text` that are neither defined nor defaulted; None for bad syntax."""
    for m in INTERP.finditer(text):
        if m["bad"]:
            yield None
        elif not m["esc"] and not m["op"] and (m["name"] or m["bare"]) not in env_keys:
            yield m["name"] or m["bare"]
        elif m["op"] in (":?", "?") and m["name"] not in env_keys:
            yield m["name"]


def var_names(text: str) -> list[str]:
    return [m["name"] or m["bare"] for m in INTERP.finditer(text) if m["name"] or m["bare"]]


def each_service(doc: Any) -> Iterator[tuple[str, dict, int | None]]:
    services = doc.get("services")
    if isinstance(services, dict):
        for name, svc in services.items():
            if isinstance(svc, dict):
                yield str(name), svc, key_line(services, name)


def path_entries(parent: dict, key: str) -> Iterator[tuple[str, int | None]]:
    """(path, line) of a string, list of strings or list of {path: ...} field."""
    value = parent.get(key)
    if isinstance(value, str):
        yield value, key_line(parent, key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            path = item.get("path") if isinstance(item, dict) else item
            if isinstance(path, str):
                yield path, item_line(value, i)


def labels_of(svc: dict) -> list[tuple[str, str, int | None]]:
    """(key, value, line) of a service's labels, list form `a=b` or mapping form."""
    labels = svc.get("labels")
    if isinstance(labels, dict):
        return [(str(k), as_text(v), key_line(labels, k)) for k, v in labels.items()]
    if isinstance(labels, list):
        pairs = [str(item).partition("=") for item in labels]
        return [(k.strip(), v, item_line(labels, i)) for i, (k, _, v) in enumerate(pairs)]
    return []


def routed(svc: dict) -> bool:
    return any(k == "traefik.enable" and truthy(v) for k, v, _ in labels_of(svc))


def as_mapping(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return isinstance(value, int) and bool(value)


def key_line(node: Any, key: object) -> int | None:
    """1-based line of `key` in a mapping; the mapping's own line for a merged (<<) key."""
    if not isinstance(node, dict) or key not in node:
        return None
    try:
        return node.lc.key(key)[0] + 1
    except (AttributeError, KeyError, TypeError):
        return node_line(node)


def item_line(node: Any, index: int) -> int | None:
    try:
        return node.lc.item(index)[0] + 1
    except (AttributeError, KeyError, IndexError, TypeError):
        return node_line(node)


def node_line(node: Any) -> int | None:
    line = getattr(getattr(node, "lc", None), "line", None)
    return line + 1 if isinstance(line, int) else None


def path_line(doc: Any, dotted: str) -> int | None:
    """The line of the deepest key of `a.b.c` that the document has."""
    node, line = doc, None
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            break
        line = key_line(node, part) or line
        node = node[part]
    return line


def under(path: str, prefix: str) -> bool:
    path, prefix = posixpath.normpath(path), posixpath.normpath(prefix)
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def escapes(path: str) -> bool:
    path = posixpath.normpath(path)
    return path == ".." or path.startswith("../")


def local_target(cf: ComposeFile, raw: object) -> str | None:
    """The repo-relative path a local include/extends file resolves to, if inside the tree."""
    if not isinstance(raw, str):
        return None
    value = resolve(raw, cf.env_keys)
    if value is None or REMOTE.match(value) or value.startswith(("/", "~")):
        return None
    target = posixpath.normpath(posixpath.join(cf.folder, value))
    return None if escapes(target) else target


def path_fields(doc: Any) -> Iterator[tuple[str | None, str, Any, int | None, str | None]]:
    """(service, what, raw path, line, follow) of every path in a compose file except bind mount
    sources; follow is "include" or "extends" for files that become part of the project."""
    include = doc.get("include")
    items = [include] if isinstance(include, str) else include if isinstance(include, list) else []
    for i, item in enumerate(items):
        line = item_line(include, i) if isinstance(include, list) else key_line(doc, "include")
        if isinstance(item, str):
            yield None, "include", item, line, "include"
        elif isinstance(item, dict):
            for value, vline in path_entries(item, "path"):
                yield None, "include path", value, vline or line, "include"
            for value, vline in path_entries(item, "env_file"):
                yield None, "include env_file", value, vline or line, None
            if "project_directory" in item:
                yield None, "include project_directory", item["project_directory"], line, None
    for kind in ("secrets", "configs"):
        for name, spec in as_mapping(doc.get(kind)).items():
            if isinstance(spec, dict) and "file" in spec:
                what, line = f"{kind[:-1]} '{name}' file", key_line(spec, "file")
                yield None, what, spec["file"], line, None
    for name, spec in as_mapping(doc.get("volumes")).items():
        opts = as_mapping(as_mapping(spec).get("driver_opts"))
        if "bind" in str(opts.get("o", "")).split(",") and "device" in opts:
            what = f"volume '{name}' bind device"
            yield None, what, opts["device"], key_line(opts, "device"), None
    for name, svc, _ in each_service(doc):
        for key in ("env_file", "label_file"):
            for value, line in path_entries(svc, key):
                yield name, key, value, line, None
        extends = svc.get("extends")
        if isinstance(extends, dict) and "file" in extends:
            yield name, "extends file", extends["file"], key_line(extends, "file"), "extends"


def bind_mounts(cf: ComposeFile, svc: dict) -> Iterator[tuple[str, str | None, bool, int | None]]:
    """(raw source, resolved source or None, read-only, line) of each bind mount of a service,
    and of each mount whose source is a variable that may turn out to be a path."""
    volumes = svc.get("volumes")
    for i, item in enumerate(volumes if isinstance(volumes, list) else []):
        if isinstance(item, dict):
            kind, source, read_only = item.get("type"), item.get("source"), item.get("read_only")
            if kind not in ("bind", None) or not isinstance(source, str):
                continue
            read_only = truthy(read_only)
        elif isinstance(item, str):
            parts = _split_colons(item)
            if len(parts) < 2:
                continue  # anonymous volume
            kind, source = None, parts[0]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            continue
        resolved = resolve(source, cf.env_keys)
        if kind is None and resolved is not None and not resolved.startswith(("/", ".", "~")):
            continue  # a named volume
        yield source, resolved, read_only, item_line(volumes, i)


def _split_colons(text: str) -> list[str]:
    """Split a short volume spec on ':' outside ${...}."""
    parts, depth, current = [], 0, []
    for ch in text:
        depth += (ch == "{") - (ch == "}")
        if ch == ":" and depth <= 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    return [*parts, "".join(current)]


def dotenv_lines(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, key, raw value) of each assignment of a dotenv file; internal only."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for n, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, _, value = stripped.removeprefix("export ").partition("=")
        if key.strip():
            yield n, key.strip(), value


def env_key_names(path: Path) -> set[str]:
    """Variable NAMES defined in a dotenv file, plain or sops-encrypted (sops keeps the names in
    clear: `KEY=ENC[...]`), without the `sops_*` metadata keys. A missing file has none."""
    return {key for _, key, _ in dotenv_lines(Path(path)) if not key.startswith("sops_")}
