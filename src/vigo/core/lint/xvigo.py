"""Family x-vigo: the x-vigo block through its one parser (core/xvigo.py), the order it makes across
the stacks of a host, and shared networks and volumes."""

from collections.abc import Iterator

from vigo.core import xvigo
from vigo.core.lint.base import (
    WARNING,
    ComposeFile,
    Finding,
    describe,
    finding,
    stack_rule,
    tree_rule,
    who,
)
from vigo.core.lint.doc import as_mapping, key_line, path_line
from vigo.core.model import PROXY

IDS = describe({
    "x-vigo": "a compose file's x-vigo block holds only health_timeout, after, jobs and engine, of "
    "the right types; every job is a service of it that nothing depends on",
    "x-vigo-order": "x-vigo.after names stacks of the host and makes no cycle",
    "shared-resource": "an external network or volume is created by a stack of the host; "
    "that stack then comes first (warning)",
})


@stack_rule
def _xvigo(cf: ComposeFile) -> Iterator[Finding]:
    """The x-vigo block (xvigo.py): apply refuses a stack whose block this rule rejects."""
    if xvigo.KEY not in cf.doc:
        return
    services = cf.doc.get("services") if not cf.fragment else None
    _, problems = xvigo.parse(cf.doc[xvigo.KEY], services, cf.stack)
    for p in problems:
        fix = p.fix[:1].upper() + p.fix[1:] + "."
        yield finding(cf, "x-vigo", path_line(cf.doc, p.key), None, f"{p.key} {p.message}",
                       fix)


@tree_rule
def _xvigo_order(files: list[ComposeFile]) -> Iterator[Finding]:
    """x-vigo.after across the stacks of a host: names that are no stack, and cycles (the
    chain is named at every stack of it)."""
    after: dict[str, list[str]] = {}
    where: dict[str, ComposeFile] = {}
    for cf in files:
        block = as_mapping(cf.doc.get(xvigo.KEY))
        if "after" not in block or cf.fragment:
            continue
        options, _ = xvigo.parse({"after": block["after"]}, None, cf.stack)
        after.setdefault(cf.stack, []).extend(options.after)
        where.setdefault(cf.stack, cf)
    stacks = {cf.stack for cf in files}
    shares: dict[str, xvigo.Shared] = {}
    for cf in files:
        if cf.fragment:
            continue
        got = xvigo.shared(cf.doc, cf.stack)
        had = shares.get(cf.stack, xvigo.Shared())
        shares[cf.stack] = xvigo.Shared(had.creates | got.creates, had.uses | got.uses)
        where.setdefault(cf.stack, cf)
    for stack, kind, name in xvigo.implicit_after(shares, (PROXY,))[1]:
        cf = where[stack]
        decls = as_mapping(cf.doc.get(kind))
        key = next((k for k, d in decls.items() if name in (str(k), str(as_mapping(d).get(
            "name"))) or name == str(as_mapping(as_mapping(d).get("external")).get("name"))), None)
        line = key_line(decls, key) if key is not None else key_line(cf.doc, kind)
        what = (f"the external {kind[:-1]} '{name}' is created by no stack of this host: the "
                "stack fails to start unless it exists on the host")
        fix = (f"Let a stack create it (that stack is then applied first), or create it on "
               f"the host once (`docker {kind[:-1]} create {name}`).")
        yield Finding("shared-resource", WARNING, cf.rel, line, f"{who(stack)}: {what}", fix)
    for name, why in sorted(xvigo.order_problems(after, stacks).items()):
        cf = where[name]
        what, _, fix = why.partition("; fix: ")
        yield finding(cf, "x-vigo-order", path_line(cf.doc, f"{xvigo.KEY}.after"), None,
                       what, fix[:1].upper() + fix[1:] + ".")
