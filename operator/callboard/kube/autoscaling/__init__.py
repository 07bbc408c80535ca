"""Session-aware autoscaling of an agent Deployment.

``policy`` holds the settings and the pure buffer policy, ``loop`` reads the Deployment and
the registry and applies it.
"""
