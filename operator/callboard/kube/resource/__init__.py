"""The AgentSession resource as data: names, the typed object view, phases (all pure).

``constants`` holds every string the cluster may depend on, ``naming`` the ids and names the
operator derives, ``objects`` the immutable view of one object, ``phases`` the phase machine
and its status patches. Nothing here does I/O, so every other part of the operator may use it.
"""
