"""vigo: pull-based GitOps for Docker Compose hosts."""

__version__ = "0.1.0"
