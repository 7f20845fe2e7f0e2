"""Kubeflow plumbing: run context, cluster settings, workspaces, PyTorchJobs, submit and schedule."""
