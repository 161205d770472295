"""Family x-vigo: the x-vigo block through its one parser (core/xvigo.py), the order it makes across
the stacks of a host, and shared networks and volumes."""

from collections.abc import Iterator

from vigo.core import xvigo
from vigo.core.lint.base import (
    WARNING,
    ComposeFile,
    Finding,
    Place,
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


def _order_facts(files: list[ComposeFile]) -> dict | None:
    """One stack's x-vigo.after and shared networks and volumes (None: no file of it parsed).
    `rel`/`after_line`: where its findings go (the first file that says `after:`, else its
    compose file); `lines`: the line there of each external it uses."""
    after: list[str] | None = None
    where: ComposeFile | None = None
    creates: set[tuple[str, str]] = set()
    uses: set[tuple[str, str]] = set()
    for cf in files:
        block = as_mapping(cf.doc.get(xvigo.KEY))
        if "after" not in block or cf.fragment:
            continue
        options, _ = xvigo.parse({"after": block["after"]}, None, cf.stack)
        after = [*(after or []), *options.after]
        where = where or cf
    for cf in files:
        if cf.fragment:
            continue
        got = xvigo.shared(cf.doc, cf.stack)
        creates |= got.creates
        uses |= got.uses
        where = where or cf
    if where is None:
        return None
    lines = []
    for kind, name in sorted(uses):
        decls = as_mapping(where.doc.get(kind))
        key = next((k for k, d in decls.items() if name in (str(k), str(as_mapping(d).get(
            "name"))) or name == str(as_mapping(as_mapping(d).get("external")).get("name"))), None)
        lines.append([kind, name, key_line(decls, key) if key is not None
                      else key_line(where.doc, kind)])
    return {"stack": where.stack, "rel": where.rel, "after": after,
            "after_line": path_line(where.doc, f"{xvigo.KEY}.after"),
            "creates": sorted(creates), "uses": sorted(uses), "lines": lines}


@tree_rule(_order_facts)
def _xvigo_order(stacks: list[dict | None]) -> Iterator[Finding]:
    """x-vigo.after across the stacks of a host: names that are no stack, and cycles (the
    chain is named at every stack of it)."""
    facts = {f["stack"]: f for f in stacks if f is not None}
    after = {stack: list(f["after"]) for stack, f in facts.items() if f["after"] is not None}
    shares = {stack: xvigo.Shared(frozenset(map(tuple, f["creates"])),
                                  frozenset(map(tuple, f["uses"])))
              for stack, f in facts.items()}
    for stack, kind, name in xvigo.implicit_after(shares, (PROXY,))[1]:
        f = facts[stack]
        line = next((at for k, n, at in f["lines"] if (k, n) == (kind, name)), None)
        what = (f"the external {kind[:-1]} '{name}' is created by no stack of this host: the "
                "stack fails to start unless it exists on the host")
        fix = (f"Let a stack create it (that stack is then applied first), or create it on "
               f"the host once (`docker {kind[:-1]} create {name}`).")
        yield Finding("shared-resource", WARNING, f["rel"], line, f"{who(stack)}: {what}", fix)
    for name, why in sorted(xvigo.order_problems(after, set(facts)).items()):
        f = facts[name]
        what, _, fix = why.partition("; fix: ")
        yield finding(Place(name, f["rel"]), "x-vigo-order", f["after_line"], None, what,
                      fix[:1].upper() + fix[1:] + ".")
