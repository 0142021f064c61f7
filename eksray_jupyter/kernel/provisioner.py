"""The kernel provisioner: a LocalProvisioner that connects kernels to the active cluster.

It changes two things at every launch (and so at every restart, which launches again):
ipykernel commands get ``--ext=eksray_jupyter``, and the environment gets

- ``RAY_ADDRESS`` and ``EKSRAY_CLUSTER`` when the user has an active cluster a driver can
  connect to, so a bare ``ray.init()`` connects before any cell ran, with ``RAY_AUTH_MODE``
  and ``RAY_AUTH_TOKEN_PATH`` (the cluster's token file, never the token) for Ray's token
  authentication;
- ``EKSRAY_CONFIG``: the server's eksray settings, so the kernel's magics see the same
  clusters as the server even when the settings came from its command line;
- ``JUPYTER_SERVER_URL``, so the magics can link to the server's dashboard proxy.

Kernel start must stay fast and must not import ray: finding the active cluster is
usually a file read and one TCP connect (see ``ClusterService.active_connection``), runs
on a thread, and is abandoned after ``resolve_timeout`` seconds rather than delay a kernel.
"""

from __future__ import annotations

import asyncio
from pathlib import PurePath
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Float

from ..core.processes import with_import_path
from ..core.service import CONFIG_ENV, SERVER_URL_ENV
from . import context

EXTENSION_ARG = "--ext=eksray_jupyter"


def with_extension(cmd: list[str]) -> list[str]:
    """``cmd`` plus ``--ext=eksray_jupyter`` if it starts ipykernel (other kernels would reject it)."""
    is_ipykernel = any(PurePath(arg).stem in ("ipykernel", "ipykernel_launcher") for arg in cmd)
    if not is_ipykernel or EXTENSION_ARG in cmd:
        return list(cmd)
    return [*cmd, EXTENSION_ARG]


class EKSRayProvisioner(LocalProvisioner):
    resolve_timeout = Float(
        2.0,
        help="Seconds a kernel start may spend finding the active cluster before starting without it.",
    ).tag(config=True)

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        # The base class copies env: what we add is not saved in the launch arguments a
        # restart reuses, so a restart resolves the active cluster afresh.
        kwargs = await super().pre_launch(**kwargs)
        kwargs["cmd"] = with_extension(kwargs["cmd"])
        kwargs["env"].update(await self.cluster_env())
        # A driver imports ray: without the import path's stand-ins that costs seconds more.
        kwargs["env"] = with_import_path(kwargs["env"])
        return kwargs

    async def cluster_env(self) -> dict[str, str]:
        ctx = context()
        env = {CONFIG_ENV: ctx.service.environment_config()}
        url = ctx.server_url()
        if url:
            env[SERVER_URL_ENV] = url
        loop = asyncio.get_running_loop()
        try:
            found = await asyncio.wait_for(
                loop.run_in_executor(None, ctx.service.active_connection), self.resolve_timeout
            )
        except asyncio.TimeoutError:
            self.log.warning(
                "eksray: finding the active cluster took over %.1f s; kernel %s starts without RAY_ADDRESS "
                "(%%eksray connect connects it later)",
                self.resolve_timeout,
                self.kernel_id,
            )
            found = None
        except Exception:  # a backend problem must never stop a kernel from starting
            self.log.exception("eksray: could not find the active cluster for kernel %s", self.kernel_id)
            found = None
        try:  # the idle keeper counts this kernel's use as its cluster's (core/kernel_bindings.py)
            ctx.service.kernel_bindings.bind(str(self.kernel_id), found.name if found else None)
        except OSError:
            self.log.warning("eksray: cannot record which cluster kernel %s uses", self.kernel_id)
        if found is not None:
            env.update(found.driver_env())
            self.log.info(
                "eksray: kernel %s connects to cluster %s at %s", self.kernel_id, found.name, found.address
            )
        return env
