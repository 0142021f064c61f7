"""``eksray``: Ray clusters from a terminal or a script.

    eksray rc create [NAME] [-f SPEC.yaml] [--profile P] [--workers N] [--wait]
    eksray rc list | status | scale | events | dashboard | suspend | resume | keepalive | delete | use
    eksray rj submit [SPEC.yaml] [--entrypoint CMD] [--working-dir DIR] [--env K=V] [--follow] ...
    eksray rj list | status ID | logs ID [--follow] [--tail N] | stop ID

``rc`` is for Ray clusters, ``rj`` for RayJobs (docs/jobs.md). Every command acts through
the same services (:class:`~eksray_jupyter.services.Services`) as the server and the magics,
configured by the same Jupyter config files. Results go to stdout (``-o json`` for
scripts), progress and errors to stderr; a followed job's log goes to stdout (to stderr
with ``-o json``, so stdout stays one JSON document). Exit codes: 0 success, 1 failure
(the backend failed, the cluster or job is not there, the cluster failed to start, a
followed job failed or was stopped), 2 bad usage or invalid input.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__, console, present
from .console import Parser, ParserExit, UsageProblem
from .core.accounting import report_csv
from .core.errors import EKSRayError, InvalidRequestError
from .core.models import Cluster
from .core.processes import use_import_path
from .core.service import ClusterService
from .jobs.runner import STOP_WAIT_S
from .services import Services

if TYPE_CHECKING:
    from .jobs.models import Job, JobState
    from .jobs.service import JobService, LogChunk

OK, FAILED, USAGE = 0, 1, 2
HINT = "Create one with `eksray rc create`, or choose one with `eksray rc use NAME`."
JOB_HINT = 'Submit one with `eksray rj submit --entrypoint "python main.py"`.'


class CLI:
    """One invocation: the parsed arguments, the service and the output streams."""

    def __init__(
        self,
        args: argparse.Namespace,
        services_factory: Callable[[], Services],
        out: TextIO,
        err: TextIO,
    ) -> None:
        self.args = args
        self._services_factory = services_factory
        self._services: Services | None = None
        self.out = out
        self.err = err

    @property
    def services(self) -> Services:
        if self._services is None:
            self._services = self._services_factory()
        return self._services

    @property
    def clusters(self) -> ClusterService:
        return self.services.clusters

    @property
    def jobs(self) -> JobService:
        return self.services.jobs

    def close(self) -> None:
        """Stop the background threads: a watch thread left in a socket read can abort the interpreter's exit."""
        if self._services is not None:
            self._services.close()

    @property
    def as_json(self) -> bool:
        return self.args.output == "json"

    def emit(self, text: str | present.View, data: Any) -> None:
        """The command's result: ``data`` as JSON with ``-o json``, else the text."""
        if self.as_json:
            print(json.dumps(data, indent=2), file=self.out)
        else:
            print(str(text), file=self.out)

    def cluster_json(self, cluster: Cluster) -> dict[str, Any]:
        return cluster.to_dict(dashboard_url=console.dashboard_link(self.clusters, cluster))

    def wait(self, name: str) -> Cluster:
        """Wait for ``name`` with progress on stderr (rewritten in place on a terminal)."""
        tty = self.err.isatty()
        last: Any = None

        def show(cluster: Cluster, elapsed: float) -> None:
            nonlocal last
            line = present.progress_line(cluster, elapsed)
            state = (cluster.phase, cluster.reason, [(g.ready, g.desired) for g in cluster.worker_groups])
            if tty:
                print("\r\033[K" + line, end="", file=self.err, flush=True)
            elif state != last:
                print(line, file=self.err, flush=True)  # only changes: a log file stays short
            last = state

        try:
            return console.wait(self.clusters, name, self.args.timeout, show)
        finally:
            if tty:
                print(file=self.err)

    # --- rc commands -----------------------------------------------------------------------

    def rc_create(self) -> int:
        a = self.args
        base = console.load_spec_file(a.file) if a.file else None
        request = console.create_request(
            self.clusters,
            name=a.name,
            profile=a.profile,
            workers=a.workers,
            min_replicas=a.min_replicas,
            max_replicas=a.max_replicas,
            base=base,
            lifecycle=console.lifecycle_request(a),
        )
        cluster = self.clusters.create(request)
        if a.wait:
            cluster = self.wait(cluster.name)
        else:
            print(
                f"{cluster.name} is starting; `eksray rc status {cluster.name}` shows progress.",
                file=self.err,
            )
        self.emit(
            present.cluster_detail(cluster, console.dashboard_link(self.clusters, cluster)),
            self.cluster_json(cluster),
        )
        return OK

    def rc_list(self) -> int:
        clusters = self.clusters.list()
        active = self.clusters.active_of(clusters)
        links = {c.name: console.dashboard_link(self.clusters, c) for c in clusters}
        view = present.cluster_list(clusters, active.name if active else None, links, HINT)
        data = {
            "clusters": [c.to_dict(dashboard_url=links[c.name]) for c in clusters],
            "active": active.name if active else None,
        }
        self.emit(view, data)
        return OK

    def rc_status(self) -> int:
        cluster, active = console.status(self.clusters, self.args.name, HINT)
        cluster = self.clusters.accounting.with_use(cluster)
        link = console.dashboard_link(self.clusters, cluster)
        cost = self.clusters.accounting.cluster_cost(cluster)
        view = present.cluster_detail(cluster, link, active=active, cost=cost)
        if self.args.timeline:
            view = present.join(view, present.timeline_view(cluster))
        meter = cost.meter
        data = {
            **cluster.to_dict(dashboard_url=link),
            "active": active,
            "cost": {
                "dollarsPerHour": cost.dollars_per_hour,
                "accruedDollars": meter.accrued if meter else 0.0,
                "resourceHours": meter.resource_hours if meter else {},
                "priceUnknown": cost.unknown,
            },
        }
        self.emit(view, data)
        return OK

    def rc_prometheus_config(self) -> int:
        self.out.write(self.clusters.backend.prometheus_config())
        return OK

    def usage_report(self) -> int:
        report = self.clusters.accounting.report()
        if self.args.csv:
            self.out.write(report_csv(report))
            return OK
        self.emit(present.usage_view(report), report)
        return OK

    def rc_scale(self) -> int:
        a = self.args
        request = console.scale_request(a.group, a.replicas, a.min_replicas, a.max_replicas)
        cluster = self.clusters.scale(a.name, request)
        if a.wait:
            cluster = self.wait(a.name)
        self.emit(
            present.cluster_detail(cluster, console.dashboard_link(self.clusters, cluster)),
            self.cluster_json(cluster),
        )
        return OK

    def rc_events(self) -> int:
        name = console.resolve_name(self.clusters, self.args.name, HINT)
        events = self.clusters.events(name)
        if self.as_json and self.args.follow:
            for e in events:  # JSON lines, so a script can read a stream
                print(json.dumps(e.to_dict()), file=self.out, flush=True)
        else:
            self.emit(present.events_view(events), {"events": [e.to_dict() for e in events]})
        if not self.args.follow:
            return OK

        def show(event: Any) -> None:
            text = json.dumps(event.to_dict()) if self.as_json else present.event_line(event)
            print(text, file=self.out, flush=True)

        try:
            console.follow_events(self.clusters, name, show, seen={e.id for e in events})
        except KeyboardInterrupt:
            return OK
        print(f"{name} was deleted.", file=self.err)
        return OK

    def rc_dashboard(self) -> int:
        name = console.resolve_name(self.clusters, self.args.name, HINT)
        url = console.require_dashboard(self.clusters, name)
        self.emit(url, {"name": name, "url": url})
        return OK

    def rc_suspend(self) -> int:
        name = console.resolve_name(self.clusters, self.args.name, HINT)
        cluster = self.clusters.suspend(name, "Suspended from the CLI")
        self.emit(
            f"{name} is suspended: no Ray node runs. `eksray rc resume {name}` starts it again.",
            self.cluster_json(cluster),
        )
        return OK

    def rc_resume(self) -> int:
        name = console.resolve_name(self.clusters, self.args.name, HINT)
        cluster = self.clusters.resume(name)
        if self.args.wait:
            cluster = self.wait(name)
        else:
            print(f"{name} is starting; `eksray rc status {name}` shows progress.", file=self.err)
        self.emit(
            present.cluster_detail(cluster, console.dashboard_link(self.clusters, cluster)),
            self.cluster_json(cluster),
        )
        return OK

    def rc_keepalive(self) -> int:
        name = console.resolve_name(self.clusters, self.args.name, HINT)
        cluster = self.clusters.keepalive(name, "the CLI")
        self.emit(f"{name} is kept running: its idle time starts again now.", self.cluster_json(cluster))
        return OK

    def rc_delete(self) -> int:
        self.clusters.delete(self.args.name)
        self.emit(f"Deleted {self.args.name}.", {"name": self.args.name, "deleted": True})
        return OK

    def rc_env(self) -> int:
        """Shell lines that let a terminal's ``ray.init()`` (or ``ray job submit``) reach the cluster."""
        name = console.resolve_name(self.clusters, self.args.name, HINT)
        env = self.clusters.connection(name).driver_env()
        lines = [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
        self.emit("\n".join(lines), env)
        return OK

    def rc_use(self) -> int:
        cluster = self.clusters.use(self.args.name)
        address = cluster.address or self.clusters.connection_address(cluster.name)
        self.emit(
            f"{cluster.name} is your active cluster: new kernels connect to it (RAY_ADDRESS={address}).",
            {"name": cluster.name, "address": address},
        )
        return OK

    # --- admin commands --------------------------------------------------------------------

    def admin_reap(self) -> int:
        """Apply idle timeouts and lifetimes to every owner's clusters (core/keeper.py)."""
        from .core.keeper import Keeper, Outcome

        backend = self.clusters.backend
        config = self.clusters.config
        keeper = Keeper(
            backend, warning_seconds=config.lifecycle_warning_minutes * 60, dry_run=self.args.dry_run
        )

        def one_pass() -> list[Outcome]:
            outcomes = keeper.pass_over(backend.all_clusters())
            rows = [
                {
                    "owner": o.owner,
                    "name": o.name,
                    "decision": o.decision.action,
                    "acted": o.acted,
                    "reason": o.decision.reason or None,
                    "busy": list(o.busy),
                    "error": o.error,
                }
                for o in outcomes
            ]
            text = "\n".join(
                f"{r['owner']}/{r['name']}: {r['decision']}{' (done)' if r['acted'] else ''}"
                + (f" - {r['reason']}" if r["reason"] else "")
                + (f" [busy: {'; '.join(r['busy'])}]" if r["busy"] else "")
                + (f" [error: {r['error']}]" if r["error"] else "")
                for r in rows
            )
            self.emit(text or "No cluster has an idle timeout or lifetime.", {"clusters": rows})
            return outcomes

        outcomes = one_pass()
        while self.args.every:
            try:
                time.sleep(self.args.every)
            except KeyboardInterrupt:
                return OK
            outcomes = one_pass()
        return FAILED if any(o.error for o in outcomes) else OK

    # --- rj commands -----------------------------------------------------------------------

    def follow_job(self, job: Job) -> Job:
        """Stream ``job``'s log (stdout; stderr with -o json) with progress on stderr until it ends."""
        tty = self.err.isatty()
        log = self.err if self.as_json else self.out
        shown = False  # a progress line is on the terminal, to be cleared before log text
        log_begun = False  # the job's log has begun: its progress is what it prints
        last: Any = None

        def on_text(text: str) -> None:
            nonlocal shown, log_begun
            if shown:
                print("\r\033[K", end="", file=self.err, flush=True)
                shown = False
            log_begun = True
            print(text, end="", file=log, flush=True)

        def on_state(state: JobState, elapsed: float) -> None:
            nonlocal shown, last
            if log_begun:
                # The log can begin while the record still says "starting" (the runner writes
                # its first line, then the state): no "starting after" line among the log's.
                return
            if state.value not in console.WAITING_STATES:
                if shown:
                    print(file=self.err, flush=True)
                    shown = False
                return
            cluster = None
            if job.cluster_name:
                try:
                    cluster = self.clusters.get(job.cluster_name)
                except EKSRayError:
                    cluster = None  # not created yet
            line = present.job_progress_line(job.id, state, elapsed, cluster)
            key = (state, cluster and (cluster.phase, [(g.ready, g.desired) for g in cluster.worker_groups]))
            if tty:
                print("\r\033[K" + line, end="", file=self.err, flush=True)
                shown = True
            elif key != last:
                print(line, file=self.err, flush=True)
            last = key

        try:
            return console.follow_job(self.jobs, job.id, on_text, on_state)
        finally:
            if shown:
                print(file=self.err)

    def job_outcome(self, job: Job) -> int:
        print(present.job_end_line(job), file=self.err)
        return OK if console.job_succeeded(job) else FAILED

    def rj_submit(self) -> int:
        job = console.submit_job(self.jobs, self.args)
        if not self.args.follow:
            print(
                f"{job.id} is {job.state.value}; `eksray rj logs {job.id} --follow` streams its log.",
                file=self.err,
            )
            self.emit(present.job_detail(job), job.to_dict())
            return OK
        print(
            f"Submitted {job.id} (cluster {job.cluster_name}); Ctrl-C stops following, not the job.",
            file=self.err,
        )
        try:
            job = self.follow_job(job)
        except KeyboardInterrupt:
            print(
                f"Stopped following; {job.id} carries on (`eksray rj stop {job.id}` stops it).", file=self.err
            )
            return 130
        if self.as_json:
            self.emit("", job.to_dict())
        return self.job_outcome(job)

    def rj_list(self) -> int:
        jobs, warnings = self.jobs.list_with_warnings()
        for warning in warnings:
            print(f"eksray rj list: {warning}", file=self.err)
        self.emit(
            present.job_list(jobs, JOB_HINT),
            {"jobs": [j.to_dict() for j in jobs], "warnings": warnings},
        )
        return OK

    def rj_status(self) -> int:
        job = self.jobs.get(self.args.job_id)
        self.emit(present.job_detail(job), job.to_dict())
        return OK

    def rj_logs(self) -> int:
        job_id = self.args.job_id

        def page(text: str, chunk: LogChunk) -> None:
            if self.as_json:  # one object per page read (JSON lines): a long log is never one document
                body = {
                    "id": job_id,
                    "state": chunk.state.value,
                    "log": text,
                    "offset": chunk.offset,
                    "nextOffset": chunk.next_offset,
                    "size": chunk.size,
                }
                print(json.dumps(body), file=self.out, flush=True)
            elif text:
                print(text, end="", file=self.out, flush=True)

        offset = 0
        if not self.args.follow or self.args.tail is not None:
            offset = console.show_job_log(self.jobs, job_id, page, self.args.tail)
            if not self.args.follow:
                return OK

        def show(text: str) -> None:
            if self.as_json:  # JSON lines, so a script can read a stream
                print(json.dumps({"id": job_id, "log": text}), file=self.out, flush=True)
            else:
                print(text, end="", file=self.out, flush=True)

        try:
            job = console.follow_job(self.jobs, job_id, show, offset=offset)
        except KeyboardInterrupt:
            return OK
        print(present.job_end_line(job), file=self.err)
        return OK

    def rj_results(self) -> int:
        a = self.args
        saved = console.save_results(self.jobs, a.job_id, a.paths, a.to)
        text = "\n".join(f"saved {s['savedTo']} ({s['size']} bytes)" for s in saved)
        self.emit(text, saved)
        return OK

    def rj_stop(self) -> int:
        job = self.jobs.stop(self.args.job_id, wait=STOP_WAIT_S)
        if not job.terminal:
            print(
                f"{job.id} is still stopping; `eksray rj status {job.id}` shows when it has.", file=self.err
            )
        self.emit(present.job_detail(job), job.to_dict())
        return OK


def build_parser() -> Parser:
    parser = Parser(
        prog="eksray", description="Ray clusters and jobs (local or KubeRay on EKS) from the terminal."
    )
    parser.add_argument("--version", action="version", version=f"eksray-jupyter {__version__}")
    parser.set_defaults(help_parser=parser)
    nouns = parser.add_subparsers(dest="noun", metavar="COMMAND", parser_class=Parser)
    rc = nouns.add_parser(
        "rc", help="Ray clusters", description="Create, watch, scale and delete Ray clusters."
    )
    rc.set_defaults(help_parser=rc)
    sub = rc.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    output = Parser(add_help=False)
    output.add_argument(
        "-o", "--output", choices=("text", "json"), default="text", help="result format (default: text)"
    )

    add = console.command_adder(sub, parents=(output,))
    create = add("create", "create a cluster from flags or a spec file")
    console.add_create_options(create)
    create.add_argument(
        "-f", "--file", metavar="SPEC", help="cluster spec, YAML or JSON ('-' reads stdin); flags override it"
    )
    console.add_cluster_commands(
        add,
        follow_help="keep printing new events (Ctrl-C stops)",
        dashboard_help="the URL of the cluster's Ray dashboard",
    )
    add("delete", "delete a cluster and stop all its processes").add_argument("name", metavar="NAME")
    add("prometheus-config", "a Prometheus config scraping your clusters' Ray metrics (docs/usage.md)")
    add("use", "make a cluster active: new Jupyter kernels connect to it").add_argument(
        "name", metavar="NAME"
    )
    add(
        "env", 'shell exports that connect ray.init() in this terminal: eval "$(eksray rc env NAME)"'
    ).add_argument("name", nargs="?", metavar="NAME", help="default: the active cluster")

    usage = nouns.add_parser(
        "usage",
        help=console.USAGE_SUMMARY,
        description=console.USAGE_SUMMARY[0].upper() + console.USAGE_SUMMARY[1:] + ".",
        parents=[output],
    )
    usage.set_defaults(help_parser=usage, command="report")
    console.add_usage_options(usage)

    admin = nouns.add_parser(
        "admin",
        help="administration",
        description="For administrators: act on every user's clusters (needs access to all of them).",
    )
    admin.set_defaults(help_parser=admin)
    admin_add = console.command_adder(
        admin.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser), parents=(output,)
    )
    reap = admin_add(
        "reap", "warn, suspend or delete every user's idle or expired clusters (docs/lifecycle.md)"
    )
    reap.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    reap.add_argument(
        "--every",
        type=console.seconds,
        metavar="S",
        help="keep going, a pass every S seconds (default: one pass, as from a CronJob)",
    )

    rj = nouns.add_parser(
        "rj",
        help="Ray jobs",
        description="Run a command on a Ray cluster created for it (or an existing one); keep its log "
        "and result files.",
    )
    rj.set_defaults(help_parser=rj)
    jobs = rj.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    submit = console.add_job_commands(
        console.command_adder(jobs, parents=(output,)),
        follow_help="keep printing until the job ends (Ctrl-C stops)",
        results_help="save the result files of a job here",
    )
    submit.epilog = "With --follow the exit code is the job's outcome: 0 succeeded, 1 failed or stopped."
    return parser


