"""``callboard operator``: run the Kubernetes operator for AgentSession objects.

Flags and their ``CALLBOARD_*`` variables (shown by ``--help``) are generated from
:class:`~callboard.kube.settings.Settings`, so the Deployment configures it with ``env:``. The
lease and autoscaling namespaces and this replica's identity default to the downward-API
variables ``POD_NAMESPACE`` and ``POD_NAME``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import click

from callboard import config
from callboard.cli._options import LOGGING_EPILOG, click_options
from callboard.errors import ConfigurationError
from callboard.kube.settings import Settings

__all__ = ["command"]


@click.command(
    "operator",
    epilog="Every option reads its environment variable when not given, so the Deployment "
    "configures the operator with env:. " + LOGGING_EPILOG,
)
@click_options(Settings)
def command(**options: object) -> None:
    """Run the AgentSession operator (kopf).

    `kubectl apply` of an AgentSession places the session on an agent node with free
    capacity through the registry and follows it to Running; `kubectl delete` closes it
    wherever it runs. Status mirrors the registry; sessions started elsewhere can be
    adopted; agent pods carry pod-deletion-cost and safe-to-evict for autoscaling.
    Credentials: the pod's service account, else $KUBECONFIG or ~/.kube/config.
    """
    try:
        settings = Settings.from_values(
            {
                opt.name: options[opt.param]
                for opt in config.options(Settings)
                if options[opt.param] is not None
            },
            pod_name=os.environ.get("POD_NAME"),
        )
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc

    from callboard.kube.running.entrypoint import LeadershipLost, run

    # kopf logs every handler call at INFO ("Handler 'observe' succeeded": one line per watch
    # event) and its probe server every request; keep warnings, unless debugging.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("kopf.objects", "aiohttp.access"):
            logging.getLogger(name).setLevel(logging.WARNING)

    try:
        asyncio.run(run(settings))
    except LeadershipLost as exc:
        click.echo(f"callboard operator: {exc}", err=True)
        sys.exit(1)
