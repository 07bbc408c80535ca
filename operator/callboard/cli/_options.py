"""Click options and README tables generated from a settings class (:mod:`callboard.config`).

Each :class:`~callboard.config.Option` becomes one click option that reads its variable(s)
and shows them, its default and its help in ``--help``; the command hands what click resolved
(flag, else variable, else nothing) to :func:`settings_from_click`, which builds the settings
object. Precedence is therefore click's: a flag beats its variable, which beats the default
written on the field. ``python -m callboard.cli._options README.md`` rewrites the README's
configuration tables from the same list.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from callboard.config import Option, build, options
from callboard.errors import ConfigurationError

__all__ = ["LOGGING_EPILOG", "click_options", "markdown_table", "settings_from_click", "update_readme"]

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")

#: The root command's variables, named in each command's epilog so its help lists them.
LOGGING_EPILOG = (
    "Logging: CALLBOARD_LOG_LEVEL and CALLBOARD_LOG_FORMAT (text or json), "
    "options of the callboard command itself."
)


def _click_option(opt: Option) -> Callable[[_F], _F]:
    decls = [f"--{opt.flag}/--no-{opt.flag}" if opt.boolean else f"--{opt.flag}"]
    if opt.short:
        decls.insert(0, f"-{opt.short}")
    kwargs: dict[str, Any] = {
        "envvar": list(opt.env) if len(opt.env) > 1 else opt.name,
        "show_envvar": True,
        # Not also CALLBOARD_<COMMAND>_<NAME> (the root group's auto_envvar_prefix): a second,
        # undocumented name for every setting is exactly what --help must not hide.
        "allow_from_autoenv": False,
        "help": f"{opt.help}  [default: {opt.default_text}]",
    }
    if opt.boolean:
        kwargs["default"] = opt.default  # click parses the variable's true/false itself
    elif opt.multiple:
        kwargs.update(multiple=True, metavar=opt.metavar)
    else:
        kwargs.update(default=None, metavar=opt.metavar)  # None: unset, the field's default applies
    return click.option(*decls, opt.param, **kwargs)


def click_options(cls: type[Any]) -> Callable[[_F], _F]:
    """Decorate a click command with one option per setting of ``cls``, in declaration order."""

    def decorate(func: _F) -> _F:
        for opt in reversed(options(cls)):
            func = _click_option(opt)(func)
        return func

    return decorate


def settings_from_click(cls: type[_T], params: Mapping[str, object]) -> _T:
    """``cls`` from the values click resolved; a bad value is a usage error (exit code 2)."""
    values = {opt.name: params[opt.param] for opt in options(cls) if params.get(opt.param) is not None}
    try:
        return build(cls, values)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc


_PLAIN_METAVARS = frozenset({"TEXT", "INTEGER", "FLOAT", "BOOLEAN"})


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(cls: type[Any]) -> str:
    """The README table of ``cls``'s settings: variable, flag, default, meaning."""
    rows = ["| Variable | Flag | Default | Meaning |", "|---|---|---|---|"]
    for opt in options(cls):
        names = " or ".join(f"`{name}`" for name in opt.env)
        shape = "" if opt.metavar in _PLAIN_METAVARS else f" {opt.metavar}"
        flag = f"`--[no-]{opt.flag}`" if opt.boolean else f"`--{opt.flag}{shape}`"
        if opt.short:
            flag = f"`-{opt.short}`/{flag}"
        rows.append(f"| {names} | {_cell(flag)} | {_cell(opt.default_text)} | {_cell(opt.help)} |")
    return "\n".join(rows) + "\n"


def _tables() -> dict[str, str]:
    from callboard.kube.settings import Settings
    from callboard.server.node import ServeSettings
    from callboard.sidecar.settings import SidecarSettings

    return {
        "serve": markdown_table(ServeSettings),
        "sidecar": markdown_table(SidecarSettings),
        "operator": markdown_table(Settings),
    }


def _marked(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- settings:{name} -->\n)(.*?)(<!-- /settings:{name} -->)",
        re.DOTALL,
    )


def _replacement(table: str) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        return match.group(1) + table + match.group(3)

    return replace


def update_readme(text: str) -> str:
    """``text`` with every ``<!-- settings:NAME -->`` block replaced by the generated table."""
    for name, table in _tables().items():
        pattern = _marked(name)
        if not pattern.search(text):
            raise ValueError(f"README has no <!-- settings:{name} --> block")
        text = pattern.sub(_replacement(table), text)
    return text


if __name__ == "__main__":  # pragma: no cover - a maintenance tool
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(update_readme(path.read_text()))
