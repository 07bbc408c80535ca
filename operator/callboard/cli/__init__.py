"""The ``callboard`` command. Subcommands live in sibling modules, one per concern."""

from __future__ import annotations

import importlib
import logging

import click

from callboard import __version__

__all__ = ["main"]

#: Subcommand modules; each defines a click command or group named ``command``. They are
#: imported only when present so optional extras (server, kube) stay optional.
_SUBCOMMANDS = ("serve", "sessions", "nodes", "demo", "sidecar", "operator")


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when it is run or listed.

    The operator's options are generated from its settings class, which lives in
    ``callboard.kube`` (kopf, the Kubernetes client): ``callboard serve`` must not pay for
    importing them, nor fail when the kube extra is not installed.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in _SUBCOMMANDS if self.get_command(ctx, name) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _SUBCOMMANDS:
            return None
        if cmd_name not in self.commands:
            try:
                module = importlib.import_module(f"callboard.cli.{cmd_name}")
            except ModuleNotFoundError as exc:
                if exc.name and (
                    exc.name.startswith("callboard.cli") or not exc.name.startswith("callboard")
                ):
                    return None  # not written yet / not shipped, or its extra (server, kube) is missing
                raise
            self.add_command(module.command, cmd_name)
        return self.commands[cmd_name]


# No auto_envvar_prefix: it would give every option of every command a second, undocumented
# variable (CALLBOARD_SERVE_TTL beside CALLBOARD_TTL); each variable is named where it is read.
@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="callboard")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    envvar="CALLBOARD_LOG_LEVEL",
    show_envvar=True,
    help="Logging threshold.",
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    envvar="CALLBOARD_LOG_FORMAT",
    show_envvar=True,
    help="Log lines as text or as JSON objects.",
)
def main(log_level: str, log_format: str) -> None:
    """callboard: see, start and close real-time AI agent sessions across a cluster."""
    from callboard.cli._logging import configure_logging

    configure_logging(level=getattr(logging, log_level.upper()), fmt=log_format)
