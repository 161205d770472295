"""The cache of `vigo check`: results of work already done, keyed by the content they came from.

An entry maps a key (a sha256 over every input of one piece of work: the bytes of the files
it read, the policy, vigo's and compose's versions; workstation/check.py builds it) to the
result of that work. A key names content, never a place, so an entry can only stand in for
the very same work: a changed byte anywhere in the inputs is another key, a miss, and the work
is done again. What the cache cannot do is turn a verdict into "ok" for content it did not see.

The file is JSON, written atomically (a temp file and a rename, mode 0600); an entry carries a
checksum over its key and value, so a corrupt or hand-edited entry is dropped, not believed. A
file that is unreadable, too large, not JSON, of another format or another vigo version is
ignored as a whole (and replaced at the end of the run). The size is bounded: the entries of
the last run are kept, then older ones used in the last MAX_RUNS runs, newest first, up to
MAX_ENTRIES, and the file to MAX_BYTES.

Where: `<repo>/.git/vigo-check-cache` when the repo has a `.git` folder (it goes with the
clone), else `$XDG_CACHE_HOME/vigo/check-<hash of the repo's path>.json` (~/.cache by default).
Anyone who can write either place can also write the repo's git hooks or the user's files: the
cache trusts its writer as much as git trusts `.git/`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from vigo import __version__
from vigo.adapters import fs

FORMAT = 1
MAX_ENTRIES = 20_000
MAX_RUNS = 20  # an entry no run used in this many runs is dropped
MAX_BYTES = 32 << 20  # a larger file is not read (and is replaced)


def default_path(repo: Path) -> Path:
    """Where the cache of `repo` lives (see the module's docstring)."""
    git = repo / ".git"
    if git.is_dir() and not git.is_symlink():
        return git / "vigo-check-cache"
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if base.startswith("/") else Path.home() / ".cache"
    tag = hashlib.sha256(str(repo.resolve()).encode()).hexdigest()[:16]
    return root / "vigo" / f"check-{tag}.json"


def digest(*parts: object) -> str:
    """One sha256 over parts (each given as canonical JSON, so no two inputs collide)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":"),
                                     default=sorted).encode()).hexdigest()


def _sum(key: str, value: object) -> str:
    return digest("entry", key, value)


class Cache:
    """Entries loaded from `path`; `get` and `put` during a run, `save` at its end. Thread-safe
    enough for check's worker threads: each put writes one dict item (atomic in CPython)."""

    def __init__(self, path: Path | None, salt: str = "") -> None:
        self.path = path  # None: in memory only (one run's work shared between its trees)
        self.salt = salt  # in every key: the tools' versions (compose's)
        self.note = ""  # why the file was not used, if it was not (shown with -v)
        self.hits = 0
        self.misses = 0
        self._old: dict[str, dict[str, Any]] = {}
        self._used: dict[str, dict[str, Any]] = {}
        self._run = 0
        self._load()

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return
        except OSError as exc:
            self.note = f"cannot read {self.path}: {exc.strerror or exc}"
            return
        if not self.path.is_file() or self.path.is_symlink():
            self.note = f"{self.path} is not a regular file: not used"
            return
        if st.st_size > MAX_BYTES:
            self.note = f"{self.path} is larger than {MAX_BYTES >> 20} MiB: not used"
            return
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError, RecursionError) as exc:
            self.note = f"{self.path} is not a readable cache ({type(exc).__name__}): not used"
            return
        if not (isinstance(doc, dict) and doc.get("format") == FORMAT
                and doc.get("vigo") == __version__ and isinstance(doc.get("entries"), dict)
                and isinstance(doc.get("run"), int)):
            self.note = f"{self.path} was written by another vigo version or format: not used"
            return
        self._run = doc["run"]
        self._old = {k: e for k, e in doc["entries"].items()
                     if isinstance(k, str) and isinstance(e, dict) and isinstance(e.get("t"), int)}

    def get(self, key: str) -> Any | None:
        """The value stored under key, None when there is none or its checksum is wrong."""
        entry = self._used.get(key) or self._old.get(key)
        if entry is None or "v" not in entry or entry.get("s") != _sum(key, entry["v"]):
            self.misses += 1
            return None
        self._used[key] = {"v": entry["v"], "s": entry["s"], "t": self._run + 1}
        self.hits += 1
        return entry["v"]

    def put(self, key: str, value: Any) -> None:
        self._used[key] = {"v": value, "s": _sum(key, value), "t": self._run + 1}

    def save(self) -> str:
        """Write the file (atomically, 0600): this run's entries, then the newest older ones up
        to MAX_ENTRIES. '' when written, the reason otherwise (a cache is never worth a
        failure: the next run just does the work again)."""
        if self.path is None:
            return ""
        keep = dict(self._used)
        rest = sorted(((k, e) for k, e in self._old.items()
                       if k not in keep and e["t"] > self._run + 1 - MAX_RUNS),
                      key=lambda item: -item[1]["t"])
        for k, e in rest[:max(0, MAX_ENTRIES - len(keep))]:
            keep[k] = e
        doc = {"format": FORMAT, "vigo": __version__, "run": self._run + 1, "entries": keep}
        data = json.dumps(doc, separators=(",", ":")).encode()
        if len(data) > MAX_BYTES:  # only this run's entries, and if still too large, none
            doc["entries"] = dict(self._used)
            data = json.dumps(doc, separators=(",", ":")).encode()
            if len(data) > MAX_BYTES:
                doc["entries"] = {}
                data = json.dumps(doc).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fs.atomic_write(self.path, data, 0o600, sync=False)
        except OSError as exc:
            return f"cannot write {self.path}: {exc.strerror or exc}"
        return ""
