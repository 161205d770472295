"""The source of a run: fetch, the signature check (core/trust.py decides), the checkout, the
accepted revision, and the decision to replace a broken checkout with a fresh clone (the git
adapter only runs git)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from vigo.adapters import fs
from vigo.adapters.git import (
    CredentialError,
    Git,
    SignatureSetupError,
    SourceError,
    signature_pins,
)
from vigo.adapters.run import CommandTimeout, Masker
from vigo.config import Settings
from vigo.core import reasons, render, trust
from vigo.core.model import DesiredState, Report
from vigo.core.records import record
from vigo.host import state


def fetch_branch(git: Git, repo: str, branch: str, folder: Path) -> tuple[str, str]:
    """Fetch the branch; (the fetched commit, '' or the line that says the checkout was
    replaced). A broken checkout (stale index.lock, corrupt objects) is replaced by a fresh
    clone when the remote answers; when it does not, the fetch's own error stands."""
    try:
        return git.fetch(repo, branch, folder), ""
    except CredentialError:
        raise
    except SourceError as first:
        if not git.remote_answers(repo, branch, folder.parent):
            raise
        git.reclone(repo, branch, folder, why=str(first))
        return git.fetch(repo, branch, folder), recovered(folder, str(first))


def checkout_commit(git: Git, repo: str, branch: str, folder: Path,
                    commit: str) -> tuple[str, str]:
    """Make the working tree exactly `commit`; a checkout that cannot (a stale index.lock after
    a crash, a broken object) is cloned afresh. (the commit, '' or the recovery line)."""
    try:
        return git.checkout(folder, commit), ""
    except SourceError as exc:
        git.reclone(repo, branch, folder, why=str(exc))
        git.fetch(repo, branch, folder)
        return git.checkout(folder, commit), recovered(folder, str(exc))


RENDER_CACHE = "render.json"  # in the state folder: the render of the intact checkout


def recovered(folder: Path, why: str) -> str:
    return f"{folder} was broken ({why}); replaced it with a fresh clone"


@record
class Source:
    settings: Settings
    git: Git
    masker: Masker
    emit: Callable[[str], None]
    warn: Callable[[Report, str], None]

    def desired(self, report: Report, fetch: bool = True, accepted: str = "",
                allow_rewind: bool = False, keep: bool = False) -> DesiredState | None:
        """The fetched, checked and checked-out commit, rendered; `keep` (apply): the render
        of an intact checkout is kept in the state folder and reused while the tree stays
        intact (`render_of`)."""
        s = self.settings
        self.git.stamp = ""
        try:
            if fetch:
                fetched, recovered = fetch_branch(self.git, s.repo, s.branch, s.checkout)
                if not self._trusted(report, fetched, accepted, allow_rewind):
                    return None  # before the checkout moves: nothing changed
                rev, again = checkout_commit(self.git, s.repo, s.branch, s.checkout, fetched)
                if again or recovered:
                    self.warn(report, again or recovered)
            else:
                rev = self.git.head(s.checkout)
                if not rev:
                    raise SourceError(f"{s.checkout} has no checkout yet: run without --no-fetch")
        except (SourceError, CommandTimeout) as exc:
            report.fail(reasons.SOURCE_FAILED, self.masker(str(exc)))
            self.emit(f"source: {report.error}; nothing changed, the next run tries again")
            return None
        report.revision = rev
        desired = self.render_of(rev, self.git.stamp if keep else "")
        for w in desired.warnings:
            self.warn(report, w)
        if desired.error:  # stacks may be hidden: nothing is pruned, nothing changes
            report.fail(reasons.RENDER_FAILED, self.masker(desired.error))
            self.emit(f"render: {report.error}; nothing changed")
            return None
        return desired

    def render_of(self, rev: str, stamp: str) -> DesiredState:
        """render.render of the checkout; with `stamp` (the checkout found intact, untouched
        since it was recorded: git.tree_stamp), the render kept for that stamp when there is
        one, else the render, kept for the next run (its warnings with it: they are printed
        every run). A render with an error is not kept."""
        s = self.settings
        if not stamp:
            return render.render(s.checkout, s.host, rev, s.engine)
        key = render.cache_key(rev, stamp, s.host, s.engine)
        path = s.state / RENDER_CACHE
        try:
            kept = render.from_cache(fs.read_json(path), key)
        except (OSError, ValueError, RecursionError):
            kept = None
        if kept is not None:
            return kept
        desired = render.render(s.checkout, s.host, rev, s.engine)
        if not desired.error:
            with contextlib.suppress(OSError):  # not kept: the next run renders again
                fs.write_json(fs.private_dir(s.state) / RENDER_CACHE,
                              render.to_cache(desired, key), sync=False)
        return desired

    def _trusted(self, report: Report, fetched: str, accepted: str,
                 allow_rewind: bool) -> bool:
        """Signed commits (trust.py), when a key setting is on: the fetched commit must descend
        from the last accepted one, and every commit in between be signed by a trusted key."""
        s = self.settings
        if s.allowed_signers is None and s.gpg_keyring is None:
            return True
        try:
            pins = signature_pins(s.allowed_signers, s.gpg_keyring)
        except SignatureSetupError as exc:
            report.fail(reasons.SETTINGS_INVALID, f"signed commits: {exc}")
            self.emit(f"settings: {report.error}; nothing changed")
            return False
        if fetched == accepted:  # an idle run asks git nothing more
            return True
        decision = trust.verify(
            accepted or self.git.read_ref(s.checkout, trust.REF), fetched,
            trust.SSH if s.allowed_signers else trust.GPG, allow_rewind,
            is_ancestor=lambda a, b: self.git.is_ancestor(s.checkout, a, b),
            log=lambda revisions: self.git.signatures(s.checkout, revisions, pins))
        if not decision.ok:
            report.fail(reasons.SIGNATURE_REFUSED, decision.line)
            report.revision = fetched
            self.emit(f"source: {decision.line}; nothing changed")  # an error in the journal
        elif decision.line:
            self.emit(f"signatures: {decision.line}")
        return decision.ok

    def accept(self, report: Report, st: state.RunRecord, rev: str) -> None:
        """Remember the commit apply checked out: the base of the next signature check. Saved
        at once, then pinned as refs/vigo/applied (gc keeps it): the state is never older."""
        s = self.settings
        if not st.accept(rev):  # trust.STATE_KEY
            return
        if s.allowed_signers is None and s.gpg_keyring is None:
            return
        try:
            state.save(s.state, st)
        except OSError as exc:
            self.warn(report, f"cannot save the state file: {exc}")
        error = self.git.update_ref(s.checkout, trust.REF, rev)
        if error:
            self.warn(report, f"cannot pin {rev[:12]} as {trust.REF}: {error}")
