"""Kernels the Jupyter server starts are connected to the user's active cluster.

The server extension calls :func:`setup_kernel_provisioner` while it loads: it makes
:class:`~.provisioner.EKSRayProvisioner` the default kernel provisioner (no kernelspec or
config file to edit) and hands it the extension's :class:`ClusterService`. The
provisioner then gives each ipykernel ``--ext=eksray_jupyter`` (the magics, without
``%load_ext``) and, at every launch and restart, ``RAY_ADDRESS`` of the active cluster.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import Any

from ..core.service import SERVER_URL_ENV, ClusterService

PROVISIONER_NAME = "eksray-provisioner"
PROVISIONER_CLASS = "eksray_jupyter.kernel.provisioner:EKSRayProvisioner"


@dataclass
class KernelContext:
    """What the provisioner needs from the server that loaded it."""

    service: ClusterService
    server_url: Callable[[], str | None] = lambda: None


_context: KernelContext | None = None


def configure(service: ClusterService, server_url: Callable[[], str | None] | None = None) -> None:
    """Give the provisioner the server's service (and how to find the server's URL)."""
    global _context
    _context = KernelContext(service, server_url or (lambda: None))


def context() -> KernelContext:
    """The server's context, or one from the config files when no server configured us
    (a kernelspec that names the provisioner, used by ``jupyter console``)."""
    global _context
    if _context is None:
        _context = KernelContext(ClusterService.from_environment())
    return _context


def server_url(serverapp: Any) -> str | None:
    """The URL kernels use to link to the server (the dashboard proxy lives under it).

    An explicit ``JUPYTER_SERVER_URL`` in the server's environment (a public URL behind a
    proxy) reaches kernels unchanged. Behind JupyterHub the server's own URL is internal,
    so only its base path is passed: a link relative to the page's origin still works.
    """
    if os.environ.get(SERVER_URL_ENV):
        return None
    if os.environ.get("JUPYTERHUB_SERVICE_PREFIX"):
        return str(serverapp.base_url)
    return str(serverapp.connection_url)


def register(factory: Any) -> None:
    """Make sure ``factory`` (a KernelProvisionerFactory) knows our provisioner.

    The factory loads every installed entry point; from a source checkout ours is not
    installed, so the same entry point is registered here.
    """
    from jupyter_client.provisioning import KernelProvisionerFactory

    factory.provisioners.setdefault(
        PROVISIONER_NAME, EntryPoint(PROVISIONER_NAME, PROVISIONER_CLASS, KernelProvisionerFactory.GROUP_NAME)
    )


def setup_kernel_provisioner(serverapp: Any, service: ClusterService) -> bool:
    """Make new kernels use the eksray provisioner. Returns False if an admin chose another one.

    Per jupyter_client, ``KernelProvisionerFactory.default_provisioner_name`` set on the
    factory instance while the server loads its extensions is honoured (a setting in
    ``jupyter_server_config.d/`` is not). An explicit admin choice, in config or in
    ``$JUPYTER_DEFAULT_PROVISIONER_NAME``, wins over ours.
    """
    from jupyter_client.provisioning import KernelProvisionerFactory

    configure(service, lambda: server_url(serverapp))
    factory = KernelProvisionerFactory.instance(parent=serverapp)
    register(factory)
    configured = (serverapp.config.get("KernelProvisionerFactory") or {}).get("default_provisioner_name")
    chosen = configured or os.environ.get(KernelProvisionerFactory.default_provisioner_name_env)
    if chosen and chosen != PROVISIONER_NAME:
        serverapp.log.info(
            "eksray: kernels use the configured provisioner %r, so they are not connected to "
            "clusters automatically (%%eksray connect still works)",
            chosen,
        )
        return False
    factory.default_provisioner_name = PROVISIONER_NAME
    return True
