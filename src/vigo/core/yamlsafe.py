"""The one YAML loader for files from the repo (compose files, .sops.yaml): ruamel, with caps.

A repo is untrusted input read by root with the run lock held. Before ruamel builds anything, the
event stream (parsed without recursion) is checked against three caps, so a hostile file is
refused in time linear in its size:

- size: MAX_BYTES per document (compose files are kilobytes);
- nesting: MAX_DEPTH levels of mappings and sequences (ruamel's composer and vigo's walkers
  recurse; 20,000 levels would end in RecursionError);
- aliases: the nodes every alias stands for, counted as if expanded, at most MAX_ALIAS_NODES in
  all (a 400-byte "billion laughs" expands to billions; `docker compose config` expands them all),
  and no alias inside the node it names (a cycle).

Only `YamlRefused` ever leaves this module. Pure: no process, no file is opened here.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    NodeEvent,
)

MAX_BYTES = 256 * 1024  # ~4 s to parse on a slow host; big public compose files: ~100 KiB
MAX_DEPTH = 64
MAX_ALIAS_NODES = 100_000  # a common block of 100 nodes in 1,000 services; a bomb: billions


class YamlRefused(Exception):
    """A document vigo does not load; `what` is one line (without the file name), `line` is
    1-based where known."""

    def __init__(self, what: str, line: int | None = None, cap: bool = False) -> None:
        super().__init__(what)
        self.what = what
        self.line = line
        self.cap = cap  # over a cap (size, depth, aliases), not merely invalid YAML


def _line(event_or_exc: Any) -> int | None:
    mark = getattr(event_or_exc, "start_mark", None) or getattr(event_or_exc, "problem_mark", None)
    line = getattr(mark, "line", None)
    return line + 1 if isinstance(line, int) else None


def scan(text: str) -> None:
    """Raise YamlRefused when `text` is over a cap; invalid YAML stops the scan quietly (the
    loader reports it). Linear in the size of the text."""
    size = len(text.encode("utf-8", "surrogateescape"))
    if size > MAX_BYTES:
        raise YamlRefused(f"is {size} bytes, over the {MAX_BYTES // 1024} KiB limit of a YAML "
                          "file vigo reads", 1, cap=True)
    sizes: dict[str, int] = {}  # anchor -> nodes it stands for
    open_: list[list[Any]] = []  # [anchor, nodes so far] of each open collection
    expanded = 0
    try:
        for event in YAML(typ="rt").parse(text):
            if isinstance(event, CollectionStartEvent):
                open_.append([event.anchor, 1])
                if len(open_) > MAX_DEPTH:
                    raise YamlRefused(f"nests mappings and sequences more than {MAX_DEPTH} "
                                      "levels deep", _line(event), cap=True)
                continue
            if isinstance(event, CollectionEndEvent):
                anchor, count = open_.pop()
            elif isinstance(event, AliasEvent):
                anchor, count = None, sizes.get(event.anchor, 1)
                if any(a == event.anchor for a, _ in open_):
                    raise YamlRefused(f"the alias *{event.anchor} is inside the node it names "
                                      "(a recursive structure)", _line(event), cap=True)
                expanded += count
                if expanded > MAX_ALIAS_NODES:
                    raise YamlRefused(f"YAML aliases expand to more than {MAX_ALIAS_NODES} "
                                      "nodes (an alias bomb?)", _line(event), cap=True)
            elif isinstance(event, NodeEvent):  # a scalar
                anchor, count = event.anchor, 1
            else:
                continue
            if anchor is not None:
                sizes[anchor] = count
            if open_:
                open_[-1][1] += count
    except YAMLError:
        return


def load(text: str) -> Any:
    """The document of `text` (ruamel round-trip types: `.lc` has line numbers), or
    YamlRefused: over a cap, or not YAML ruamel can load (the reason and its line)."""
    scan(text)
    try:
        return YAML(typ="rt").load(text)
    except YAMLError as exc:
        what = getattr(exc, "problem", None) or (str(exc).splitlines() or [""])[0]
        raise YamlRefused(f"is not valid YAML: {what}", _line(exc)) from None
    except RecursionError:  # the caps make this unreachable; never a traceback anyway
        raise YamlRefused(f"nests more than {MAX_DEPTH} levels deep", None, cap=True) from None
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise YamlRefused(f"is not valid YAML: {type(exc).__name__}: {exc}"[:200]) from None


# `remembered()`: documents (or refusals) by the sha256 of their bytes, in this thread only.
_REMEMBERED: ContextVar[dict[bytes, Any] | None] = ContextVar("yamlsafe_remembered",
                                                              default=None)


@contextlib.contextmanager
def remembered() -> Iterator[None]:
    """Within it (in the calling thread), `load_bytes` parses the same bytes once and hands out
    a deep copy of the document each time (13x cheaper than parsing again); a refusal is
    raised again as it was. `vigo check` lints the base tree and every host's, which share
    most of their files."""
    token = _REMEMBERED.set({})
    try:
        yield
    finally:
        _REMEMBERED.reset(token)


def load_bytes(data: bytes) -> Any:
    """`load` of file content: UTF-8 only (what compose reads)."""
    memo = _REMEMBERED.get()
    if memo is None:
        return _load_bytes(data)
    key = hashlib.sha256(data).digest()
    if key not in memo:
        try:
            memo[key] = (True, _load_bytes(data))
        except YamlRefused as exc:
            memo[key] = (False, exc)
    ok, value = memo[key]
    if not ok:
        raise YamlRefused(value.what, value.line, value.cap)
    return copy.deepcopy(value)


def _load_bytes(data: bytes) -> Any:
    if len(data) > MAX_BYTES:
        raise YamlRefused(f"is {len(data)} bytes, over the {MAX_BYTES // 1024} KiB limit of a "
                          "YAML file vigo reads", 1, cap=True)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlRefused(f"is not UTF-8 text (byte {exc.start})") from None
    return load(text)
