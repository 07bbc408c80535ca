"""A real one-node Kubernetes cluster for the real-pod tier (tests/e2e_real).

``cluster.real_cluster(log)`` builds what is missing (``tests/k8s/build-tools.sh real``,
``images.sh``), starts the control plane and a real node (containerd, kubelet, kube-proxy,
CoreDNS), yields a ``KubeEnv`` and tears everything down afterwards.
"""
