"""The job spec: one definition (``schema/job.schema.json``), validated like the cluster spec.

:func:`resolve_job_spec` fills defaults, resolves the cluster to create (inline spec or
profile + overrides, checked with the cluster schema) and the store, and reports *every*
offending field at once, cluster fields under ``cluster.`` — so a form is fixed in one go.
"""

from __future__ import annotations

import copy
import os
import re
import secrets
import shlex
import string
from typing import Any

from ..core.errors import FieldError, InvalidRequestError
from ..core.spec import (
    fill_defaults,
    load_schema,
    non_finite_errors,
    resolve_cluster_spec,
    schema_errors,
    whole_numbers,
)

JOB_SCHEMA = "job"
#: Environment variables the runner sets for the entrypoint and its tasks.
RESERVED_ENV_PREFIX = "EKSRAY_"
RESULTS_DIR_ENV = "EKSRAY_RESULTS_DIR"
JOB_ID_ENV = "EKSRAY_JOB_ID"
ATTEMPT_ENV = "EKSRAY_JOB_ATTEMPT"
#: Label on the cluster a job creates: the job's id.
JOB_LABEL = "eksray.io/job"

NAME_MAX = 41  # + "-" + 5 characters = 47, the longest RayJob name KubeRay accepts
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
_INTERPRETERS = {"python", "python3", "sh", "bash", "uv", "exec", "env", "time", "nohup"}


def job_name_from(entrypoint: str) -> str:
    """A name for a job that has none: its script's stem (``python train.py`` -> ``train``), else ``job``."""
    try:
        words = shlex.split(entrypoint)
    except ValueError:
        words = entrypoint.split()
    candidate = ""
    for word in words:
        if "=" in word and not word.startswith("-") and not candidate:
            continue  # VAR=value prefix
        base = os.path.basename(word)
        if word.startswith("-") or re.fullmatch(r"python[0-9.]*", base) or base in _INTERPRETERS:
            continue
        candidate = base.rsplit(".", 1)[0] if "." in base else base
        break
    name = re.sub(r"[^a-z0-9-]+", "-", candidate.lower())
    name = re.sub(r"^[^a-z]+", "", name)[:NAME_MAX].rstrip("-")
    return name or "job"


def new_job_id(name: str) -> str:
    """``<name>-<5 random characters>``: unique per run, a valid Kubernetes name of at most 47 characters."""
    return f"{name}-{''.join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))}"


def _prefixed(prefix: str, errors: list[FieldError]) -> list[FieldError]:
    out = []
    for e in errors:
        path = e.path
        out.append(
            FieldError(f"{prefix}.{path}" if path and not path.startswith("[") else prefix + path, e.message)
        )
    return out


def _check_results(patterns: Any) -> list[FieldError]:
    errors = []
    if not isinstance(patterns, list):
        return errors
    for i, pattern in enumerate(patterns):
        if not isinstance(pattern, str):
            continue
        parts = pattern.replace("\\", "/").split("/")
        if pattern.startswith(("/", "~")) or ".." in parts:
            errors.append(
                FieldError(
                    f"results[{i}]",
                    f"{pattern!r} must be relative to the working directory and stay inside it "
                    "(no leading '/' or '~', no '..')",
                )
            )
    return errors


MIB = 1 << 20


