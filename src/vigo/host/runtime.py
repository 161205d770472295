"""The runtime tree: the rendered files compose reads, synced in place (only what changed is
written; a stack that cannot be applied keeps the files it last ran with)."""

from __future__ import annotations

from collections.abc import Callable

from vigo.adapters import fs
from vigo.core import render
from vigo.core.model import DesiredState, Paths


def write(desired: DesiredState, paths: Paths, failures: dict[str, str],
      warn: Callable[[str], None]) -> None:
    """Sync the runtime tree to the rendered files; a file that cannot be written fails the
    stacks that use it (into `failures`)."""
    # A stack that cannot be applied keeps the files it last ran with.
    broken = {s.name for s in desired.stacks if s.problems} | set(failures)
    keep = {rel for s in desired.stacks if s.name in broken for rel in s.files}
    keep |= set(desired.blocked)
    # ... all of them, also those render cannot see now (an unreadable or odd-named folder,
    # a compose file turned into a folder): every path vigo wrote under a broken folder.
    folders = tuple(s.folder + "/" for s in desired.stacks if s.name in broken)
    try:
        written = fs.read_json(paths.manifest) if folders else None
    except (OSError, ValueError):  # sync_tree says so
        written = None
    keep |= {rel for rel in (written if isinstance(written, dict) else {})
             if rel.startswith(folders)}
    links = {rel: paths.secrets / rel for rel in desired.env_files}
    synced = fs.sync_tree(paths.runtime, desired.files, links, keep, paths.manifest,
                          keys=desired.digests)  # an unchanged tree is not read (its stamp)
    if synced.warning:
        warn(synced.warning)
    for rel, why in synced.errors.items():
        name = render.owner(rel)
        if name is not None:
            failures.setdefault(name, why)
        for stack in desired.stacks:  # an env file link: every stack that reads it
            if rel in stack.env_files:
                failures.setdefault(stack.name, why)
