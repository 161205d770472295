"""Records: the part of `dataclasses` vigo uses, without its cost at import.

`dataclasses` imports `inspect` (and with it `ast`, `dis`, `tokenize`), and each decorated class
compiles its generated methods with one `exec` each when its module is imported: together about
20 ms of an idle `vigo apply` that uses neither. A record builds no code when its class is
made: `__repr__`, `__eq__`, `__hash__` and the frozen `__setattr__`/`__delattr__` are small
closures over the class's field names, and `__init__` is compiled once per class, after its
first GENERIC_INSTANCES instances (those are set up by a loop over the fields: a class a run
makes a few of costs no compile at all).

What a record is, against a dataclass of the same definition (tests/unit/test_records.py holds
the two side by side):

- `@record` or `@record(frozen=True)`; fields are the class's own annotations in order (after
  those of a record base class), except `ClassVar[...]` ones. Annotations are read as written:
  strings under `from __future__ import annotations`, and `Field.type` is that string.
- `__init__(self, <fields>)`: positional or keyword, the same defaults and factories, the same
  TypeError texts (`Name.__init__() missing 1 required positional argument: 'x'`), then
  `__post_init__()` when the class defines one. A field with `init=False` and a factory is set
  from it; with `init=False` and a default it reads the class attribute, as in a dataclass.
- `__repr__`: `Name(a=1, b='x')` (the class's `__qualname__`), `repr=False` fields left out.
- `__eq__`: same class, then the `compare=True` fields as a tuple; else NotImplemented.
- frozen: assigning or deleting any attribute raises `FrozenInstanceError` (an AttributeError);
  `object.__setattr__` still works (what `__post_init__` uses). `__hash__` hashes the tuple of
  the compare fields. A mutable record has `__hash__ = None` (unhashable), like a dataclass.
- `__match_args__`: the `__init__` fields. Methods the class defines itself are kept
  (a frozen class that defines `__setattr__` or `__delattr__` is a TypeError).
- `field()`, `fields()`, `replace()`, `asdict()` and `MISSING` behave like dataclasses' for the
  options named here; `kw_only`, `slots`, `order`, `InitVar`, `metadata` are not supported.

Not the same: a class without a docstring keeps `__doc__` None (a dataclass writes its
signature there, with `inspect`), and until it is compiled `__init__` is a stub taking
`(*args, **kwargs)`.
"""

from __future__ import annotations

from _thread import get_ident
from collections.abc import Callable
from operator import attrgetter
from typing import Any, ClassVar, TypeVar, dataclass_transform, get_origin, overload

__all__ = ["MISSING", "Field", "FrozenInstanceError", "asdict", "field", "fields", "is_record",
           "record", "replace"]

T = TypeVar("T")


