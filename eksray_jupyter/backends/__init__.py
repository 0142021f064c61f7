"""Backends behind :class:`eksray_jupyter.core.backend.ClusterBackend`."""
