"""What the two text faces, the ``%eksray`` magics and the ``eksray`` CLI, share besides presentation.

Argument shapes (so ``%eksray up`` and ``eksray rc create`` accept the same flags), the
translation of those flags into service requests (clusters and jobs), free names,
dashboard links, waiting, following events and following a job's log. The faces keep
only their own verbs and their own output.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

from .core.errors import EKSRayError, FieldError, InvalidRequestError, NotFoundError, NotReadyError
from .core.models import Cluster, ClusterEvent
from .core.service import SERVER_URL_ENV, ClusterService

if TYPE_CHECKING:
    from .jobs.models import Job, JobState
    from .jobs.service import JobService, LogChunk

DEFAULT_WAIT_TIMEOUT = 600.0


# --- argument parsing that never exits the process -----------------------------------------


class ParserExit(Exception):
    """``--help`` was shown (status 0), or argparse wanted to exit."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class UsageProblem(Exception):
    """Bad command-line usage; the message names the command and the problem."""

    def __init__(self, message: str, prog: str, usage: str) -> None:
        super().__init__(message)
        self.message = message
        self.prog = prog
        self.usage = usage


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of calling ``sys.exit``: a magic must never end its kernel."""

    def error(self, message: str) -> NoReturn:
        raise UsageProblem(f"{self.prog}: {message}", self.prog, self.format_usage().strip())

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageProblem(message.strip(), self.prog, self.format_usage().strip())
        raise ParserExit(status)


def count(value: str) -> int:
    """argparse type of replica counts."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 0 <= number <= 1000:
        raise argparse.ArgumentTypeError(f"{number} is not between 0 and 1000")
    return number


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if number <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return number


def add_wait_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--wait", action="store_true", help=f"block until {what}, showing progress")
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="SECONDS",
        help="how long --wait waits (default: %(default).0f)",
    )


#: Adds one command to a face's parser: ``add(name, summary)`` returns the command's parser.
AddCommand = Callable[[str, str], argparse.ArgumentParser]


def command_adder(subparsers: Any, parents: tuple[argparse.ArgumentParser, ...] = ()) -> AddCommand:
    """An :data:`AddCommand` whose commands show ``summary`` in the list and as their description."""

    def add(name: str, summary: str) -> argparse.ArgumentParser:
        return subparsers.add_parser(
            name, help=summary, description=summary[0].upper() + summary[1:] + ".", parents=list(parents)
        )

    return add


def add_cluster_commands(add: AddCommand, *, follow_help: str, dashboard_help: str) -> None:
    """The cluster commands both faces have (list, status, scale, events, dashboard), in this order."""
    add("list", "your clusters (* marks the active one)")
    status = add("status", "phase, worker groups and dashboard of a cluster")
    status.add_argument("name", nargs="?", metavar="NAME", help="default: the active cluster")
    status.add_argument(
        "--timeline", action="store_true", help="also the steps of its latest start, with when each happened"
    )
    add_scale_options(add("scale", "change a worker group's replicas or autoscaling bounds"))
    events = add("events", "what happened to a cluster")
    events.add_argument("name", nargs="?", metavar="NAME", help="default: the active cluster")
    events.add_argument("--follow", action="store_true", help=follow_help)
    add("dashboard", dashboard_help).add_argument(
        "name", nargs="?", metavar="NAME", help="default: the active cluster"
    )
    suspend = add("suspend", "stop a cluster's Ray nodes and keep it (it costs nothing until resumed)")
    suspend.add_argument("name", nargs="?", metavar="NAME", help="default: the active cluster")
    resume = add("resume", "start a suspended cluster again, with the same name and spec")
    resume.add_argument("name", nargs="?", metavar="NAME", help="default: the active cluster")
    add_wait_options(resume, "the cluster is ready")
    add("keepalive", "say a cluster is in use: its idle time starts again").add_argument(
        "name", nargs="?", metavar="NAME", help="default: the active cluster"
    )


def add_usage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--csv", action="store_true", help="one comma-separated row per cluster instead of the table"
    )


