"""Running the operator: the entry point, the parts wired together, kopf's handlers.

``entrypoint`` is what ``callboard operator`` calls (credentials, lease, probes, kopf),
``wiring`` builds and starts the operator's parts as one :class:`~.wiring.Runtime`,
``kopf_handlers`` registers the handlers that feed it.
"""
