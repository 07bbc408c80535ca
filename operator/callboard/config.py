"""One way to declare a command's settings: dataclass fields that name their variable and say what they do.

Every setting of ``callboard serve``, ``sidecar`` and ``operator`` is a typed field of a settings
dataclass, declared with :func:`setting`: its default, its ``CALLBOARD_*`` variable, its help
text (with the unit) and how a string becomes its value sit in one place. :func:`options` lists
them; the CLI turns that list into click options (:mod:`callboard.cli._options`), the README
tables are generated from it, and :func:`build` turns flag and environment values into the
settings object. So a default, a variable name or a help text is written once and cannot drift
between the code, ``--help`` and the docs.

A settings class holds fields with :func:`setting` and, one level down, groups: fields whose
type is another such dataclass (``registry: RegistrySettings``), so the in-code object stays
grouped by concern. Fields without :func:`setting` are in-code tuning that no command exposes.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from callboard.errors import ConfigurationError

__all__ = [
    "ENV_PREFIX",
    "Option",
    "at_least",
    "build",
    "from_environ",
    "options",
    "parse_bool",
    "parse_float",
    "parse_int",
    "read_token",
    "setting",
]

#: Every variable a command reads starts with it (``CALLBOARD_TTL``); the flag is the rest.
ENV_PREFIX = "CALLBOARD_"

_KEY = "callboard.setting"

_T = TypeVar("_T")


class _Meta(NamedTuple):
    env: tuple[str, ...]
    help: str
    parse: Callable[[Any], object] | None
    flag: str | None
    short: str | None
    default_text: str | None
    metavar: str | None


def setting(
    default: Any = dataclasses.MISSING,
    *,
    env: str | Sequence[str],
    help: str,
    parse: Callable[[Any], object] | None = None,
    flag: str | None = None,
    short: str | None = None,
    default_text: str | None = None,
    metavar: str | None = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field that a command sets from ``--flag`` or its environment variable.

    ``env`` is the variable, or several read in order (the first set one wins, e.g. a
    ``CALLBOARD_*`` name and then a downward-API fallback). ``flag`` defaults to the first name
    without the prefix (``CALLBOARD_LEASE_NAME`` -> ``--lease-name``). ``parse`` turns the raw
    string into the value (raise ``ValueError`` with the reason); by default it follows the
    field's type. ``default_text`` documents a default that is not a plain value ("unlimited");
    ``metavar`` names the value's shape in ``--help`` (``MODULE:FUNCTION``).
    """
    names = (env,) if isinstance(env, str) else tuple(env)
    meta = {_KEY: _Meta(names, help, parse, flag, short, default_text, metavar)}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Option(NamedTuple):
    """One setting as the CLI and the docs see it: its variables, flag, default and help."""

    env: tuple[str, ...]
    """Variables read, in order; the first is the setting's name in messages and docs."""
    flag: str
    short: str | None
    group: str | None
    """The group field of the settings class it belongs to; None for a top-level field."""
    attr: str
    default: object
    help: str
    parse: Callable[[Any], object]
    metavar: str
    multiple: bool
    """A tuple value: repeat the flag; the variable holds the items separated by spaces."""
    boolean: bool
    """An on/off value: ``--flag/--no-flag``; the variable is true/false, 1/0, yes/no, on/off."""
    default_text: str

    @property
    def name(self) -> str:
        return self.env[0]

    @property
    def param(self) -> str:
        """The keyword the click command receives the value under."""
        return self.flag.replace("-", "_")

    def read(self, raw: object) -> object:
        """The value for ``raw`` (a string, or a tuple of them for a multiple option).

        Raises :class:`~callboard.errors.ConfigurationError` naming the variable and the flag.
        """
        try:
            return self.parse(raw)
        except (TypeError, ValueError, ConfigurationError) as exc:
            shown = " ".join(raw) if isinstance(raw, tuple) else raw
            raise ConfigurationError(f"{self.name}={shown!r} (--{self.flag}): {exc}") from exc


def parse_float(raw: str) -> float:
    """A finite float: ``nan`` or ``inf`` as a number of seconds is always a mistake."""
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def parse_int(raw: str) -> int:
    """A whole number, with a message that says so (``int()``'s names a "literal" and a base)."""
    try:
        return int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def parse_bool(raw: str | bool) -> bool:
    """The spellings click accepts for a boolean flag's variable."""
    if isinstance(raw, bool):
        return raw
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("use true or false (1/0, yes/no, on/off)")


def at_least(
    kind: Callable[[str], float], minimum: float, *, exclusive: bool = False
) -> Callable[[str], Any]:
    """A parser of ``kind`` that refuses values below ``minimum`` (or equal, if ``exclusive``)."""

    def parse(raw: str) -> float:
        value = kind(raw)
        if value < minimum or (exclusive and value == minimum):
            raise ValueError(f"must be {'>' if exclusive else '>='} {minimum:g}")
        return value

    return parse


