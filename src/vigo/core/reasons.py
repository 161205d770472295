"""Named reasons: every outcome of a run, and of each stack in it, carries one of these codes
(as Flux's `HealthCheckFailed`). The `--json` output, the metrics labels, the notifications and
`vigo status` use the code; the prose message beside it stays for people.

`EXIT` is the one table from a run's reason to its exit code; `exit_codes_help` writes the
`--help` text from it. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

# -- the outcome of one stack (StackResult.reason) ---------------------------------------------
APPLIED = "Applied"  # created or updated, and healthy
UNCHANGED = "Unchanged"  # nothing to do
KEPT = "Kept"  # not in the tree, not pruned (an empty tree, a missing host overlay)
REMOVED = "Removed"  # left the repo: removed
REMOVE_FAILED = "RemoveFailed"  # left the repo: `docker compose down` failed
HELD = "Held"  # a revision that failed before is not tried again (vigo retry)
BLOCKED = "Blocked"  # a stack it comes after (x-vigo.after) did not converge: not attempted
RENDER_FAILED = "RenderFailed"  # the stack's files cannot be rendered (or the whole tree)
DECRYPT_FAILED = "DecryptFailed"  # an env file it uses cannot be decrypted or written
POLICY_REFUSED = "PolicyRefused"  # the policy (vigo check's rules, the resolved model)
RESOLVE_FAILED = "ResolveFailed"  # `docker compose config` or x-vigo refused the stack
PULL_FAILED = "PullFailed"  # an image cannot be pulled: nothing was touched
JOB_FAILED = "JobFailed"  # a release job (x-vigo.jobs) failed
DEPLOY_FAILED = "DeployFailed"  # `docker compose up` failed, or the deploy could not start
HEALTH_CHECK_FAILED = "HealthCheckFailed"  # the health gate failed, no rollback restored it
ROLLED_BACK = "RolledBack"  # the gate failed; the last healthy revision serves again
ENGINE_UNAVAILABLE = "EngineUnavailable"  # the engine stopped answering: tried next run
# a swarm stack on a manager that is not the leader: not applied, the leader applies (exit 0;
# also the run's reason when that is all that kept it from converging)
NOT_LEADER = "NotLeader"
NOT_MANAGER = "NotSwarmManager"  # a swarm stack on a worker or a node not in a swarm (exit 1)

# -- the outcome of a run (Report.reason); RENDER_FAILED, ENGINE_UNAVAILABLE and CRASHED are
# both (the whole tree, the engine, or one stack's deploy) -------------------------------------
CONVERGED = "Converged"
STACK_FAILED = "StackFailed"  # one or more stacks failed (the others were applied)
PRUNE_REFUSED = "PruneRefused"
SOURCE_FAILED = "SourceFailed"  # the repo could not be fetched (or has no checkout)
SIGNATURE_REFUSED = "SignatureRefused"  # signed commits: a fetched commit failed the check
SETTINGS_INVALID = "SettingsInvalid"  # settings, key, secrets folder, state folder, lock
SUSPENDED = "Suspended"  # vigo suspend (a timer run exits 0)
LOCKED = "Locked"  # another run holds the lock
CRASHED = "Crashed"  # an unexpected error stopped the run (one line; --debug: traceback)
INTERRUPTED = "Interrupted"  # Ctrl-C, SIGTERM
STATE_UNSAVED = "StateUnsaved"  # the state file could not be written

# The one table: a run's reason -> its exit code (a stack reason fails a run as STACK_FAILED),
# with the line `vigo --help` prints for it ('' : said by the line before it).
EXIT: Mapping[str, tuple[int, str]] = {
    CONVERGED: (0, "converged (plan: printed)"),
    NOT_LEADER: (0, "a swarm manager that is not the leader left its swarm stacks to the "
                    "leader (not recorded as applied)"),
    STACK_FAILED: (1, "one or more stacks failed, or a prune was refused (the others were "
                      "applied)"),
    PRUNE_REFUSED: (1, ""),
    RENDER_FAILED: (1, ""),
    ENGINE_UNAVAILABLE: (1, ""),
    STATE_UNSAVED: (1, ""),
    SUSPENDED: (1, "vigo is suspended (vigo suspend; apply --timer exits 0 then)"),
    CRASHED: (1, "the run stopped on an unexpected error (one line; --debug shows the "
                 "traceback)"),
    INTERRUPTED: (1, ""),
    SETTINGS_INVALID: (2, "invalid settings or repo, a state folder or lock vigo cannot use: "
                          "nothing applied"),
    SOURCE_FAILED: (3, "the repo could not be fetched: nothing changed"),
    SIGNATURE_REFUSED: (4, "a fetched commit failed the signature or history check (signed "
                           "commits): nothing changed"),
    LOCKED: (75, "another vigo run holds the lock: nothing done"),
}

STACK = frozenset({APPLIED, UNCHANGED, KEPT, REMOVED, REMOVE_FAILED, HELD, BLOCKED,
                   RENDER_FAILED, DECRYPT_FAILED, POLICY_REFUSED, RESOLVE_FAILED, PULL_FAILED,
                   JOB_FAILED, DEPLOY_FAILED, HEALTH_CHECK_FAILED, ROLLED_BACK,
                   ENGINE_UNAVAILABLE, CRASHED, NOT_LEADER, NOT_MANAGER})
OK = frozenset({APPLIED, UNCHANGED, KEPT, REMOVED, NOT_LEADER})  # of a stack that is fine
NOT_APPLIED = frozenset({NOT_LEADER})  # fine, but not applied here: the revision is not recorded


def exit_code(reason: str) -> int:
    """The exit code of a run that ended for `reason` (an unknown one fails: 1)."""
    return EXIT.get(reason, (1, ""))[0]


def exit_codes_help(width: int = 88) -> str:
    """The `exit codes:` epilog of `vigo --help`, `vigo apply --help`, `vigo plan --help`."""
    lines = ["exit codes:"]
    for code in sorted({c for c, _ in EXIT.values()}):
        said = [text for c, text in EXIT.values() if c == code and text]
        for i, text in enumerate(said):
            lines += _wrap(f"{code:<4}" if i == 0 else "    ", ("" if i == 0 else "or ") + text,
                           width)
    return "\n".join(lines) + "\n"


def _wrap(head: str, text: str, width: int) -> list[str]:
    out, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width - 6:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    out.append(line)
    return [f"  {head}{out[0]}", *(f"      {rest}" for rest in out[1:])]
