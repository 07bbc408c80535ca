"""What the operator holds in memory between cycles: the watched objects, the registry read.

``object_cache`` is the view of every watched AgentSession (fed by kopf), ``registry_snapshot``
one read of the registry shared by a cycle's loops, ``metrics`` the Prometheus gauges
recomputed from both.
"""
