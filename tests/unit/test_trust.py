"""Table-driven tests of vigo.core.trust: git's answers (ancestry exit codes, `%G?` letters) in, a
decision and its one line out; and which questions are asked at all."""

from pathlib import Path

import pytest

from vigo import config
from vigo.adapters.git import SignatureSetupError, signature_pins
from vigo.core import trust
from vigo.core.trust import (
    DESCENDANT,
    FIRST,
    GPG,
    REWIND,
    REWRITTEN,
    SAME,
    SSH,
    UNKNOWN,
    Decision,
)

OLD, NEW, MID = "a" * 40, "b" * 40, "c" * 40
O12, N12, M12 = OLD[:12], NEW[:12], MID[:12]
HINT = "; only `vigo apply --allow-rewind` by hand accepts it"


@pytest.mark.parametrize("old, new, forward, backward, expected", [
    pytest.param("", NEW, None, None, FIRST, id="no-base"),
    pytest.param(OLD, OLD, None, None, SAME, id="same"),
    pytest.param(OLD, NEW, None, None, None, id="ask-git"),
    pytest.param(OLD, NEW, 0, None, DESCENDANT, id="fast-forward"),
    pytest.param(OLD, NEW, 1, 0, REWIND, id="older-commit"),
    pytest.param(OLD, NEW, 1, 1, REWRITTEN, id="diverged"),
    pytest.param(OLD, NEW, 128, None, UNKNOWN, id="base-not-in-checkout"),
])
def test_relation(old, new, forward, backward, expected):
    assert trust.relation(old, new, forward, backward) == expected


@pytest.mark.parametrize("rel, expected", [
    (DESCENDANT, (f"{OLD}..{NEW}",)),
    (REWRITTEN, (f"{OLD}..{NEW}",)),
    (FIRST, ("-1", NEW)),
    (REWIND, ("-1", NEW)),
    (UNKNOWN, ("-1", NEW)),
])
def test_revisions(rel, expected):
    assert trust.revisions(OLD, NEW, rel) == expected


def sigs(*letters: str) -> list[tuple[str, str]]:
    """Newest first, the fetched commit first: NEW, then MID, then more."""
    commits = [NEW, MID, *(f"{i:x}" * 40 for i in range(3, 10))]
    return list(zip(commits, letters, strict=False))


