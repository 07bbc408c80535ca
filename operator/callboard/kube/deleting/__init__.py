"""Deleting an AgentSession closes its session: ``finalizer`` is the finalizer's side."""