def _enum_parser(kind: type[enum.Enum]) -> Callable[[str], object]:
    def parse(raw: str) -> object:
        try:
            return kind(raw)
        except ValueError:
            *others, last = (str(m.value) for m in kind)
            raise ValueError(f"use {', '.join(others)} or {last}" if others else f"use {last}") from None

    return parse


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _type_info(hint: Any) -> tuple[Callable[[Any], object] | None, str, bool, bool]:
    """Default parser, metavar, multiple, boolean for a field's type."""
    hint = _strip_optional(hint)
    if hint is bool:
        return parse_bool, "BOOLEAN", False, True
    if hint is int:
        return parse_int, "INTEGER", False, False
    if hint is float:
        return parse_float, "FLOAT", False, False
    if hint is str:
        return str, "TEXT", False, False
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_parser(hint), "[" + "|".join(str(m.value) for m in hint) + "]", False, False
    if typing.get_origin(hint) is tuple:
        return tuple, "TEXT", True, False
    return None, "TEXT", False, False


def _is_group(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _default_of(f: dataclasses.Field[Any]) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"setting {f.name} needs a default")


def _shown(default: object) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, enum.Enum):
        return str(default.value)
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, tuple):
        return " ".join(map(str, default)) or "none"
    return str(default) if default != "" else "unset"


def _iter_options(cls: type[Any], group: str | None) -> Iterator[Option]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_KEY)
        if meta is None:
            if group is None and _is_group(hints[f.name]):
                yield from _iter_options(hints[f.name], f.name)
            continue
        parse, metavar, multiple, boolean = _type_info(hints[f.name])
        parse = meta.parse or parse
        if parse is None:
            raise TypeError(f"setting {cls.__name__}.{f.name} needs parse=: no default parser for its type")
        default = _default_of(f)
        yield Option(
            env=meta.env,
            flag=meta.flag or meta.env[0].removeprefix(ENV_PREFIX).lower().replace("_", "-"),
            short=meta.short,
            group=group,
            attr=f.name,
            default=default,
            help=meta.help,
            parse=parse,
            metavar=meta.metavar or metavar,
            multiple=multiple,
            boolean=boolean,
            default_text=meta.default_text or _shown(default),
        )


_CACHE: dict[type[Any], tuple[Option, ...]] = {}


def options(cls: type[Any]) -> tuple[Option, ...]:
    """Every setting of ``cls`` and of its groups, in declaration order (the order of ``--help``)."""
    if cls not in _CACHE:
        found = tuple(_iter_options(cls, None))
        names = [name for opt in found for name in opt.env if name.startswith(ENV_PREFIX)]
        duplicated = {n for n in names if names.count(n) > 1}
        if duplicated:
            raise TypeError(f"{cls.__name__}: variables declared twice: {sorted(duplicated)}")
        _CACHE[cls] = found
    return _CACHE[cls]


def from_environ(cls: type[Any], environ: Mapping[str, str]) -> dict[str, object]:
    """The raw values of ``cls``'s settings in ``environ``, keyed by name, for :func:`build`.

    Unset and blank variables are left out (the default applies). A multiple option's variable
    holds its items separated by white space, as click reads it.
    """
    values: dict[str, object] = {}
    for opt in options(cls):
        for name in opt.env:
            raw = environ.get(name, "").strip()
            if raw:
                values[opt.name] = tuple(raw.split()) if opt.multiple else raw
                break
    return values


def build(cls: type[_T], values: Mapping[str, object]) -> _T:
    """``cls`` with the given raw values (by setting name); the others keep their defaults.

    Strings (and tuples of strings for multiple options) are parsed; other values (click's
    booleans) are taken as they are. Raises :class:`~callboard.errors.ConfigurationError`
    naming the variable whose value cannot be read.
    """
    groups: dict[str | None, dict[str, object]] = {}
    for opt in options(cls):
        if opt.name not in values:
            continue
        raw = values[opt.name]
        if isinstance(raw, str):
            raw = raw.strip()
            if not raw:
                continue
        elif isinstance(raw, tuple):
            if not raw:
                continue
        elif not opt.boolean:
            raise TypeError(f"{opt.name}: a raw value must be a string, got {raw!r}")
        groups.setdefault(opt.group, {})[opt.attr] = opt.read(raw)
    kwargs = groups.pop(None, {})
    hints = typing.get_type_hints(cls)
    for group, values_of_group in groups.items():
        assert group is not None
        kwargs[group] = hints[group](**values_of_group)
    return cls(**kwargs)


def read_token(token: str | None, token_file: str | None, name: str) -> str | None:
    """A bearer token given as a value or as a file (a mounted Kubernetes Secret); None: none.

    The file's content is stripped of surrounding white space (``kubectl create secret
    --from-file`` keeps a trailing newline). A missing, unreadable or blank file, or a blank
    token, is a :class:`~callboard.errors.ConfigurationError` naming ``name`` (the variable):
    an API that silently runs without the token it was told to require is open to everyone.
    """
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as file:
                token = file.read()
        except OSError as exc:
            raise ConfigurationError(f"{name}_FILE={token_file!r}: cannot read it: {exc}") from exc
        if not token.strip():
            raise ConfigurationError(f"{name}_FILE={token_file!r}: the file is empty")
    if token is None:
        return None
    if not token.strip():
        raise ConfigurationError(f"{name}: must not be blank (leave it unset to turn auth off)")
    return token.strip()