@pytest.mark.parametrize("rel, signatures, mode, allow_rewind, expected", [
    pytest.param(DESCENDANT, sigs("G"), SSH, False,
                 Decision(True, f"1 new commit up to {N12} signed", NEW), id="one-good"),
    pytest.param(DESCENDANT, sigs("G", "G", "G"), SSH, False,
                 Decision(True, f"3 new commits up to {N12} signed", NEW), id="three-good"),
    pytest.param(DESCENDANT, sigs("N"), SSH, False,
                 Decision(False, f"refused {N12}: unsigned (no SSH signature)", NEW),
                 id="unsigned"),
    pytest.param(DESCENDANT, sigs("U"), SSH, False,
                 Decision(False, f"refused {N12}: signed by an unknown key "
                          "(not in allowed_signers)", NEW), id="ssh-unknown-key"),
    pytest.param(DESCENDANT, sigs("B"), SSH, False,
                 Decision(False, f"refused {N12}: bad signature", NEW), id="bad"),
    pytest.param(DESCENDANT, sigs("E"), GPG, False,
                 Decision(False, f"refused {N12}: signed by an unknown key (not in gpg_keyring)",
                          NEW), id="gpg-key-missing"),
    pytest.param(DESCENDANT, sigs("U"), GPG, False,
                 Decision(False, f"refused {N12}: signed by a key gpg_keyring does not trust "
                          "(set its owner trust)", NEW), id="gpg-untrusted-key"),
    pytest.param(DESCENDANT, sigs("N"), GPG, False,
                 Decision(False, f"refused {N12}: unsigned (no OpenPGP signature)", NEW),
                 id="gpg-unsigned"),
    pytest.param(DESCENDANT, sigs("R"), GPG, False,
                 Decision(False, f"refused {N12}: signed by a revoked key", NEW), id="revoked"),
    pytest.param(DESCENDANT, sigs("Y"), GPG, False,
                 Decision(False, f"refused {N12}: signed by an expired key", NEW), id="expired"),
    pytest.param(DESCENDANT, sigs("Z"), SSH, False,
                 Decision(False, f"refused {N12}: signature not valid (git says Z)", NEW),
                 id="unknown-letter"),
    pytest.param(DESCENDANT, sigs("G", "N"), SSH, False,
                 Decision(False, f"refused {M12}: unsigned (no SSH signature); the fetched {N12} "
                          "brings 2 new commits, 1 not signed by a trusted key", MID),
                 id="signed-merge-of-unsigned-parent"),
    pytest.param(DESCENDANT, sigs("N", "U"), SSH, False,
                 Decision(False, f"refused {M12}: signed by an unknown key (not in "
                          f"allowed_signers); the fetched {N12} brings 2 new commits, 2 not "
                          "signed by a trusted key", MID), id="names-the-oldest-bad"),
    pytest.param(DESCENDANT, [], SSH, False,
                 Decision(False, f"refused {N12}: git listed no commit to verify", NEW),
                 id="nothing-listed"),
    pytest.param(FIRST, sigs("G"), SSH, False,
                 Decision(True, "no applied commit known yet (first run): verified the fetched "
                          f"commit {N12} only", NEW), id="first-run"),
    pytest.param(FIRST, sigs("N"), SSH, False,
                 Decision(False, f"refused {N12}: unsigned (no SSH signature)", NEW),
                 id="first-run-unsigned"),
    pytest.param(SAME, [], SSH, False, Decision(True, "", NEW), id="same"),
    pytest.param(REWIND, sigs("G"), SSH, False,
                 Decision(False, f"refused {N12}: not a descendant of the applied commit {O12} "
                          f"(an older commit: a rewind){HINT}", NEW), id="rewind"),
    pytest.param(REWRITTEN, sigs("G"), SSH, False,
                 Decision(False, f"refused {N12}: not a descendant of the applied commit {O12}: "
                          f"history rewritten{HINT}", NEW), id="rewritten"),
    pytest.param(UNKNOWN, sigs("G"), SSH, False,
                 Decision(False, f"refused {N12}: history rewritten: the applied commit {O12} "
                          f"is not in the fetched history{HINT}", NEW), id="base-unknown"),
    pytest.param(REWIND, sigs("G"), SSH, True,
                 Decision(True, f"--allow-rewind: going back from {O12} to the older {N12}, "
                          "signed", NEW), id="rewind-allowed"),
    pytest.param(REWIND, sigs("N"), SSH, True,
                 Decision(False, f"refused {N12}: unsigned (no SSH signature)", NEW),
                 id="rewind-allowed-still-signed"),
    pytest.param(REWRITTEN, sigs("G", "G"), SSH, True,
                 Decision(True, f"--allow-rewind: history rewritten since {O12}; 2 new commits "
                          f"up to {N12} signed", NEW), id="rewritten-allowed"),
    pytest.param(REWRITTEN, sigs("G", "B"), SSH, True,
                 Decision(False, f"refused {M12}: bad signature; the fetched {N12} brings 2 "
                          "new commits, 1 not signed by a trusted key", MID),
                 id="rewritten-allowed-bad-parent"),
    pytest.param(UNKNOWN, sigs("G"), SSH, True,
                 Decision(True, f"--allow-rewind: the applied commit {O12} is not in the fetched "
                          f"history; verified the fetched commit {N12} only", NEW),
                 id="base-unknown-allowed"),
])
def test_decide(rel, signatures, mode, allow_rewind, expected):
    old = "" if rel == FIRST else (NEW if rel == SAME else OLD)
    assert trust.decide(old, NEW, rel, signatures, mode, allow_rewind) == expected


def test_parse_log():
    assert trust.parse_log(f"{NEW} G\n{MID} N\n\n") == [(NEW, "G"), (MID, "N")]
    assert trust.parse_log(f"{NEW} \n") == [(NEW, "")]


class FakeGit:
    """Answers `is_ancestor` from a table and `log` with fixed lines; records every question."""

    def __init__(self, ancestors: dict[tuple[str, str], int], log: str = "") -> None:
        self.ancestors, self.log_text, self.asked = ancestors, log, []

    def is_ancestor(self, a: str, b: str) -> int:
        self.asked.append(("is-ancestor", a, b))
        return self.ancestors[(a, b)]

    def log(self, revisions: tuple[str, ...]) -> str:
        self.asked.append(("log", *revisions))
        return self.log_text


