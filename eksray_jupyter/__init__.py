"""eksray-jupyter: Ray clusters (local or KubeRay on EKS) from JupyterLab, notebooks and the terminal.

Importing this package is cheap: ray, kubernetes and boto3 are imported only when a
backend needs them, so the extension does not slow Jupyter's start.
"""

from __future__ import annotations

from typing import Any

try:
    from ._version import __version__
except ImportError:  # running from a source checkout that was never built
    __version__ = "0.0.0.dev0"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "eksray-jupyter"}]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import EKSRayExtension

    return [{"module": "eksray_jupyter", "app": EKSRayExtension}]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext eksray_jupyter`` (and ``--ext=eksray_jupyter`` in kernels the server starts)."""
    from .magics import load_ipython_extension as load

    load(ipython)