USAGE_SUMMARY = "what your clusters use and cost now and since created; your quota and monthly budget"


def add_create_options(parser: argparse.ArgumentParser) -> None:
    """The flags of ``up``/``create``; --workers/--min/--max set the first worker group."""
    parser.add_argument("name", nargs="?", metavar="NAME", help="cluster name (default: a free ray-USER-N)")
    parser.add_argument("--profile", metavar="P", help="start from this admin-defined profile")
    parser.add_argument("--workers", type=count, metavar="N", help="workers to start in the first group")
    parser.add_argument(
        "--min", type=count, metavar="N", dest="min_replicas", help="the first group's minimum"
    )
    parser.add_argument(
        "--max", type=count, metavar="N", dest="max_replicas", help="the first group's maximum"
    )
    life = parser.add_argument_group("idle and lifetime (your administrator may bound them)")
    life.add_argument(
        "--idle-timeout",
        type=whole_number,
        metavar="MIN",
        help="suspend (or delete) after this many idle minutes; 0: never",
    )
    life.add_argument("--idle-action", choices=("suspend", "delete"), help="what happens when idle")
    life.add_argument(
        "--max-lifetime", type=hours, metavar="H", help="delete this many hours after creation; 0: no limit"
    )
    life.add_argument(
        "--suspended-ttl", type=hours, metavar="H", help="delete after this many hours suspended; 0: never"
    )
    add_wait_options(parser, "the cluster is ready")


def hours(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of hours") from None
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: give a number of hours, 0 or more")
    return number


def lifecycle_request(args: argparse.Namespace) -> dict[str, Any]:
    """The ``lifecycle`` fields given by --idle-timeout, --idle-action, --max-lifetime, --suspended-ttl."""
    fields = {
        "idleTimeoutMinutes": getattr(args, "idle_timeout", None),
        "idleAction": getattr(args, "idle_action", None),
        "maxLifetimeHours": getattr(args, "max_lifetime", None),
        "suspendedTtlHours": getattr(args, "suspended_ttl", None),
    }
    return {key: value for key, value in fields.items() if value is not None}


def add_scale_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="cluster name")
    parser.add_argument("group", metavar="GROUP", help="worker group name")
    parser.add_argument("--replicas", type=count, metavar="N", help="workers to run now")
    parser.add_argument("--min", type=count, metavar="N", dest="min_replicas", help="autoscaler minimum")
    parser.add_argument("--max", type=count, metavar="N", dest="max_replicas", help="autoscaler maximum")
    add_wait_options(parser, "the group has its workers")


# --- requests ------------------------------------------------------------------------------


def free_name(service: ClusterService, taken: set[str] | None = None) -> str:
    """``ray-<user>-<n>`` with the smallest n not in use (the user part made a valid name)."""
    user = re.sub(r"[^a-z0-9-]+", "-", service.owner.lower())
    user = re.sub(r"^[^a-z]+", "", user)[:30].strip("-") or "user"
    if taken is None:
        taken = {c.name for c in service.list()}
    n = 1
    while f"ray-{user}-{n}" in taken:
        n += 1
    return f"ray-{user}-{n}"


def _group_default(key: str) -> Any:
    from .core.spec import load_schema

    return load_schema()["$defs"]["workerGroup"]["properties"][key]["default"]


