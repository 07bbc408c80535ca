"""Placing new AgentSessions on agent nodes and following them to Running.

``policy`` chooses a node (pure), ``loop`` drives each object from Pending to Running,
``start_tracker`` follows every start request in flight to its outcome in one batched read.
"""
