"""`vigo promote`, `vigo history`, `vigo rollback`: an image tag changed by a commit.

Run on a workstation, in a clone of the infra repo. A promotion is an edit of one scalar: the
service's `image:` is found with ruamel.yaml's round-trip parser (its line and column) and only
that text, on that line, is replaced, so comments, quoting, key order and layout stay byte for
byte. The edited repo then goes through the rules of `vigo check`; an error in the file undoes
the edit byte for byte. History reads every version of the compose file with one `git log` and
one `git cat-file --batch`, whatever the number of commits.

The first half is pure (images, tags, the edit, history rows): it never starts a process.
`Promoter` drives git through the `Clone` adapter it is given, and the checks.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigo.core import render
from vigo.core.lint import ERROR, Finding
from vigo.core.model import (
    COMPOSE_NAMES,
    DIGEST,
    PROXY,
    SHA_TAG,
    is_host_name,
    is_pinned_tag,
    is_stack_name,
)
from vigo.core.policy import Policy
from vigo.core.records import asdict, record, replace

if TYPE_CHECKING:
    from vigo.adapters.git import Clone

ANY_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # Docker's tag grammar
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
_PROPERTIES = re.compile(r"(?:&\S+[ \t]+)*")
NO_IMAGE = "it has no image"
PINNED_HINT = "use sha-<7 to 40 hex> or sha256:<64 hex>"


class PromoteError(Exception):
    """Refused; `code` is the exit code (2: bad arguments, unknown stack or service, not a git
    repo; 1: checks failed, nothing to roll back to, git refused the commit or push)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class VariableImage(PromoteError):
    """The image is written as ${VAR}: its value lives in an encrypted env file."""

    def __init__(self, service: str, image: str) -> None:
        self.service = service
        self.image = image
        self.variables = _VARIABLE.findall(image)
        super().__init__(f"the image of {service} is '{image}'")


class ChecksFailed(PromoteError):
    def __init__(self, message: str, findings: list[Finding]) -> None:
        super().__init__(message, code=1)
        self.findings = findings


# --- images and tags (pure) -------------------------------------------------------------------

def split_image(ref: str) -> tuple[str, str, str]:
    """(name, tag, digest) of an image reference; tag and digest may be ''."""
    name, _, digest = ref.partition("@")
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        return name[:colon], name[colon + 1:], digest
    return name, "", digest


def tag_of(ref: str) -> str:
    """What a person calls the image's version: its tag, digest, or both; '(no tag)'."""
    _, tag, digest = split_image(ref)
    return "@".join(p for p in (tag, digest) if p) or "(no tag)"


def with_tag(ref: str, tag: str) -> str:
    """The reference with its tag (or digest) set: `name:sha-…` or `name@sha256:…`."""
    name = split_image(ref)[0]
    return f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag}"


def check_tag(tag: str, allow_unpinned: bool = False) -> None:
    """Raise PromoteError unless `tag` is pinned (or, allowed, any valid Docker tag)."""
    if is_pinned_tag(tag):
        return
    if tag.startswith("sha256:"):
        raise PromoteError(f"'{tag}' is not a valid digest: expected sha256:<64 lowercase hex>")
    if not ANY_TAG.fullmatch(tag):
        raise PromoteError(f"'{tag}' is not a valid image tag: {PINNED_HINT}")
    if not allow_unpinned:
        raise PromoteError(f"tag '{tag}' is not pinned: {PINNED_HINT} (or pass "
                           "--allow-unpinned, for a stack the hosts' allow_unpinned names)")


def is_pinned(ref: str) -> bool:
    _, tag, digest = split_image(ref)
    return bool(DIGEST.match(digest) if digest else SHA_TAG.match(tag))


# --- where an image is written, and the edit (pure) -------------------------------------------

@record(frozen=True)
class ImageSpot:
    """A service's image scalar: 0-based line and column (of the quote, when quoted)."""

    service: str
    image: str  # as YAML reads it; '' when the service has none
    line: int = -1  # -1: cannot be edited in place (see why)
    col: int = -1
    why: str = ""


