"""Stage adapters: one function per stage, called by the CLI and by the Kubeflow components alike."""
