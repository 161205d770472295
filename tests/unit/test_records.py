"""vigo.core.records against dataclasses: the same class bodies, built by each, behave alike."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from collections import defaultdict, namedtuple
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from vigo.core import records

Pair = namedtuple("Pair", "left right")


class Kit:
    """One implementation: the decorator, field(), replace(), fields(), asdict(), MISSING."""

    def __init__(self, module: Any, decorator: Callable[..., Any]) -> None:
        self.module = module
        self.deco = decorator
        self.field = module.field
        self.replace = module.replace
        self.fields = module.fields
        self.asdict = module.asdict
        self.MISSING = module.MISSING


DC = Kit(dataclasses, dataclasses.dataclass)
REC = Kit(records, records.record)


# --- the class bodies: each builds its class with one kit ---------------------------------------

@pytest.fixture(autouse=True, params=["generic", "compiled"])
def init_path(request, monkeypatch) -> str:
    """Every test twice: a class's first instances set up by the generic loop, and every
    instance by the compiled `__init__` (GENERIC_INSTANCES 0)."""
    if request.param == "compiled":
        monkeypatch.setattr(records, "GENERIC_INSTANCES", 0)
    return request.param


def plain(k: Kit) -> type:
    @k.deco
    class Plain:
        x: int
        y: str = "a"
    return Plain


def frozen(k: Kit) -> type:
    @k.deco(frozen=True)
    class Frozen:
        kind: ClassVar[str] = "frozen"
        other: ClassVar = 1
        spelled: typing.ClassVar[int] = 2
        a: int
        b: str = "b"
        c: tuple[int, ...] = ()
        d: list[int] = k.field(default_factory=list)
        e: dict[str, Any] = k.field(default_factory=dict, compare=False, repr=False)
        f: int = k.field(default=7, repr=False)
        g: list[str] = k.field(default_factory=lambda: ["g"], init=False)
    return Frozen


def posted(k: Kit) -> type:
    @k.deco(frozen=True)
    class Posted:
        stack: str
        ok: bool
        reason: str = ""

        def __post_init__(self) -> None:
            if not self.reason:
                object.__setattr__(self, "reason", "fine" if self.ok else "failed")
    return Posted


def empty(k: Kit) -> type:
    @k.deco(frozen=True)
    class Empty:
        pass
    return Empty


def single(k: Kit) -> type:
    @k.deco(frozen=True)
    class Single:
        only: str
    return Single


def fixed(k: Kit) -> type:
    @k.deco
    class Fixed:
        x: int
        n: int = k.field(default=5, init=False)
        log: list[str] = k.field(default_factory=list, init=False, repr=False)
    return Fixed


def custom(k: Kit) -> type:
    @k.deco(frozen=True)
    class Custom:
        x: int

        def __repr__(self) -> str:
            return "custom"

        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return 42
    return Custom


def derived(k: Kit) -> type:
    @k.deco(frozen=True)
    class Base:
        x: int
        y: int = 1

    @k.deco(frozen=True)
    class Derived(Base):
        z: int = 2
        y: int = 3
    return Derived


def nested(k: Kit) -> type:
    @k.deco(frozen=True)
    class Leaf:
        name: str
        tags: frozenset[str] = frozenset()

    @k.deco
    class Tree:
        leaf: Leaf
        leaves: list[Leaf] = k.field(default_factory=list)
        pairs: tuple[Any, ...] = ()
        by_name: dict[str, Any] = k.field(default_factory=dict)
        counts: Any = None
        paths: set[Path] = k.field(default_factory=set)
    Tree.Leaf = Leaf  # type: ignore[attr-defined]
    return Tree


BODIES = [plain, frozen, posted, empty, single, fixed, custom, derived]


def build(body: Callable[[Kit], type]) -> tuple[type, type]:
    return body(DC), body(REC)


def outcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    """What calling fn gives, comparable across kits: ('ok', value) or the error's builtin
    class and text (dataclasses' FrozenInstanceError and ours are both AttributeErrors)."""
    try:
        return ("ok", fn())
    except Exception as exc:
        builtin = next(c for c in type(exc).__mro__ if c.__module__ == "builtins")
        return ("raise", builtin, str(exc))


# --- __init__, __repr__, __post_init__ ----------------------------------------------------------

INITS: list[tuple[Callable[[Kit], type], tuple[Any, ...], dict[str, Any]]] = [
    (plain, (1,), {}),
    (plain, (1, "z"), {}),
    (plain, (), {"y": "q", "x": 2}),
    (plain, (), {}),
    (plain, (1, "z", 3), {}),
    (plain, (1,), {"x": 1}),
    (plain, (1,), {"nope": 1}),
    (frozen, (1,), {}),
    (frozen, (1, "x", (2,), [3], {"k": "v"}, 9), {}),
    (frozen, (1,), {"g": ["no"]}),
    (frozen, (), {"b": "only"}),
    (posted, ("web", True), {}),
    (posted, ("web", False), {}),
    (posted, ("web", False, "held"), {}),
    (empty, (), {}),
    (empty, (1,), {}),
    (single, ("s",), {}),
    (fixed, (1,), {}),
    (fixed, (1,), {"n": 2}),
    (custom, (1,), {}),
    (derived, (1,), {}),
    (derived, (1, 2, 3), {}),
    (derived, (), {"z": 0, "x": 5}),
]


@pytest.mark.parametrize(("body", "args", "kwargs"), INITS)
def test_init_and_repr_as_dataclasses(body: Callable[[Kit], type], args: tuple[Any, ...],
                                      kwargs: dict[str, Any]) -> None:
    dc, rec = build(body)
    got = outcome(lambda: repr(rec(*args, **kwargs)))
    assert got == outcome(lambda: repr(dc(*args, **kwargs)))
    # the second instance (the compiled __init__, no longer the stub) says the same
    assert outcome(lambda: repr(rec(*args, **kwargs))) == got


def test_factories_give_each_instance_its_own_value() -> None:
    cls = frozen(REC)
    one, two = cls(1), cls(1)
    assert one.d == [] and one.d is not two.d and one.g == ["g"] and one.g is not two.g


def test_init_is_compiled_once_after_the_first_instances(init_path) -> None:
    cls = plain(REC)
    stub = cls.__dict__["__init__"]
    assert stub.__qualname__.endswith("Plain.__init__")
    for i in range(records.GENERIC_INSTANCES):  # a few instances: nothing compiled
        assert cls(i).x == i
        assert cls.__dict__["__init__"] is stub
    cls(1)
    compiled = cls.__dict__["__init__"]
    assert compiled is not stub and compiled.__qualname__ == stub.__qualname__
    cls(2)
    assert cls.__dict__["__init__"] is compiled


def test_a_call_the_loop_cannot_bind_is_the_compiled_init_s(init_path) -> None:
    """A missing, unknown or doubled argument: the compiled __init__ raises dataclasses'
    TypeError, and from then on it is the class's."""
    for call in ((), (1, 2, 3, 4, 5, 6, 7, 8), ("a",), ()):
        got = []
        for k in (DC, REC):
            cls = plain(k)
            kwargs = {"a": 1} if call == ("a",) else {"nope": 1} if call == () else {}
            try:
                cls(*((1,) if call == ("a",) else call), **kwargs)
            except TypeError as exc:
                got.append(str(exc).replace("plain.<locals>.", ""))
        assert len(got) == 2 and got[0] == got[1]
    cls = plain(REC)
    with pytest.raises(TypeError):
        cls()
    assert cls.__dict__["__init__"].__name__ == "__init__"


def test_nested_class_repr_uses_its_qualname() -> None:
    dc, rec = build(plain)
    assert repr(rec(1)) == repr(dc(1))
    assert repr(rec(1)).startswith("plain.<locals>.Plain(")


def test_a_record_that_holds_itself_prints_as_dataclasses_do() -> None:
    got = []
    for k in (DC, REC):
        cls = nested(k)
        tree = cls(cls.Leaf("a"))
        tree.leaves.append(tree)  # type: ignore[arg-type]
        got.append(repr(tree).replace("nested.<locals>.", ""))
    assert got[0] == got[1] and "..." in got[1]


def test_pattern_matching_reads_match_args() -> None:
    for body in BODIES:
        dc, rec = build(body)
        assert rec.__match_args__ == dc.__match_args__, body.__name__
    match frozen(REC)(1, "two"):
        case object(a=1, b="two"):
            pass
        case _:
            pytest.fail("no match")
    cls = plain(REC)
    match cls(1, "y"):
        case cls(x, y):  # type: ignore[misc]
            assert (x, y) == (1, "y")


# --- __eq__, __hash__ ---------------------------------------------------------------------------

EQUALS: list[tuple[Callable[[Kit], type], tuple[Any, ...], tuple[Any, ...]]] = [
    (plain, (1,), (1,)),
    (plain, (1,), (2,)),
    (frozen, (1,), (1,)),
    (frozen, (1, "b", (), [], {"differs": 1}), (1, "b", (), [], {})),  # e: compare=False
    (frozen, (1, "b", (), [1]), (1, "b", (), [2])),
    (frozen, (1, "b", (), [], {}, 8), (1, "b", (), [], {}, 9)),  # f: compared, not printed
    (posted, ("w", True), ("w", True, "fine")),
    (empty, (), ()),
    (single, ("a",), ("a",)),
    (single, ("a",), ("b",)),
    (fixed, (1,), (1,)),
    (custom, (1,), (2,)),
    (derived, (1,), (1, 3)),
    (derived, (1,), (1, 3, 3)),
]


@pytest.mark.parametrize(("body", "left", "right"), EQUALS)
def test_eq_and_hash_as_dataclasses(body: Callable[[Kit], type], left: tuple[Any, ...],
                                    right: tuple[Any, ...]) -> None:
    dc, rec = build(body)
    assert (rec(*left) == rec(*right)) == (dc(*left) == dc(*right))
    assert (rec(*left) != rec(*right)) == (dc(*left) != dc(*right))
    assert (rec.__hash__ is None) == (dc.__hash__ is None)
    if rec.__hash__ is not None:
        # the same tuple hashed, so the same number (a list field makes both unhashable)
        assert outcome(lambda: hash(rec(*left))) == outcome(lambda: hash(dc(*left)))


def test_eq_needs_the_same_class() -> None:
    cls, other = plain(REC), plain(REC)
    assert cls(1) != other(1)
    assert cls(1).__eq__(1) is NotImplemented
    assert cls(1) != (1, "a")


# --- frozen -------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [frozen, posted, empty, single, derived])
def test_frozen_refuses_assignment_and_deletion(body: Callable[[Kit], type]) -> None:
    dc, rec = build(body)
    args = {frozen: (1,), posted: ("w", True), empty: (), single: ("s",), derived: (1,)}[body]
    for name in ("x", "a", "stack", "only", "new"):
        assert outcome(lambda n=name: setattr(rec(*args), n, 1)) == \
            outcome(lambda n=name: setattr(dc(*args), n, 1))
        assert outcome(lambda n=name: delattr(rec(*args), n)) == \
            outcome(lambda n=name: delattr(dc(*args), n))
    with pytest.raises(records.FrozenInstanceError, match="cannot assign to field 'new'"):
        rec(*args).new = 1
    obj = rec(*args)
    object.__setattr__(obj, "new", 2)  # what a __post_init__ does
    assert obj.new == 2


def test_a_plain_subclass_of_a_frozen_record_may_add_attributes() -> None:
    for k in (DC, REC):
        class Sub(single(k)):  # type: ignore[misc]
            pass
        obj = Sub("s")
        obj.extra = 1
        assert obj.extra == 1
        with pytest.raises(AttributeError, match="cannot assign to field 'only'"):
            obj.only = "t"


def test_mutable_records_assign() -> None:
    obj = plain(REC)(1)
    obj.x = 5
    del obj.y  # the class attribute (the default) shows again
    assert (obj.x, obj.y) == (5, "a")


# --- class attributes, fields() -----------------------------------------------------------------

@pytest.mark.parametrize("body", BODIES)
def test_class_attributes_and_fields_as_dataclasses(body: Callable[[Kit], type]) -> None:
    dc, rec = build(body)

    def described(k: Kit, cls: type) -> list[tuple[Any, ...]]:
        out = []
        for f in k.fields(cls):
            default = "MISSING" if f.default is k.MISSING else f.default
            factory = "MISSING" if f.default_factory is k.MISSING else f.default_factory()
            has = hasattr(cls, f.name)
            out.append((f.name, f.type, default, factory, f.init, f.repr, f.compare, has,
                        getattr(cls, f.name, None)))
        return out

    assert described(REC, rec) == described(DC, dc)
    instance_args = {plain: (1,), frozen: (1,), posted: ("w", True), empty: (), single: ("s",),
                     fixed: (1,), custom: (1,), derived: (1,)}[body]
    assert [f.name for f in records.fields(rec(*instance_args))] == \
        [f.name for f in dataclasses.fields(dc(*instance_args))]
    assert getattr(rec, "kind", None) == getattr(dc, "kind", None)


def test_fields_refuses_what_is_no_record() -> None:
    with pytest.raises(TypeError, match="record type or instance"):
        records.fields(1)
    assert records.is_record(plain(REC)) and records.is_record(plain(REC)(1))
    assert not records.is_record(plain(DC)) and not records.is_record(1)


def test_field_repr_names_its_options() -> None:
    f = records.fields(frozen(REC))[4]
    assert repr(f) == ("Field(name='e',type='dict[str, Any]',default=MISSING,"
                       "default_factory=<class 'dict'>,init=True,repr=False,compare=False)")


# --- class definition errors --------------------------------------------------------------------

def bad_order(k: Kit) -> type:
    @k.deco
    class BadOrder:
        x: int = 0
        y: int
    return BadOrder


def bad_order_factory(k: Kit) -> type:
    @k.deco
    class BadOrder:
        x: list[int] = k.field(default_factory=list)
        y: int
    return BadOrder


def late_init_false(k: Kit) -> type:
    @k.deco
    class Fine:
        x: int = 0
        n: int = k.field(init=False)
        y: int = 1
    return Fine


def mutable_default(k: Kit) -> type:
    @k.deco
    class Mutable:
        x: list[int] = []  # noqa: RUF012 (the mistake under test)
    return Mutable


def mutable_field_default(k: Kit) -> type:
    @k.deco
    class Mutable:
        x: dict[str, int] = k.field(default={})
    return Mutable


def unannotated(k: Kit) -> type:
    @k.deco
    class Unannotated:
        x = k.field(default=1)
    return Unannotated


def both_defaults(k: Kit) -> type:
    @k.deco
    class Both:
        x: list[int] = k.field(default=(), default_factory=list)
    return Both


def frozen_setattr(k: Kit) -> type:
    @k.deco(frozen=True)
    class Own:
        x: int

        def __setattr__(self, name: str, value: Any) -> None:
            pass
    return Own


@pytest.mark.parametrize("body", [bad_order, bad_order_factory, late_init_false,
                                  mutable_default, mutable_field_default, unannotated,
                                  both_defaults, frozen_setattr])
def test_definition_errors_as_dataclasses(body: Callable[[Kit], type]) -> None:
    dc = outcome(lambda: body(DC).__name__)
    assert outcome(lambda: body(REC).__name__) == dc


# --- replace() ----------------------------------------------------------------------------------

REPLACES: list[tuple[Callable[[Kit], type], tuple[Any, ...], dict[str, Any]]] = [
    (plain, (1,), {"y": "new"}),
    (plain, (1,), {}),
    (plain, (1,), {"nope": 1}),
    (frozen, (1, "x", (2,)), {"a": 5, "e": {"k": 1}}),
    (frozen, (1,), {"g": ["x"]}),
    (posted, ("w", False), {"ok": True}),  # reason was set: replace keeps it
    (posted, ("w", False), {"ok": True, "reason": ""}),  # __post_init__ runs again
    (fixed, (1,), {"x": 2}),
    (fixed, (1,), {"n": 3}),
    (derived, (1,), {"y": 0}),
    (empty, (), {}),
]


@pytest.mark.parametrize(("body", "args", "changes"), REPLACES)
def test_replace_as_dataclasses(body: Callable[[Kit], type], args: tuple[Any, ...],
                                changes: dict[str, Any]) -> None:
    dc, rec = build(body)
    assert outcome(lambda: repr(records.replace(rec(*args), **changes))) == \
        outcome(lambda: repr(dataclasses.replace(dc(*args), **changes)))


def test_replace_keeps_the_factory_value_of_an_init_false_field() -> None:
    cls = fixed(REC)
    one = cls(1)
    one.log.append("x")
    assert records.replace(one, x=2).log == []  # init=False: made again, as dataclasses do
    with pytest.raises(TypeError, match="record instances"):
        records.replace(object())


# --- asdict() -----------------------------------------------------------------------------------

def tree_of(k: Kit) -> Any:
    cls = nested(k)
    leaf = cls.Leaf("a", frozenset({"t"}))
    return cls(leaf, [leaf, cls.Leaf("b")], (leaf, Pair(leaf, 2), [3]),
               {"k": leaf, "l": [leaf], "t": (1,)}, None, {Path("/x")})


def test_asdict_as_dataclasses() -> None:
    got, want = records.asdict(tree_of(REC)), dataclasses.asdict(tree_of(DC))
    assert got == want
    assert type(got["pairs"][1]) is Pair


def test_asdict_converts_a_defaultdict_keeping_its_factory() -> None:
    """As Python 3.12's dataclasses.asdict (3.11's fails: it calls defaultdict(pairs))."""
    cls = nested(REC)
    counts: defaultdict[str, list[Any]] = defaultdict(list)
    counts["n"].append(cls.Leaf("a"))
    got = records.asdict(cls(cls.Leaf("b"), counts=counts))["counts"]
    assert type(got) is defaultdict and got.default_factory is list
    assert got == {"n": [{"name": "a", "tags": frozenset()}]}


def test_asdict_copies_what_it_does_not_convert() -> None:
    tree = tree_of(REC)
    out = records.asdict(tree)
    assert out["paths"] == tree.paths and out["paths"] is not tree.paths
    assert out["leaves"] is not tree.leaves
    for not_a_record in (1, {"a": 1}, plain(REC)):
        with pytest.raises(TypeError, match="record instances"):
            records.asdict(not_a_record)
    assert records.asdict(frozen(REC)(1)) == dataclasses.asdict(frozen(DC)(1))
# --- the point: what an idle run imports --------------------------------------------------------

def test_the_idle_path_imports_neither_dataclasses_nor_inspect() -> None:
    """docs/idle.md: `dataclasses` pulls `inspect`, `ast`, `dis`, `tokenize` (~10 ms)."""
    code = ("import sys, vigo.cli.commands, vigo.host.reconcile, vigo.host.hooks\n"
            "print([m for m in ('dataclasses', 'inspect', 'ast', 'dis') if m in sys.modules])")
    src = str(Path(records.__file__).parents[2])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": src}, check=True)
    assert out.stdout.strip() == "[]"