def _round_trip(text: str, where: str) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    from vigo.core import yamlsafe

    try:
        yamlsafe.scan(text)  # an alias bomb, 64 levels: refused before ruamel builds it
    except yamlsafe.YamlRefused as exc:
        raise PromoteError(f"{where} {exc.what}") from None
    try:
        doc = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f" (line {mark.line + 1})" if mark else ""
        raise PromoteError(f"{where} is not valid YAML{at}: {what}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        raise PromoteError(f"{where} has no top-level `services` mapping")
    return doc


def _safe(text: str) -> Any:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(text)


def image_spots(text: str, where: str = "the compose file") -> dict[str, ImageSpot]:
    """Every service of a compose file and where its image scalar is written."""
    spots = {}
    for name, svc in _round_trip(text, where)["services"].items():
        name = str(name)
        if not isinstance(svc, dict) or "image" not in svc:
            spots[name] = ImageSpot(name, "", why=NO_IMAGE)
            continue
        image = svc["image"]
        pos = (svc.lc.data or {}).get("image") if hasattr(svc, "lc") else None
        if not isinstance(image, str) or not image:
            spots[name] = ImageSpot(name, "", why="its image is not a string")
        elif pos is None:
            spots[name] = ImageSpot(name, image, why="its image comes from a YAML merge key "
                                                     "(<<:); edit the anchor by hand")
        else:
            spots[name] = ImageSpot(name, image, pos[2], pos[3])
    return spots


def select(spots: dict[str, ImageSpot], service: str | None, stack: str,
           where: str) -> ImageSpot:
    """The spot of `service`, or of the only service with an image when it is None."""
    with_image = [s for s in spots.values() if s.why != NO_IMAGE]
    if service is None:
        if len(with_image) != 1:
            names = ", ".join(s.service for s in with_image) or "none"
            raise PromoteError(f"{where} has {len(with_image)} services with an image "
                               f"({names}): name one, e.g. {stack}/"
                               f"{with_image[0].service if with_image else 'SERVICE'}")
        spot = with_image[0]
    elif service not in spots:
        raise PromoteError(f"{where} has no service '{service}' "
                           f"(services: {', '.join(spots) or 'none'})")
    else:
        spot = spots[service]
    if "$" in spot.image:
        raise VariableImage(spot.service, spot.image)
    if spot.line < 0:
        raise PromoteError(f"cannot promote {stack}/{spot.service} in {where}: {spot.why}")
    return spot


def replace_image(text: str, spot: ImageSpot, new_image: str) -> str:
    """`text` with the image scalar at `spot` replaced by `new_image`, nothing else changed.
    Refuses when the scalar's text is not the image as written (escapes, a multi-line scalar, an
    alias) or when the edit would change anything but this service's image (a shared anchor)."""
    from ruamel.yaml.error import YAMLError

    if spot.line < 0:
        raise PromoteError(f"cannot promote {spot.service}: {spot.why}")
    lines = text.split("\n")  # a CRLF line keeps its \r
    line = lines[spot.line] if spot.line < len(lines) else ""
    props = _PROPERTIES.match(line, spot.col)  # `&anchor` before the scalar
    start = props.end() + (line[props.end():props.end() + 1] in ("'", '"'))
    if not line.startswith(spot.image, start):
        raise PromoteError(f"line {spot.line + 1} does not hold the image '{spot.image}' of "
                           f"{spot.service} as plain text (an escape, alias or multi-line "
                           "scalar?): edit it by hand")
    lines[spot.line] = line[:start] + new_image + line[start + len(spot.image):]
    new = "\n".join(lines)
    try:
        expected = copy.deepcopy(_safe(text))
        expected["services"][spot.service]["image"] = new_image
        same = _safe(new) == expected
    except (YAMLError, KeyError, TypeError):
        same = False
    if not same:
        raise PromoteError(f"changing the image of {spot.service} on line {spot.line + 1} would "
                           "change more than that (a YAML anchor shared with other services?): "
                           "edit it by hand")
    return new


def images_of(text: str | None) -> dict[str, str]:
    """service -> image of one version of a compose file; {} when it does not parse."""
    from ruamel.yaml.error import YAMLError

    if text is None:
        return {}
    try:
        doc = _safe(text)
    except YAMLError:
        return {}
    services = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(services, dict):
        return {}
    return {str(name): svc["image"] for name, svc in services.items()
            if isinstance(svc, dict) and isinstance(svc.get("image"), str)}


@record(frozen=True)
class Edit:
    """One promotion: the image of stack/service in `path` from `old_image` to `new_image`."""

    stack: str
    service: str
    path: str  # relative to the repo folder
    old_image: str
    new_image: str
    host: str = ""

    @property
    def name(self) -> str:
        return f"{self.stack}/{self.service}"

    @property
    def changed(self) -> bool:
        return self.old_image != self.new_image

    def line(self) -> str:
        if not self.changed:
            return f"{self.name}: already at {tag_of(self.new_image)} ({self.path})"
        return f"{self.name}: {tag_of(self.old_image)} -> {tag_of(self.new_image)} ({self.path})"

    def message(self, verb: str = "promote") -> str:
        where = f" on {self.host}" if self.host else ""
        return (f"{verb} {self.name}{where}: {tag_of(self.old_image)} -> "
                f"{tag_of(self.new_image)}\n\n"
                f"{self.path}, service {self.service}:\n"
                f"  from {self.old_image}\n  to   {self.new_image}\n")


# --- history (pure) ---------------------------------------------------------------------------

@record(frozen=True)
class Version:
    """One commit that touched the compose file, and the images of that version."""

    commit: str
    short: str
    author: str
    date: str
    subject: str
    images: dict[str, str]


@record(frozen=True)
class Row:
    """A change of a service's image, and the commit that made it."""

    service: str
    tag: str
    image: str
    commit: str
    short: str
    author: str
    date: str
    subject: str


def tag_changes(versions: list[Version], service: str | None = None) -> list[Row]:
    """One row per change of a service's image, newest first (`versions` newest first)."""
    rows: list[Row] = []
    last: dict[str, str] = {}
    for v in reversed(versions):
        for name, image in sorted(v.images.items()):
            if (service is None or name == service) and last.get(name) != image:
                rows.append(Row(name, tag_of(image), image, v.commit, v.short, v.author, v.date,
                                v.subject))
                last[name] = image
    rows.reverse()
    return rows


def previous(rows: list[Row], current_image: str) -> Row | None:
    """The row to roll back to: the one before the newest row that put `current_image` in
    place (any older image, when the current one was never committed)."""
    rest = rows
    for i, row in enumerate(rows):
        if row.image == current_image:
            rest = rows[i + 1:]
            break
    return next((r for r in rest if r.image != current_image), None)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


def _short_tag(tag: str) -> str:
    return re.sub(r"sha256:([0-9a-f]{12})[0-9a-f]{52}", r"sha256:\1…", tag)


def format_history(rows: list[Row], width: int = 80, services: bool = False) -> list[str]:
    """A table that fits `width` columns: [service] tag, commit, date, author, subject."""
    head = (["SERVICE"] if services else []) + ["TAG", "COMMIT", "DATE", "AUTHOR"]
    table = [(([r.service] if services else [])
              + [_short_tag(r.tag), r.short, r.date, r.author], r.subject) for r in rows]
    caps = ([12] if services else []) + [24, 12, 10, 16]
    widths = [min(cap, max([len(h), *(len(cells[i]) for cells, _ in table)]))
              for i, (h, cap) in enumerate(zip(head, caps, strict=True))]
    out = []
    for cells, subject in [(head, "SUBJECT"), *table]:
        text = "  ".join(_fit(c, w).ljust(w) for c, w in zip(cells, widths, strict=True))
        out.append(_fit(f"{text}  {subject}", width).rstrip())
    return out


def row_json(row: Row) -> dict[str, str]:
    return asdict(row)


# --- the promoter: files, git and the checks --------------------------------------------------

# The checks of `vigo check` over the repo: (repo, policy, hosts or None for all) -> findings.
Checker = Callable[[Path, Policy, list[str] | None], list[Finding]]


@record(frozen=True)
class Outcome:
    edit: Edit
    commit: str = ""  # the new commit, when committed
    pushed: str = ""  # "remote ref", when pushed
    warnings: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()  # warnings of the checks on the file

    def line(self) -> str:
        done = [f"committed {self.commit[:12]}"] if self.commit else []
        done += [f"pushed to {self.pushed}"] if self.pushed else []
        return self.edit.line() + (f"; {', '.join(done)}" if done else "")

    def to_json(self) -> dict[str, object]:
        e = self.edit
        return {"stack": e.stack, "service": e.service, "host": e.host, "file": e.path,
                "old_image": e.old_image, "new_image": e.new_image, "old_tag": tag_of(e.old_image),
                "new_tag": tag_of(e.new_image), "changed": e.changed, "commit": self.commit,
                "pushed": self.pushed, "warnings": list(self.warnings)}


def parse_target(spec: str) -> tuple[str, str | None]:
    stack, _, service = spec.partition("/")
    if stack != PROXY and not is_stack_name(stack):
        raise PromoteError(f"'{stack}' is not a stack name (lowercase letters, digits, - and _)")
    if "/" in service or (spec.endswith("/") and not service):
        raise PromoteError(f"'{spec}' is not STACK or STACK/SERVICE")
    return stack, service or None


class Promoter:
    """Promote, history and rollback in one clone of the infra repo (`repo`, a folder)."""

    def __init__(self, repo: Path, clone: Clone, check: Checker, policy: Policy | None = None,
                 host: str = "") -> None:
        if host and not is_host_name(host):
            raise PromoteError(f"'{host}' is not a host name")
        self.repo = repo
        self.clone = clone
        self.check = check
        self.policy = policy or Policy()
        self.host = host

    # -- files

    def compose_file(self, stack: str) -> str:
        """The stack's compose file, relative to the repo folder."""
        folder = PROXY if stack == PROXY else f"stacks/{stack}"
        if self.host:
            folder = f"hosts/{self.host}/{folder}"
        present = render.compose_files(folder, lambda rel: (self.repo / rel).is_file())
        if len(present) > 1:
            raise PromoteError(f"{' and '.join(present)} {'both' if len(present) == 2 else 'all'}"
                               " exist: keep one compose file")
        if not present:
            known = sorted(p.name for p in (self.repo / "stacks").glob("*") if p.is_dir())
            hint = (f" (stacks: {', '.join(known)})" if known and not self.host
                    else " (without --host: the base file)" if self.host else "")
            raise PromoteError(f"no stack '{stack}': {folder}/ has no compose file "
                               f"({', '.join(COMPOSE_NAMES)}){hint}")
        return present[0]

    def _read(self, rel: str) -> tuple[bytes, str]:
        raw = (self.repo / rel).read_bytes()
        try:
            return raw, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PromoteError(f"{rel} is not UTF-8 text") from exc

    def _spot(self, stack: str, service: str | None, rel: str, text: str) -> ImageSpot:
        try:
            return select(image_spots(text, rel), service, stack, rel)
        except VariableImage as exc:
            raise PromoteError(self._variable_reason(stack, rel, exc)) from exc

    def _variable_reason(self, stack: str, rel: str, exc: VariableImage) -> str:
        from vigo.core.lint import env_key_names

        names = [f"{over}env/{name}.env" for name in (stack, "global")
                 for over in ([f"hosts/{self.host}/"] if self.host else []) + [""]]
        found = [n for n in names if set(exc.variables) & env_key_names(self.repo / n)]
        where = (f"set in {found[0]} (encrypted): change it there with `sops {found[0]}`"
                 if found else f"defined in no env file (looked in {', '.join(names)})")
        return (f"cannot promote {stack}/{exc.service} in {rel}: its image is '{exc.image}', "
                f"{where}, or write the image literally in {rel}")

    # -- promote / rollback

    def promote(self, spec: str, tag: str, *, allow_unpinned: bool = False, commit: bool = False,
                push: bool = False) -> Outcome:
        check_tag(tag, allow_unpinned)
        stack, service = parse_target(spec)
        rel = self.compose_file(stack)
        raw, text = self._read(rel)
        spot = self._spot(stack, service, rel, text)
        return self._apply(stack, rel, raw, text, spot, with_tag(spot.image, tag), "promote",
                           allow_unpinned=allow_unpinned, commit=commit, push=push)

    def rollback(self, spec: str, to: str | None = None, *, commit: bool = False,
                 push: bool = False) -> Outcome:
        stack, service = parse_target(spec)
        rel = self.compose_file(stack)
        raw, text = self._read(rel)
        spot = self._spot(stack, service, rel, text)
        if to is not None:
            check_tag(to)
            target = with_tag(spot.image, to)
        else:
            row = previous(self.history(stack, spot.service), spot.image)
            if row is None:
                raise PromoteError(f"nothing to roll back to: {stack}/{spot.service} ran no "
                                   f"other image than {tag_of(spot.image)} in {rel}'s history",
                                   code=1)
            target = row.image
        return self._apply(stack, rel, raw, text, spot, target, "rollback", commit=commit,
                           push=push)

    def _apply(self, stack: str, rel: str, raw: bytes, text: str, spot: ImageSpot,
               new_image: str, verb: str, *, allow_unpinned: bool = False, commit: bool = False,
               push: bool = False) -> Outcome:
        edit = Edit(stack, spot.service, rel, spot.image, new_image, self.host)
        if not edit.changed:
            return Outcome(edit)
        upstream = self._preflight(rel, commit or push, push)
        new_text = replace_image(text, spot, new_image)
        path = self.repo / rel
        path.write_bytes(new_text.encode("utf-8"))
        try:
            findings = self._findings(stack, rel, allow_unpinned)
            errors = [f for f in findings if f.severity == ERROR]
            if errors:
                raise ChecksFailed(f"{edit.name} -> {tag_of(new_image)} fails the checks of "
                                   f"{rel}; the file is restored, nothing committed", errors)
            sha = self._commit(rel, edit.message(verb)) if commit or push else ""
        except BaseException:
            path.write_bytes(raw)
            raise
        warnings = []
        if not is_pinned(new_image):
            warnings.append(f"{tag_of(new_image)} is not pinned: hosts apply {stack} only if "
                            "their allow_unpinned setting names it")
        pushed = ""
        if upstream:
            _branch, remote, ref = upstream
            try:
                self.clone.push(remote, ref)
            except Exception as exc:
                raise PromoteError(f"committed {sha[:12]} but {exc}; push it with `git push`",
                                   code=1) from exc
            pushed = f"{remote} {ref.removeprefix('refs/heads/')}"
        return Outcome(edit, sha, pushed, tuple(warnings),
                       tuple(f for f in findings if f.severity != ERROR))

    def _commit(self, rel: str, message: str) -> str:
        from vigo.adapters.git import CloneError

        try:
            return self.clone.commit(rel, message)
        except CloneError as exc:
            raise PromoteError(f"{exc}; the file is restored", code=1) from exc

    def _preflight(self, rel: str, commit: bool, push: bool) -> tuple[str, str, str] | None:
        """Before any change: the repo is a git repo, the file has no uncommitted change, the
        branch has an upstream. Returns the upstream when pushing."""
        if not commit:
            return None
        from vigo.adapters.git import CloneError

        try:
            self.clone.prefix()
            if self.clone.dirty(rel):
                raise PromoteError(f"{rel} has uncommitted changes: commit or stash them first, "
                                   "or promote without --commit")
            return self.clone.upstream() if push else None
        except CloneError as exc:
            raise PromoteError(str(exc)) from exc

    def _findings(self, stack: str, rel: str, allow_unpinned: bool) -> list[Finding]:
        policy = self.policy
        if allow_unpinned:
            policy = replace(policy, allow_unpinned=policy.allow_unpinned | {stack})
        hosts = [self.host] if self.host else None
        return [f for f in self.check(self.repo, policy, hosts) if f.path == rel]

    # -- history

    def history(self, stack: str, service: str | None = None) -> list[Row]:
        from vigo.adapters.git import CloneError

        rel = self.compose_file(stack)
        try:
            revisions = self.clone.log(rel)
            texts = self.clone.blobs([f"{r.commit}:{r.path}" for r in revisions])
        except CloneError as exc:
            raise PromoteError(str(exc)) from exc
        versions = [Version(r.commit, r.short, r.author, r.date, r.subject, images_of(t))
                    for r, t in zip(revisions, texts, strict=True)]
        rows = tag_changes(versions, service)
        if service is not None and not rows:
            known = sorted({s for v in versions for s in v.images})
            raise PromoteError(f"no service '{service}' with an image in the history of {rel} "
                               f"(services: {', '.join(known) or 'none'})")
        return rows