def command_name(args: argparse.Namespace) -> str:
    """How the command reads in an error: ``eksray rc create``, ``eksray usage``."""
    return "eksray usage" if args.noun == "usage" else f"eksray {args.noun} {args.command}"


def main(
    argv: Sequence[str] | None = None,
    services_factory: Callable[[], Services] = Services.from_environment,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one command; returns the exit code (never raises SystemExit itself)."""
    use_import_path()  # `rc create` validates with jsonschema: 2 s less to import it
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except ParserExit as e:
        return e.status  # --help, --version
    except UsageProblem as e:
        print(f"{e.usage}\n{e.message}", file=err)
        return USAGE
    if getattr(args, "command", None) is None:
        args.help_parser.print_help(err)
        return USAGE
    cli = CLI(args, services_factory, out, err)
    try:
        return int(getattr(cli, f"{args.noun}_{args.command.replace('-', '_')}")())
    except InvalidRequestError as e:
        print(f"{command_name(args)}: {e.message}", file=err)
        return USAGE
    except EKSRayError as e:
        print(f"{command_name(args)}: {e.message}", file=err)
        return FAILED
    except KeyboardInterrupt:
        print("Interrupted.", file=err)
        return 130
    finally:
        cli.close()


if __name__ == "__main__":
    sys.exit(main())
