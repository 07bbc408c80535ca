"""The real-node tier: the chart, the image and the sidecar in real pods (see conftest.py)."""