class _Missing:
    """The type of MISSING: no default, no factory."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_FACTORY = object()  # the __init__ default that stands for "call the factory"
_FIELDS = "__record_fields__"  # the class attribute: every Field, ClassVar ones left out


class FrozenInstanceError(AttributeError):
    """An assignment to (or deletion of) an attribute of a frozen record."""


class Field:
    """One field of a record: its name, annotation as written, default or factory, options."""

    __slots__ = ("compare", "default", "default_factory", "init", "name", "repr", "type")

    def __init__(self, default: Any, default_factory: Any, init: bool, repr: bool,
                 compare: bool) -> None:
        self.name = ""
        self.type: Any = None
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr
        self.compare = compare

    def __repr__(self) -> str:
        return (f"Field(name={self.name!r},type={self.type!r},default={self.default!r},"
                f"default_factory={self.default_factory!r},init={self.init!r},"
                f"repr={self.repr!r},compare={self.compare!r})")


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING,
          init: bool = True, repr: bool = True, compare: bool = True) -> Any:
    """A field's options, as the class body's value of the field: `x: list = field(...)`."""
    if default is not MISSING and default_factory is not MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, init, repr, compare)


def _is_classvar(annotation: object) -> bool:
    """`ClassVar`, `ClassVar[...]`, written as a string (`typing.ClassVar[int]` too) or not."""
    if isinstance(annotation, str):
        head = annotation.strip().partition("[")[0].strip()
        return head.rpartition(".")[2] == "ClassVar"
    return annotation is ClassVar or get_origin(annotation) is ClassVar


def _collect(cls: type) -> tuple[Field, ...]:
    """The record fields of `cls`: its record bases' (in MRO order, overridden by name), then
    its own annotations; sets or removes the class attributes the way dataclasses do."""
    by_name: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for f in base.__dict__.get(_FIELDS, ()):
            by_name[f.name] = f
    own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 (inspect: the cost avoided)
    for name, annotation in own.items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        if isinstance(value, Field):
            f = value
            if f.default is MISSING:
                delattr(cls, name)  # a factory, or no default: no class attribute
            else:
                setattr(cls, name, f.default)
        else:
            f = Field(value, MISSING, True, True, True)
        f.name = name
        f.type = annotation
        if f.default is not MISSING and type(f.default).__hash__ is None:
            raise ValueError(f"mutable default {type(f.default)} for field {name} is not "
                             "allowed: use default_factory")
        by_name[name] = f
    for name, value in cls.__dict__.items():
        if isinstance(value, Field) and name not in own:
            raise TypeError(f"{name!r} is a field but has no type annotation")
    return tuple(by_name.values())


def _init_source(cls: type, specs: tuple[Field, ...], frozen: bool
                 ) -> tuple[str, dict[str, Any]]:
    """The text of `cls.__init__` and the names it reads (defaults, factories, the setter)."""
    names: dict[str, Any] = {"_FACTORY": _FACTORY, "_setattr": object.__setattr__}
    params = ["self"]
    body = []
    for f in specs:
        if f.default_factory is not MISSING:
            names[f"_dflt_{f.name}"] = f.default_factory
            if f.init:
                params.append(f"{f.name}=_FACTORY")
                value = f"_dflt_{f.name}() if {f.name} is _FACTORY else {f.name}"
            else:
                value = f"_dflt_{f.name}()"
        elif f.init:
            if f.default is MISSING:
                params.append(f.name)
            else:
                names[f"_dflt_{f.name}"] = f.default
                params.append(f"{f.name}=_dflt_{f.name}")
            value = f.name
        else:
            continue  # init=False, no factory: the class attribute (or nothing) is read
        body.append(f"_setattr(self, {f.name!r}, {value})" if frozen
                    else f"self.{f.name} = {value}")
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    lines = "\n".join("        " + line for line in body or ["pass"])
    source = (f"def __create__({', '.join(names)}):\n"
              f"    def __init__({', '.join(params)}):\n{lines}\n"
              "    return __init__\n")
    return source, names


def _compile_init(cls: type, specs: tuple[Field, ...], frozen: bool) -> Callable[..., None]:
    source, names = _init_source(cls, specs, frozen)
    scope: dict[str, Any] = {}
    exec(source, {"__builtins__": __builtins__}, scope)  # one per class, on first use
    init = scope["__create__"](**names)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    return init


GENERIC_INSTANCES = 16  # a class's first instances are set up without compiling __init__


def _lazy_init(cls: type, specs: tuple[Field, ...], frozen: bool) -> Callable[..., None]:
    """A stub `__init__`: the first GENERIC_INSTANCES well-formed calls set the fields by a
    loop over them (most classes of a run make a few instances: no compile at all); a later
    call, or any call the loop does not bind (a missing or unknown argument: the compiled
    one raises the exact TypeError), compiles the real one, puts it on the class and calls it.
    """
    params = tuple(f.name for f in specs if f.init)
    index = {name: i for i, name in enumerate(params)}
    steps = tuple((f.name, f.init, f.default, f.default_factory) for f in specs
                  if f.init or f.default_factory is not MISSING)
    post = hasattr(cls, "__post_init__")
    made = 0

    def compiled(self: Any, *args: Any, **kwargs: Any) -> None:
        init = _compile_init(cls, specs, frozen)
        cls.__init__ = init  # type: ignore[misc]
        init(self, *args, **kwargs)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal made
        made += 1
        if made > GENERIC_INSTANCES or len(args) > len(params) or cls.__init__ is not __init__ \
                or any(index.get(k, -1) < len(args) for k in kwargs):
            return compiled(self, *args, **kwargs)
        given = dict(zip(params, args, strict=False))  # args may be fewer
        given.update(kwargs)
        values = []
        for name, init, default, factory in steps:
            if init and name in given:
                values.append((name, given[name]))
            elif factory is not MISSING:
                values.append((name, factory()))
            elif default is not MISSING:
                values.append((name, default))
            else:  # a required argument missing: the compiled __init__ says so
                return compiled(self, *args, **kwargs)
        setter = object.__setattr__ if frozen else setattr
        for name, value in values:
            setter(self, name, value)
        if post:
            self.__post_init__()

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """Reads `names` of an object as a tuple (attrgetter, which returns a bare value for one)."""
    if len(names) > 1:
        return attrgetter(*names)
    if names:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    return lambda obj: ()


_repr_running: set[tuple[int, int]] = set()


def _make_repr(names: tuple[str, ...]) -> Callable[[Any], str]:
    def __repr__(self: Any) -> str:
        key = (id(self), get_ident())
        if key in _repr_running:
            return "..."  # a record that contains itself, as reprlib.recursive_repr prints it
        _repr_running.add(key)
        try:
            parts = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        finally:
            _repr_running.discard(key)
        return f"{self.__class__.__qualname__}({parts})"
    return __repr__


def _make_eq(get: Callable[[Any], tuple[Any, ...]]) -> Callable[[Any, Any], Any]:
    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return get(self) == get(other)
        return NotImplemented
    return __eq__


def _make_hash(get: Callable[[Any], tuple[Any, ...]]) -> Callable[[Any], int]:
    def __hash__(self: Any) -> int:
        return hash(get(self))
    return __hash__


def _make_frozen(cls: type, names: frozenset[str]
                 ) -> tuple[Callable[[Any, str, Any], None], Callable[[Any, str], None]]:
    """Frozen `__setattr__`/`__delattr__`: refuse on the class itself (any name) and on a field
    of a subclass, as dataclasses do."""

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    return __setattr__, __delattr__


def _process(cls: type[T], frozen: bool) -> type[T]:
    specs = _collect(cls)
    seen_default = False
    for f in specs:
        if not f.init:
            continue
        if f.default is MISSING and f.default_factory is MISSING:
            if seen_default:
                raise TypeError(f"non-default argument {f.name!r} follows default argument")
        else:
            seen_default = True
    own = cls.__dict__
    setattr(cls, _FIELDS, specs)
    cls.__record_frozen__ = frozen  # type: ignore[attr-defined]

    def put(name: str, value: object) -> None:
        if name not in own:
            setattr(cls, name, value)

    put("__init__", _lazy_init(cls, specs, frozen))
    put("__repr__", _make_repr(tuple(f.name for f in specs if f.repr)))
    compared = _getter(tuple(f.name for f in specs if f.compare))
    put("__eq__", _make_eq(compared))
    explicit = own.get("__hash__", MISSING)
    if explicit is MISSING or (explicit is None and "__eq__" in own):
        # (a class body that defines __eq__ and no __hash__ gets __hash__ = None from Python)
        cls.__hash__ = _make_hash(compared) if frozen else None  # type: ignore[assignment]
    if frozen:
        for name in ("__setattr__", "__delattr__"):
            if name in own:
                raise TypeError(f"Cannot overwrite attribute {name} in class {cls.__name__}")
        setter, deleter = _make_frozen(cls, frozenset(f.name for f in specs))
        cls.__setattr__ = setter  # type: ignore[method-assign,assignment]
        cls.__delattr__ = deleter  # type: ignore[method-assign,assignment]
    put("__match_args__", tuple(f.name for f in specs if f.init))
    return cls


@overload
def record(cls: type[T], /) -> type[T]: ...
@overload
def record(*, frozen: bool = False) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(field_specifiers=(field, Field))
def record(cls: type[T] | None = None, /, *, frozen: bool = False) -> Any:
    """Make `cls` a record (module docstring): `@record` or `@record(frozen=True)`."""
    if cls is None:
        return lambda c: _process(c, frozen)
    return _process(cls, frozen)


def is_record(obj: object) -> bool:
    """Whether `obj` is a record class or an instance of one."""
    cls = obj if isinstance(obj, type) else type(obj)
    return hasattr(cls, _FIELDS)


def fields(cls_or_obj: object) -> tuple[Field, ...]:
    """The fields of a record class or instance, in order (ClassVar annotations are none)."""
    try:
        return getattr(cls_or_obj, _FIELDS)
    except AttributeError:
        raise TypeError("must be called with a record type or instance") from None


def replace(obj: T, /, **changes: Any) -> T:
    """A new record like `obj` with `changes` (the same __init__, so __post_init__ runs)."""
    try:
        specs = getattr(obj, _FIELDS)
    except AttributeError:
        raise TypeError("replace() should be called on record instances") from None
    for f in specs:
        if not f.init:
            if f.name in changes:
                raise ValueError(f"field {f.name} is declared with init=False, it cannot be "
                                 "specified with replace()")
        elif f.name not in changes:
            changes[f.name] = getattr(obj, f.name)
    return obj.__class__(**changes)


_ATOMIC = frozenset({type(None), bool, int, float, complex, str, bytes, type})


def asdict(obj: object) -> dict[str, Any]:
    """A record as a dict of its fields, recursively: records in it, lists, tuples and dicts
    are converted, other values deep-copied (what `dataclasses.asdict` does)."""
    if not hasattr(type(obj), _FIELDS):
        raise TypeError("asdict() should be called on record instances")
    return _asdict(obj)


def _asdict(obj: Any) -> Any:
    cls = type(obj)
    if cls in _ATOMIC:
        return obj
    specs = getattr(cls, _FIELDS, None)
    if specs is not None:
        return {f.name: _asdict(getattr(obj, f.name)) for f in specs}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return cls(*[_asdict(v) for v in obj])  # a namedtuple: positional
    if isinstance(obj, list | tuple):
        return cls(_asdict(v) for v in obj)
    if isinstance(obj, dict):
        if hasattr(cls, "default_factory"):  # a defaultdict takes its factory first
            out = cls(obj.default_factory)
            for k, v in obj.items():
                out[_asdict(k)] = _asdict(v)
            return out
        return cls((_asdict(k), _asdict(v)) for k, v in obj.items())
    import copy  # only for other leaves (a set, a Path): dataclasses.asdict deep-copies them

    return copy.deepcopy(obj)