def create_request(
    service: ClusterService,
    *,
    name: str | None = None,
    profile: str | None = None,
    workers: int | None = None,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    base: dict[str, Any] | None = None,
    lifecycle: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A create request from a face's flags, optionally on top of a spec file (``base``).

    Without a spec file the configured default profile is used. ``workers``, ``min_replicas``
    and ``max_replicas`` change the first worker group; when only ``workers`` is given the
    group's bounds stretch to include it, and moving only a bound carries replicas along.
    """
    request = copy.deepcopy(base) if base else {}
    if lifecycle:
        given = request.get("lifecycle")
        request["lifecycle"] = {**(given if isinstance(given, dict) else {}), **lifecycle}
    config = service.config
    if profile is not None:
        request["profile"] = profile
    elif base is None and config.default_profile in config.profiles:
        request["profile"] = config.default_profile
    request["name"] = name or request.get("name") or free_name(service)
    if workers is None and min_replicas is None and max_replicas is None:
        return request
    profile_groups = (config.profiles.get(request.get("profile") or "") or {}).get("workerGroups") or []
    groups = request.get("workerGroups") or [{"groupName": g["groupName"]} for g in profile_groups]
    if not groups or not isinstance(groups[0], dict):
        raise InvalidRequestError(
            "Nothing to apply the worker counts to",
            [
                FieldError(
                    "workerGroups",
                    "--workers, --min and --max set the first worker group; add one or pick a profile with one",
                )
            ],
        )
    first = {**(profile_groups[0] if profile_groups else {}), **groups[0]}
    lo = min_replicas if min_replicas is not None else first.get("minReplicas", _group_default("minReplicas"))
    hi = max_replicas if max_replicas is not None else first.get("maxReplicas", _group_default("maxReplicas"))
    if workers is not None:
        if min_replicas is None:
            lo = min(lo, workers)
        if max_replicas is None:
            hi = max(hi, workers)
        replicas = workers
    else:
        replicas = first.get("replicas", _group_default("replicas"))
        if lo <= hi:
            replicas = min(max(replicas, lo), hi)
    groups = [dict(g) for g in groups]
    groups[0].update(replicas=replicas, minReplicas=lo, maxReplicas=hi)
    request["workerGroups"] = groups
    return request


def scale_request(
    group: str, replicas: int | None, min_replicas: int | None, max_replicas: int | None
) -> dict[str, Any]:
    change: dict[str, Any] = {"groupName": group}
    for key, value in (("replicas", replicas), ("minReplicas", min_replicas), ("maxReplicas", max_replicas)):
        if value is not None:
            change[key] = value
    if len(change) == 1:
        raise InvalidRequestError("Nothing to change: give --replicas, --min or --max")
    return {"workerGroups": [change]}


def load_spec_file(
    path: str,
    read_stdin: Callable[[], str] | None = None,
    what: str = "one cluster spec (a mapping with at least 'name')",
) -> dict[str, Any]:
    """A cluster (or job: ``what``) spec from a YAML or JSON file (``-`` reads standard input)."""
    import yaml

    try:
        if path == "-":
            import sys

            text = (read_stdin or sys.stdin.read)()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as e:
        raise InvalidRequestError(f"Cannot read {path}: {e.strerror or e}") from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidRequestError(f"{path} is not valid YAML or JSON: {e}") from None
    if not isinstance(spec, dict):
        raise InvalidRequestError(f"{path} must contain {what}")
    return spec


# --- names, links, waiting -----------------------------------------------------------------


def status(service: ClusterService, name: str | None, hint: str) -> tuple[Cluster, bool]:
    """The named cluster (default: the active one) and whether it is the active one."""
    clusters = service.list()
    active = service.active_of(clusters)
    if name is None:
        if active is None:
            raise NotFoundError(f"You have no active cluster. {hint}")
        return active, True
    for cluster in clusters:
        if cluster.name == name:
            return cluster, active is not None and active.name == name
    return service.get(name), False  # raises NotFoundError with the backend's message


def resolve_name(service: ClusterService, name: str | None, hint: str) -> str:
    """``name``, or the active cluster's name if none was given."""
    if name is not None:
        return name
    cluster = service.active()
    if cluster is None:
        raise NotFoundError(f"You have no active cluster. {hint}")
    return cluster.name


def proxied_dashboard_url(name: str) -> str | None:
    """The dashboard through the Jupyter server (``<server>/eksray/clusters/<name>/dashboard/``), if known."""
    server = os.environ.get(SERVER_URL_ENV)
    if not server:
        return None
    return f"{server.rstrip('/')}/eksray/clusters/{quote(name, safe='')}/dashboard/"


def dashboard_link(service: ClusterService, cluster: Cluster) -> str | None:
    """Where to open the cluster's dashboard: through the server when known, else directly."""
    if not cluster.dashboard_available:
        return None
    proxied = proxied_dashboard_url(cluster.name)
    if proxied:
        return proxied
    try:
        return service.dashboard_address(cluster.name)
    except EKSRayError:
        return None


def require_dashboard(service: ClusterService, name: str) -> str:
    cluster = service.get(name)
    link = dashboard_link(service, cluster)
    if link is None:
        raise NotReadyError(
            f"The Ray dashboard of {name!r} is not up (the cluster is {cluster.phase.value}); "
            "try again when it is ready."
        )
    return link


def wait(
    service: ClusterService,
    name: str,
    timeout: float,
    show: Callable[[Cluster, float], None],
    interval: float = 1.0,
) -> Cluster:
    """Block until ``name`` is ready, calling ``show(cluster, elapsed_seconds)`` on every look."""
    started = time.monotonic()
    return service.wait_ready(
        name, timeout=timeout, on_progress=lambda c: show(c, time.monotonic() - started), interval=interval
    )


def follow_events(
    service: ClusterService,
    name: str,
    on_event: Callable[[ClusterEvent], None],
    seen: set[str] | None = None,
    interval: float = 1.0,
    keep_going: Callable[[], bool] = lambda: True,
) -> None:
    """Call ``on_event`` for each new event until the cluster is deleted or ``keep_going`` says stop.

    Events are matched by id over a look-back window: some sources (the autoscaler's log)
    deliver an event after later ones, so "everything after the last time seen" would miss it.
    """
    seen = set() if seen is None else seen
    newest = 0.0
    while keep_going():
        try:
            events = service.events(name, since=newest - 120.0 if newest else None)
        except NotFoundError:
            return
        for event in events:
            newest = max(newest, event.time)
            if event.id not in seen:
                seen.add(event.id)
                on_event(event)
        time.sleep(interval)


# --- jobs (``eksray rj`` and ``%eksray job``) ------------------------------------------------

JOB_SPEC_WHAT = "one job spec (a mapping with at least 'entrypoint')"
#: Seconds between two reads of a job's record and log while following it.
FOLLOW_JOB_INTERVAL = 1.0
#: How long a stop waits for the job's runner to record ``stopped`` (the REST API's 30 s too).
#: States in which a followed job shows progress (its cluster is being created or waited for).
WAITING_STATES = ("pending", "starting")


def whole_number(value: str) -> int:
    """argparse type of retries and deadlines (the schema checks the range)."""
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


def env_var(value: str) -> tuple[str, str]:
    """argparse type of ``--env K=V``."""
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=VALUE")
    return key, val


def add_job_submit_options(parser: argparse.ArgumentParser) -> None:
    """The flags of ``eksray rj submit`` and ``%eksray job submit``; they override a spec file."""
    parser.add_argument(
        "spec", nargs="?", metavar="SPEC", help="job spec, YAML or JSON ('-' reads stdin); flags override it"
    )
    parser.add_argument("--entrypoint", metavar="CMD", help="the shell command to run on the head node")
    parser.add_argument("--name", metavar="NAME", help="job name (default: from the entrypoint)")
    parser.add_argument(
        "--working-dir", metavar="DIR", help="local directory uploaded for the job (relative: to the cwd)"
    )
    parser.add_argument(
        "--env", type=env_var, action="append", metavar="K=V", help="environment variable (repeatable)"
    )
    parser.add_argument("--pip", action="append", metavar="PKG", help="pip requirement (repeatable)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--profile", metavar="P", help="create the job's cluster from this profile")
    where.add_argument("--cluster-name", metavar="NAME", help="run on this existing cluster instead")
    parser.add_argument(
        "--deadline", type=whole_number, metavar="S", help="fail the job after S seconds (start included)"
    )
    parser.add_argument("--retries", type=whole_number, metavar="N", help="retries after a failed attempt")
    parser.add_argument(
        "--ttl", type=whole_number, metavar="S", help="keep the job's cluster S seconds after the end"
    )
    parser.add_argument(
        "--results", action="append", metavar="GLOB", help="result files to keep (repeatable, ** allowed)"
    )
    store = parser.add_mutually_exclusive_group()
    store.add_argument(
        "--store", choices=["local", "s3"], help="where the log and results are kept (default: configured)"
    )
    store.add_argument("--s3-bucket", metavar="BUCKET", help="keep the log and results in this S3 bucket")
    parser.add_argument(
        "--follow", action="store_true", help="show progress and stream the log until the job ends"
    )


def add_job_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="ID", help="job id (see the job list)")


