"""Talking to the Kubernetes API: the client and the writers built on it.

``client`` is the small asyncio client (and its errors), ``event_poster`` posts Kubernetes
Events in the background, ``status_writer`` writes an object's status, ``pod_annotator``
keeps agent pods' autoscaling annotations, ``lease`` holds the leader Lease.
"""