@pytest.mark.parametrize("old, ancestors, log, allow_rewind, ok, asked", [
    pytest.param(NEW, {}, "", False, True, [], id="idle-asks-nothing"),
    pytest.param("", {}, f"{NEW} G\n", False, True, [("log", "-1", NEW)], id="first-run"),
    pytest.param(OLD, {(OLD, NEW): 0}, f"{NEW} G\n{MID} G\n", False, True,
                 [("is-ancestor", OLD, NEW), ("log", f"{OLD}..{NEW}")], id="fast-forward"),
    pytest.param(OLD, {(OLD, NEW): 0}, f"{NEW} G\n{MID} N\n", False, False,
                 [("is-ancestor", OLD, NEW), ("log", f"{OLD}..{NEW}")], id="merged-unsigned"),
    pytest.param(OLD, {(OLD, NEW): 1, (NEW, OLD): 0}, "", False, False,
                 [("is-ancestor", OLD, NEW), ("is-ancestor", NEW, OLD)],
                 id="rewind-refused-before-log"),
    pytest.param(OLD, {(OLD, NEW): 1, (NEW, OLD): 0}, f"{NEW} G\n", True, True,
                 [("is-ancestor", OLD, NEW), ("is-ancestor", NEW, OLD), ("log", "-1", NEW)],
                 id="rewind-allowed"),
    pytest.param(OLD, {(OLD, NEW): 1, (NEW, OLD): 1}, f"{NEW} G\n", True, True,
                 [("is-ancestor", OLD, NEW), ("is-ancestor", NEW, OLD),
                  ("log", f"{OLD}..{NEW}")], id="force-push-allowed"),
    pytest.param(OLD, {(OLD, NEW): 128}, "", False, False, [("is-ancestor", OLD, NEW)],
                 id="base-unknown"),
])
def test_verify_asks_git(old, ancestors, log, allow_rewind, ok, asked):
    git = FakeGit(ancestors, log)
    decision = trust.verify(old, NEW, SSH, allow_rewind, is_ancestor=git.is_ancestor,
                            log=git.log)
    assert (decision.ok, git.asked) == (ok, asked)


@pytest.mark.parametrize("state, expected", [
    ({}, ""),
    ({"revision_applied": OLD}, OLD),
    ({"revision_applied": OLD, "revision_accepted": NEW}, NEW),
])
def test_base(state, expected):
    assert trust.base(state) == expected


@pytest.mark.parametrize("toml, expected", [
    pytest.param("", (None, None), id="neither-no-verification"),
    pytest.param('allowed_signers = "/etc/vigo/allowed_signers"\n',
                 (Path("/etc/vigo/allowed_signers"), None), id="ssh"),
    pytest.param('gpg_keyring = "/etc/vigo/gnupg"\n', (None, Path("/etc/vigo/gnupg")),
                 id="gpg"),
])
def test_settings(tmp_path, toml, expected):
    path = tmp_path / "vigo.toml"
    path.write_text('repo = "/srv/infra.git"\nhost = "h"\n' + toml)
    s = config.load(path, {})
    assert (s.allowed_signers, s.gpg_keyring) == expected


@pytest.mark.parametrize("toml, env, message", [
    pytest.param('allowed_signers = "/a"\ngpg_keyring = "/g"\n', {},
                 "{file}: allowed_signers and gpg_keyring are both set: set at most one",
                 id="both"),
    pytest.param('allowed_signers = "/a"\n', {"VIGO_GPG_KEYRING": "/g"},
                 "VIGO_GPG_KEYRING: allowed_signers and gpg_keyring are both set", id="both-env"),
    pytest.param('allowed_signers = "keys"\n', {},
                 "{file}: allowed_signers must be an absolute path", id="relative"),
])
def test_settings_errors(tmp_path, toml, env, message):
    path = tmp_path / "vigo.toml"
    path.write_text('repo = "/srv/infra.git"\nhost = "h"\n' + toml)
    with pytest.raises(config.ConfigError) as exc:
        config.load(path, env)
    assert message.format(file=path) in str(exc.value)


def test_signature_pins_ssh(tmp_path):
    allowed = tmp_path / "allowed_signers"
    allowed.write_text("")
    args, env = signature_pins(allowed, None)
    pins = dict(a.split("=", 1) for a in args[1::2])
    assert args[::2] == ("-c",) * len(pins)
    assert pins["gpg.ssh.allowedSignersFile"] == str(allowed)
    assert pins["gpg.ssh.program"].endswith("/ssh-keygen") and pins["gpg.ssh.program"][0] == "/"
    assert pins["gpg.openpgp.program"] == pins["gpg.program"] == "/bin/false"
    assert pins["gpg.x509.program"] == "/bin/false"
    assert env == {"GNUPGHOME": "/dev/null"}


def test_signature_pins_gpg(tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: f"/opt/bin/{name}")
    args, env = signature_pins(None, tmp_path)
    pins = dict(a.split("=", 1) for a in args[1::2])
    assert pins == {"gpg.openpgp.program": "/opt/bin/gpg", "gpg.program": "/opt/bin/gpg",
                    "gpg.ssh.program": "/bin/false", "gpg.x509.program": "/bin/false"}
    assert env == {"GNUPGHOME": str(tmp_path)}


@pytest.mark.parametrize("which, make, message", [
    pytest.param("/usr/bin/ssh-keygen", False, "allowed_signers {p}: no such file",
                 id="no-file"),
    pytest.param(None, True, "ssh-keygen not found: install openssh-client", id="no-ssh-keygen"),
])
def test_signature_pins_errors(tmp_path, monkeypatch, which, make, message):
    monkeypatch.setattr("shutil.which", lambda name: which)
    allowed = tmp_path / "allowed_signers"
    if make:
        allowed.write_text("")
    with pytest.raises(SignatureSetupError, match="^" + message.format(p=allowed) + "$"):
        signature_pins(allowed, None)
