"""Signed commits: which commits a fetch brings must be checked, and the verdict.

Pure: git is asked through two functions the caller hands in (reconcile passes adapters/git.py):
`is_ancestor(a, b)`, the exit code of `git merge-base --is-ancestor A B`, and `log(revisions)`,
the output of `git log --format='%H %G?' REVISIONS` run with every signature program pinned.
docs/security.md, "Signed commits".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vigo.core.records import record

EXIT_REFUSED = 4  # a fetched commit failed the signature or history check: nothing changed
REF = "refs/vigo/applied"  # pins the last accepted commit in the checkout (gc keeps it)
STATE_KEY = "revision_accepted"  # the same commit in the state file

# How the fetched commit relates to the last accepted one.
FIRST = "first"  # no accepted commit known (first run ever)
SAME = "same"  # nothing new
DESCENDANT = "descendant"  # a fast-forward: the normal case
REWIND = "rewind"  # an older commit of the same history
REWRITTEN = "rewritten"  # both sides have commits the other lacks: a force-pushed history
UNKNOWN = "unknown"  # the accepted commit is not in the checkout: not in the fetched history

SSH, GPG = "ssh", "gpg"


@record(frozen=True)
class Decision:
    ok: bool
    line: str = ""  # refused: why, naming the commit; accepted: a note to print, or ''
    commit: str = ""  # the commit the line is about


def base(state: dict[str, object]) -> str:
    """The last accepted commit as the state file knows it ('' when it does not)."""
    return str(state.get(STATE_KEY) or state.get("revision_applied") or "")


def relation(old: str, new: str, forward: int | None = None,
             backward: int | None = None) -> str | None:
    """FIRST / SAME without asking git; else from `merge-base --is-ancestor OLD NEW` (forward:
    0 yes, 1 no, 128 OLD unknown) and, when that says 1, `--is-ancestor NEW OLD` (backward).
    None: ask git first."""
    if not old:
        return FIRST
    if old == new:
        return SAME
    if forward is None:
        return None
    if forward == 0:
        return DESCENDANT
    if forward == 1:
        return REWIND if backward == 0 else REWRITTEN
    return UNKNOWN


def revisions(old: str, new: str, rel: str) -> tuple[str, ...]:
    """The arguments of `git log` that list every commit to verify: all commits the fetch
    brings (merged-in parents too), or the fetched commit alone when there is no base."""
    if rel in (DESCENDANT, REWRITTEN):
        return (f"{old}..{new}",)
    return ("-1", new)


def history_refusal(old: str, new: str, rel: str, allow_rewind: bool) -> Decision | None:
    """The refusal for a fetched commit that does not descend from the accepted one."""
    if allow_rewind or rel not in (REWIND, REWRITTEN, UNKNOWN):
        return None
    hint = "; only `vigo apply --allow-rewind` by hand accepts it"
    if rel == REWIND:
        why = f"not a descendant of the applied commit {old[:12]} (an older commit: a rewind)"
    elif rel == REWRITTEN:
        why = f"not a descendant of the applied commit {old[:12]}: history rewritten"
    else:
        why = f"history rewritten: the applied commit {old[:12]} is not in the fetched history"
    return Decision(False, f"refused {new[:12]}: {why}{hint}", new)


def reason(letter: str, mode: str) -> str:
    """Why a `%G?` letter other than G is refused."""
    kind = "SSH" if mode == SSH else "OpenPGP"
    keys = "allowed_signers" if mode == SSH else "gpg_keyring"
    return {
        "N": f"unsigned (no {kind} signature)",
        "U": (f"signed by an unknown key (not in {keys})" if mode == SSH
              else "signed by a key gpg_keyring does not trust (set its owner trust)"),
        "E": f"signed by an unknown key (not in {keys})",
        "B": "bad signature",
        "X": "the signature has expired",
        "Y": "signed by an expired key",
        "R": "signed by a revoked key",
    }.get(letter, f"signature not valid (git says {letter or '?'})")


def parse_log(text: str) -> list[tuple[str, str]]:
    """`%H %G?` lines -> [(commit, letter)], newest first."""
    out = []
    for line in text.splitlines():
        commit, _, letter = line.strip().partition(" ")
        if commit:
            out.append((commit, letter.strip()))
    return out


def decide(old: str, new: str, rel: str, signatures: Sequence[tuple[str, str]], mode: str,
           allow_rewind: bool = False) -> Decision:
    """The verdict on a fetched commit: its relation to the accepted one, then every commit
    listed by `git log` (newest first) must say G. A signed merge vouches only for itself."""
    refusal = history_refusal(old, new, rel, allow_rewind)
    if refusal is not None:
        return refusal
    if rel == SAME:
        return Decision(True, "", new)
    if not signatures:
        return Decision(False, f"refused {new[:12]}: git listed no commit to verify", new)
    bad = [(c, g) for c, g in signatures if g != "G"]
    if bad:
        commit, letter = bad[-1]  # the oldest: where the trouble starts
        why = f"refused {commit[:12]}: {reason(letter, mode)}"
        if commit != new or len(signatures) > 1:
            n, k = len(signatures), len(bad)
            why += (f"; the fetched {new[:12]} brings {n} new commit{'s' if n > 1 else ''}, "
                    f"{k} not signed by a trusted key")
        return Decision(False, why, commit)
    n = len(signatures)
    if rel == FIRST:
        note = (f"no applied commit known yet (first run): verified the fetched commit "
                f"{new[:12]} only")
    elif rel == UNKNOWN:
        note = (f"--allow-rewind: the applied commit {old[:12]} is not in the fetched history; "
                f"verified the fetched commit {new[:12]} only")
    elif rel == REWIND:
        note = f"--allow-rewind: going back from {old[:12]} to the older {new[:12]}, signed"
    elif rel == REWRITTEN:
        note = (f"--allow-rewind: history rewritten since {old[:12]}; {n} new "
                f"commit{'s' if n > 1 else ''} up to {new[:12]} signed")
    else:
        note = f"{n} new commit{'s' if n > 1 else ''} up to {new[:12]} signed"
    return Decision(True, note, new)


def verify(old: str, new: str, mode: str, allow_rewind: bool, *,
           is_ancestor: Callable[[str, str], int],
           log: Callable[[tuple[str, ...]], str]) -> Decision:
    """May `new` be checked out, `old` being the last accepted commit ('' if none is known)?
    Asks git nothing when they are equal, twice for a fast-forward (ancestry, signatures)."""
    rel = relation(old, new)
    if rel is None:
        forward = is_ancestor(old, new)
        rel = relation(old, new, forward, is_ancestor(new, old) if forward == 1 else None)
    refusal = history_refusal(old, new, rel, allow_rewind)
    if refusal is not None or rel == SAME:
        return refusal or Decision(True, "", new)
    return decide(old, new, rel, parse_log(log(revisions(old, new, rel))), mode, allow_rewind)
