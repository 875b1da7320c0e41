"""Kubernetes manifests (kustomize): ``python -m k8s.generate`` writes the per-task part from the registry."""