def tree_size(path: str, stop_above: int) -> int:
    """Bytes of the files under ``path`` (symlinks not followed), counting no further than ``stop_above``."""
    total = 0
    pending = [path]
    while pending and total <= stop_above:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def resolve_job_spec(
    request: Any,
    profiles: dict[str, dict[str, Any]],
    *,
    default_profile: str | None = None,
    default_store: dict[str, Any] | None = None,
    base_dir: str | None = None,
    working_dir_max_bytes: int = 0,
) -> dict[str, Any]:
    """Turn a submit request into a complete, valid job spec or raise :class:`InvalidRequestError`.

    The result has a ``name``, either ``clusterName`` or a complete ``cluster`` spec
    without ``name`` (the cluster is named after the job id), an absolute ``workingDir`` and a
    complete ``store`` (``{"type": "local"}`` or ``{"type": "s3", "bucket", "prefix"}``).
    """
    if not isinstance(request, dict):
        raise InvalidRequestError("The request body must be a JSON object describing the job")
    if errors := non_finite_errors(request):
        raise InvalidRequestError("Invalid job spec: numbers must be finite (no NaN or Infinity)", errors)
    schema = load_schema(JOB_SCHEMA)
    spec = whole_numbers(fill_defaults(copy.deepcopy(request), schema, schema), schema, schema)
    errors = schema_errors(spec, JOB_SCHEMA)

    if isinstance(spec.get("entrypoint"), str) and "name" not in spec:
        spec["name"] = job_name_from(spec["entrypoint"])

    # The cluster: an existing one, or one to create from an inline spec / profile.
    has_cluster, has_name = "cluster" in spec, "clusterName" in spec
    if has_cluster and has_name:
        errors.append(
            FieldError(
                "clusterName",
                "give either clusterName (an existing cluster) or cluster (one to create), not both",
            )
        )
    elif not has_name:
        cluster_request = spec.get("cluster")
        if cluster_request is None:
            cluster_request = {"profile": default_profile} if default_profile in profiles else {}
        if isinstance(cluster_request, dict):
            if "name" in cluster_request:
                errors.append(
                    FieldError(
                        "cluster.name",
                        "is set by eksray: the job's cluster is named after the job; remove it",
                    )
                )
            try:
                # A placeholder name: the real one (the job id) is only known once the spec is valid.
                resolved = resolve_cluster_spec({**cluster_request, "name": "placeholder"}, profiles)
                resolved.pop("name")
                spec["cluster"] = resolved
            except InvalidRequestError as e:
                errors += _prefixed("cluster", e.errors or [FieldError("", e.message)])
    if has_name and spec.get("ttlSecondsAfterFinished"):
        errors.append(
            FieldError(
                "ttlSecondsAfterFinished",
                "only applies to a cluster the job creates; an existing cluster (clusterName) is never deleted",
            )
        )

    # The working directory must exist now (it is uploaded when the cluster is ready).
    working_dir = spec.get("workingDir")
    if isinstance(working_dir, str) and working_dir:
        path = os.path.expanduser(working_dir)
        if not os.path.isabs(path):
            path = os.path.join(os.path.expanduser(base_dir or os.getcwd()), path)
        path = os.path.normpath(path)
        if path in ("/", os.path.normpath(os.path.expanduser("~"))):
            errors.append(
                FieldError(
                    "workingDir",
                    f"{working_dir!r} is {'the root' if path == '/' else 'your home'} directory: all of it "
                    "would be uploaded; give the project's own directory",
                )
            )
        elif not os.path.isdir(path):
            errors.append(
                FieldError(
                    "workingDir",
                    f"no directory {working_dir!r}"
                    + (f" (relative to {base_dir})" if base_dir and not os.path.isabs(working_dir) else ""),
                )
            )
        elif (
            working_dir_max_bytes and (size := tree_size(path, working_dir_max_bytes)) > working_dir_max_bytes
        ):
            errors.append(
                FieldError(
                    "workingDir",
                    f"{working_dir!r} holds more than {working_dir_max_bytes // MIB} MiB (at least "
                    f"{size // MIB} MiB); jobs upload it whole. Give a smaller directory, or read large data "
                    "from its store (S3) in the job",
                )
            )
        else:
            spec["workingDir"] = path

    env = (spec.get("runtimeEnv") or {}).get("envVars") if isinstance(spec.get("runtimeEnv"), dict) else None
    if isinstance(env, dict):
        for key in sorted(env):
            if key.upper().startswith(RESERVED_ENV_PREFIX):
                errors.append(
                    FieldError(
                        f"runtimeEnv.envVars.{key}",
                        f"names starting with {RESERVED_ENV_PREFIX} are set by eksray; rename it",
                    )
                )
    errors += _check_results(spec.get("results"))

    # The store: the administrator's default, completed with the default bucket and prefix.
    default_store = dict(default_store or {"type": "local"})
    store = spec.get("store")
    if store is None:
        store = {"type": default_store.get("type", "local")}
    if isinstance(store, dict) and store.get("type") == "s3":
        store = {
            "type": "s3",
            "bucket": store.get("bucket") or default_store.get("bucket") or "",
            "prefix": store.get("prefix", default_store.get("prefix", "")),
        }
        if not store["bucket"]:
            errors.append(
                FieldError(
                    "store.bucket",
                    "no S3 bucket: name one here, or ask your administrator to set c.EKSRay.job_s3_bucket",
                )
            )
    elif isinstance(store, dict) and store.get("type") == "local":
        extra = sorted(set(store) - {"type"})
        if extra:
            errors.append(FieldError(f"store.{extra[0]}", "only applies to an s3 store"))
        store = {"type": "local"}
    spec["store"] = store

    if errors:
        unique = {(e.path, e.message): e for e in errors}
        raise InvalidRequestError(
            "Invalid job spec", sorted(unique.values(), key=lambda e: (e.path, e.message))
        )
    return spec
