"""The run on a host: reconcile sequences source, secrets, resolve, deploy, record."""