def add_job_commands(add: AddCommand, *, follow_help: str, results_help: str) -> argparse.ArgumentParser:
    """The job commands of both faces (submit, list, status, logs, results, stop); returns submit's parser."""
    submit = add("submit", "submit a job from flags or a spec file")
    add_job_submit_options(submit)
    add("list", "your jobs, newest first")
    add_job_id(add("status", "state, reason, cluster, log and results of a job"))
    logs = add("logs", "the log of a job (read in pages, shown as they come)")
    add_job_id(logs)
    logs.add_argument("--follow", action="store_true", help=follow_help)
    logs.add_argument(
        "--tail",
        type=whole_number,
        metavar="N",
        help="only the last N lines (of at most the log's last MiB), then --follow goes on from there",
    )
    add_job_results_options(add("results", results_help))
    add_job_id(add("stop", "stop a job (its record and log stay)"))
    return submit


def job_request(args: argparse.Namespace, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A submit request from a face's flags (see :func:`add_job_submit_options`) over a spec file."""
    request = copy.deepcopy(base) if base else {}
    if args.entrypoint is not None:
        request["entrypoint"] = args.entrypoint
    if args.name is not None:
        request["name"] = args.name
    if args.working_dir is not None:
        request["workingDir"] = args.working_dir
    if args.env or args.pip:
        runtime_env = request.get("runtimeEnv")
        runtime_env = dict(runtime_env) if isinstance(runtime_env, dict) else {}
        if args.env:
            env_vars = runtime_env.get("envVars")
            runtime_env["envVars"] = {**(env_vars if isinstance(env_vars, dict) else {}), **dict(args.env)}
        if args.pip:
            runtime_env["pip"] = list(args.pip)
        request["runtimeEnv"] = runtime_env
    if args.profile is not None:
        request.pop("clusterName", None)
        cluster = request.get("cluster")
        request["cluster"] = {**(cluster if isinstance(cluster, dict) else {}), "profile": args.profile}
    if args.cluster_name is not None:
        request.pop("cluster", None)
        request["clusterName"] = args.cluster_name
    if args.deadline is not None:
        request["activeDeadlineSeconds"] = args.deadline
    if args.retries is not None:
        request["backoffLimit"] = args.retries
    if args.ttl is not None:
        request["ttlSecondsAfterFinished"] = args.ttl
    if args.results:
        request["results"] = list(args.results)
    if args.store is not None:
        request["store"] = {"type": args.store}
    if args.s3_bucket is not None:
        request["store"] = {"type": "s3", "bucket": args.s3_bucket}
    if "entrypoint" not in request:
        raise InvalidRequestError(
            "Nothing to run: give --entrypoint CMD, or a spec file with an entrypoint",
        )
    return request


def submit_job(jobs: JobService, args: argparse.Namespace) -> Job:
    """Submit the job a face's flags describe; a relative working dir is relative to the current directory."""
    base = load_spec_file(args.spec, what=JOB_SPEC_WHAT) if args.spec else None
    return jobs.submit(job_request(args, base))


def job_succeeded(job: Job) -> bool:
    from .jobs.models import JobState

    return job.state == JobState.SUCCEEDED


def add_job_results_options(parser: argparse.ArgumentParser) -> None:
    """``eksray rj results`` and ``%eksray job results``: save a job's result files here."""
    add_job_id(parser)
    parser.add_argument("paths", nargs="*", metavar="PATH", help="only these results (default: all)")
    parser.add_argument(
        "--to", default=".", metavar="DIR", help="directory to save them in, relative paths kept (default: .)"
    )


def save_results(jobs: JobService, job_id: str, paths: list[str], target: str) -> list[dict[str, Any]]:
    """Save a job's result files (all, or ``paths``) under ``target``; ``[{"path", "size", "savedTo"}]``."""
    job = jobs.get(job_id)
    listed = {r["path"]: r for r in job.results}
    if not listed:
        raise NotFoundError(f"Job {job_id!r} has no result files (yet: it is {job.state.value}).")
    unknown = [p for p in paths if p not in listed]
    if unknown:
        raise NotFoundError(
            f"Job {job_id!r} has no result {unknown[0]!r}; it has: {', '.join(sorted(listed))}."
        )
    root = os.path.realpath(target)
    saved = []
    for path in paths or sorted(listed):
        dest = os.path.realpath(os.path.join(root, path))
        if os.path.commonpath([dest, root]) != root:
            raise InvalidRequestError(f"The result {path!r} would be saved outside {target}; not saving it.")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        result = jobs.open_result(job_id, path)
        size = 0
        try:
            with open(dest, "wb") as f:
                while chunk := result.read(1 << 20):
                    f.write(chunk)
                    size += len(chunk)
        finally:
            result.close()
        saved.append({"path": path, "size": size, "savedTo": dest})
    return saved


def follow_job(
    jobs: JobService,
    job_id: str,
    on_text: Callable[[str], None],
    on_state: Callable[[JobState, float], None] | None = None,
    offset: int = 0,
    interval: float | None = None,
) -> Job:
    """Stream the job's log from ``offset`` to ``on_text`` until the job has ended; returns it.

    The log is read a page at a time (at most ``jobs.log_page_max`` bytes), each shown before the
    next is read; pages come back to back until the reader has caught up, then every
    ``interval`` seconds. ``on_state(state, elapsed_seconds)`` is called on every look (progress
    while the cluster starts). The log is read after the state, so the text of an ended job is
    complete.
    """
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a chunk may end mid-character
    started = time.monotonic()
    while True:
        chunk = jobs.logs(job_id, offset, limit=jobs.log_page_max)
        text = decoder.decode(chunk.data, final=chunk.complete)
        if text:
            on_text(text)
        offset = chunk.next_offset
        if on_state is not None:
            on_state(chunk.state, time.monotonic() - started)
        if chunk.complete:
            return jobs.get(job_id)
        if offset >= chunk.size or not chunk.data:  # caught up: wait for more
            time.sleep(FOLLOW_JOB_INTERVAL if interval is None else interval)


def show_job_log(
    jobs: JobService,
    job_id: str,
    on_page: Callable[[str, LogChunk], None],
    tail_lines: int | None = None,
) -> int:
    """Show the job's log as it is now, a page at a time (``on_page(text, chunk)`` for each, as it
    is read: a long log is never held whole); returns where its end was, to follow on from.

    With ``tail_lines``, only its last lines: those of the log's last page (``jobs.log_page_max``
    bytes) at most.
    """
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    if tail_lines is not None:
        chunk = jobs.logs(job_id, tail=jobs.log_page_max)
        lines = chunk.data.decode("utf-8", errors="replace").splitlines(keepends=True)
        on_page("".join(lines[-tail_lines:] if tail_lines > 0 else []), chunk)
        return chunk.next_offset
    chunk = jobs.logs(job_id, 0, limit=jobs.log_page_max)
    end = chunk.size  # what there is now: a log that grows meanwhile is for --follow
    while True:
        last = chunk.next_offset >= end or not chunk.data
        on_page(decoder.decode(chunk.data, final=last), chunk)
        if last:
            return chunk.next_offset
        chunk = jobs.logs(job_id, chunk.next_offset, limit=jobs.log_page_max)
