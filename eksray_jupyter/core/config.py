"""Configuration shared by every face: which backend, its settings, profiles and limits.

Admins set these in ``jupyter_server_config.py`` (``c.EKSRay.backend = "kuberay"``); the
CLI and the magics read the same files, so every face sees the same clusters.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_config_path, jupyter_data_dir
from traitlets import Dict, Float, Int, TraitError, Type, Unicode, default, validate
from traitlets.config import Config, LoggingConfigurable
from traitlets.utils.importstring import import_item

from .backend import ClusterBackend
from .errors import InvalidRequestError
from .lifecycle import check_bounds_config
from .quotas import check_quotas_config
from .spec import SCHEMA_VERSION, resolve_cluster_spec
from .usage import check_prices_config

#: Short names admins may give instead of import paths (``c.EKSRay.backend = "kuberay"``).
BACKENDS = {
    "local": "eksray_jupyter.backends.local.LocalBackend",
    "kuberay": "eksray_jupyter.backends.kuberay.KubeRayBackend",
}
JOB_RUNNERS = {
    "local": "eksray_jupyter.jobs.runner.LocalJobRunner",
    "kuberay": "eksray_jupyter.backends.kuberay.rayjob_runner.KubeRayJobRunner",
}


class PluginType(Type):
    """A class chosen by import path (as jupyter-scheduler does) or by one of a few short names.

    A short name or path is imported when it is set (a wrong one is refused there, saying what
    to fix); a default given as a path is imported when the setting is first read.
    """

    def __init__(self, *args: Any, aliases: dict[str, str], what: str, **kwargs: Any) -> None:
        self.aliases = aliases
        self.what = what
        super().__init__(*args, **kwargs)

    def validate(self, obj: Any, value: Any) -> Any:
        if isinstance(value, str):
            if value not in self.aliases and "." not in value:
                raise TraitError(
                    f"unknown {self.what} {value!r}; use one of {', '.join(self.aliases)} or an import path"
                )
            path = self.aliases.get(value, value)
            try:
                value = import_item(path)
            except Exception as e:
                raise TraitError(f"{self.what} {path!r} cannot be imported: {e}") from None
        klass = self.klass if isinstance(self.klass, type) else object
        if not (isinstance(value, type) and issubclass(value, klass)):
            got = import_path(value) if isinstance(value, type) else repr(value)
            raise TraitError(f"{self.what} {got} is not a {klass.__name__} subclass")
        return super().validate(obj, value)

    def from_string(self, s: str) -> Any:
        return s  # resolved (aliases first) by validate, not as a bare import path


def import_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


DEFAULT_PROFILES: dict[str, dict[str, Any]] = {
    "cpu-small": {
        "head": {"cpu": 1},
        "workerGroups": [{"groupName": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 2, "cpu": 1}],
        "autoscaling": {"enabled": True, "idleTimeoutSeconds": 60},
    },
    "tagged": {
        "head": {"cpu": 1},
        "workerGroups": [
            {"groupName": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 2, "cpu": 1},
            {
                "groupName": "tagged",
                "replicas": 0,
                "minReplicas": 0,
                "maxReplicas": 1,
                "cpu": 1,
                "resources": {"tag": 1},
            },
        ],
        "autoscaling": {"enabled": True, "idleTimeoutSeconds": 60},
    },
}


class EKSRay(LoggingConfigurable):
    """eksray-jupyter settings (``c.EKSRay.*``)."""

    backend = PluginType(
        default_value=BACKENDS["local"],
        klass=ClusterBackend,
        aliases=BACKENDS,
        what="backend",
        help="Backend: 'local' (Ray processes on this machine), 'kuberay' (RayClusters on Kubernetes), "
        "or a ClusterBackend subclass (or its import path).",
    ).tag(config=True)

    state_dir = Unicode(
        help="Where the local backend keeps its state (clusters, events). Default: <jupyter data dir>/eksray.",
    ).tag(config=True)

    @default("state_dir")
    def _default_state_dir(self) -> str:
        return os.environ.get("EKSRAY_STATE_DIR") or str(Path(jupyter_data_dir()) / "eksray")

    owner = Unicode(
        help="Whose clusters this server manages. Default: $JUPYTERHUB_USER, else the OS user.",
    ).tag(config=True)

    @default("owner")
    def _default_owner(self) -> str:
        return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()

    profiles = Dict(
        DEFAULT_PROFILES,
        help="Named cluster templates users can start from; a request may override any field.",
    ).tag(config=True)

    default_profile = Unicode("cpu-small", help="Profile the create form preselects.").tag(config=True)

    max_request_bytes = Int(64 * 1024, help="Largest accepted request body, in bytes.").tag(config=True)

    # --- jobs (eksray_jupyter.jobs, docs/jobs.md) -------------------------------------------------

    job_runner = PluginType(
        default_value=None,
        allow_none=True,
        klass=object,  # a JobRunner; checked where jobs are set up, so the core never imports jobs
        aliases=JOB_RUNNERS,
        what="job runner",
        help="How jobs run: 'local' (a detached supervisor process per job on this machine creates the "
        "cluster and follows the job through Ray's Jobs API), 'kuberay' (a RayJob per job), or a "
        "JobRunner subclass (or its import path). Unset: 'kuberay' with the kuberay backend, else 'local'.",
    ).tag(config=True)

    job_store = Unicode(
        "local",
        help="Where job records, logs and result files go when a job names no store: 'local' "
        "(<state_dir>/jobs) or 's3' (job_s3_bucket).",
    ).tag(config=True)

    job_s3_bucket = Unicode(help="S3 bucket for jobs stored in 's3' that name no bucket.").tag(config=True)

    job_s3_prefix = Unicode(
        "eksray/jobs", help="Key prefix in the S3 bucket; each job goes under <prefix>/<owner>/<job id>/."
    ).tag(config=True)

    job_s3_endpoint_url = Unicode(
        help="S3 endpoint URL (MinIO, a test server); empty: AWS's own for the region."
    ).tag(config=True)

    job_s3_region = Unicode(help="AWS region of the S3 bucket; empty: boto3's default.").tag(config=True)

    job_watch_seconds = Float(
        1.0,
        help="While a panel is connected, how often the server reads the job records to push changes "
        "(local store; unchanged records are not parsed again).",
    ).tag(config=True)

    job_working_dir_max_mb = Int(
        100,
        help="Largest working directory a job may upload, in MiB (0: no limit). A larger one is refused "
        "when the job is submitted.",
    ).tag(config=True)

    job_watch_s3_seconds = Float(
        10.0,
        help="How often the job push lists S3 job stores (one LIST, then GETs only of changed records).",
    ).tag(config=True)

    job_log_page_max_bytes = Int(
        1 << 20,
        help="The most bytes of a job's log one read answers (GET /jobs/{id}/logs ?limit= and ?tail=; "
        "a larger value is clamped to it). Clients read on by offset.",
    ).tag(config=True)

    @validate("job_store")
    def _check_job_store(self, proposal: Any) -> str:
        if proposal["value"] not in ("local", "s3"):
            raise ValueError(f"unknown job store {proposal['value']!r}; use 'local' or 's3'")
        return proposal["value"]

    # --- idle clusters and lifetimes (core/lifecycle.py, docs/lifecycle.md) ----------------------

    lifecycle_bounds = Dict(
        help="Admin bounds on each cluster's lifecycle, per profile name ('*': every other profile and "
        "requests without one). Per field (idleTimeoutMinutes, suspendedTtlHours, maxLifetimeHours): "
        "{'minimum', 'maximum', 'allowOff' (default True), 'default'}; idleAction: {'allowed': [...], "
        "'default'}. E.g. {'*': {'idleTimeoutMinutes': {'maximum': 240, 'allowOff': False, 'default': 60}}}.",
    ).tag(config=True)

    @validate("lifecycle_bounds")
    def _check_lifecycle_bounds(self, proposal: Any) -> dict[str, Any]:
        try:
            return check_bounds_config(proposal["value"])
        except ValueError as e:
            raise TraitError(str(e)) from None

    lifecycle_warning_minutes = Float(
        5.0,
        help="How long before suspending or deleting a cluster its owner is warned (push stream, panel "
        "notification, event); the action waits at least this long after the warning.",
    ).tag(config=True)

    lifecycle_interval_seconds = Float(
        30.0, help="How often the server looks at its user's clusters for idleness and lifetimes."
    ).tag(config=True)

    # --- usage, cost, quotas and budgets (core/accounting.py, docs/usage.md) ----------------------

    prices = Dict(
        help="Prices per resource-hour in dollars: {'cpuHour', 'gpuHour', 'memoryGiBHour'}. The local "
        "backend's notional price (unset: 0, and usage is shown in resource-hours); on kuberay the "
        "fallback for nodes whose own price is unknown, and the estimate quotas use.",
    ).tag(config=True)

    @validate("prices")
    def _check_prices(self, proposal: Any) -> dict[str, Any]:
        try:
            return check_prices_config(proposal["value"])
        except ValueError as e:
            raise TraitError(str(e)) from None

    quotas = Dict(
        help="Limits per user and group: {'default': {...}, 'users': {'alice': {...}}, 'groups': "
        "{'ml-team': {...}}}, each with any of maxClusters, maxCpus, maxGpus, maxMemoryGiB, "
        "maxDollarsPerHour, monthlyBudget (None: no limit). A user's entry wins field by field, then "
        "the most generous of their groups, then default. What counts is what each cluster may grow "
        "to (maxReplicas with autoscaling); suspended clusters count only as clusters.",
    ).tag(config=True)

    @validate("quotas")
    def _check_quotas(self, proposal: Any) -> dict[str, Any]:
        try:
            return check_quotas_config(proposal["value"])
        except ValueError as e:
            raise TraitError(str(e)) from None

    user_groups = Dict(
        help="Groups of each user for quotas, {'alice': ['ml-team']}, where JupyterHub does not say "
        "(the server adds the groups JupyterHub gives its user).",
    ).tag(config=True)

    budget_exceeded_action = Unicode(
        "none",
        help="What happens to running clusters when a user's monthly budget is used up: 'none' (new "
        "clusters and resumes are refused; running ones keep running) or 'suspend-idle' (also suspend "
        "those Ray has nothing running on).",
    ).tag(config=True)

    @validate("budget_exceeded_action")
    def _check_budget_action(self, proposal: Any) -> str:
        if proposal["value"] not in ("none", "suspend-idle"):
            raise TraitError(
                f"unknown budget_exceeded_action {proposal['value']!r}; use 'none' or 'suspend-idle'"
            )
        return proposal["value"]

    def make_backend(self) -> ClusterBackend:
        return self.backend(parent=self, profiles=self.profiles, state_dir=self.state_dir, log=self.log)

    def resolve_spec(self, request: Any) -> dict[str, Any]:
        return resolve_cluster_spec(request, self.profiles, self.lifecycle_bounds)

    def public_config(self, backend: ClusterBackend) -> dict[str, Any]:
        """What clients may know: never paths, tokens or credentials."""
        return {
            "backend": backend.name,
            "owner": self.owner,
            "profiles": self.profiles,
            "defaultProfile": self.default_profile if self.default_profile in self.profiles else None,
            "limits": backend.limits(),
            "lifecycleBounds": self.lifecycle_bounds,
            "lifecycleWarningMinutes": self.lifecycle_warning_minutes,
            "prices": self.prices,
            "schemaVersion": SCHEMA_VERSION,
        }


def load_jupyter_config() -> Config:
    """Read the ``jupyter_server_config`` files (py and json) from Jupyter's config path.

    Used by the CLI and magics so they act on the same backend as the server.
    """
    from traitlets.config.loader import JSONFileConfigLoader, PyFileConfigLoader

    config = Config()
    for directory in reversed(jupyter_config_path()):
        for loader_cls, filename in (
            (JSONFileConfigLoader, "jupyter_server_config.json"),
            (PyFileConfigLoader, "jupyter_server_config.py"),
        ):
            if not os.path.isfile(os.path.join(directory, filename)):
                continue
            try:
                config.merge(loader_cls(filename, path=directory).load_config())
            except Exception as e:  # a broken config file is the admin's problem, say where it is
                raise InvalidRequestError(f"Cannot read {os.path.join(directory, filename)}: {e}") from e
    return config
