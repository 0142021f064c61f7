"""``%eksray``: create, watch, scale and use Ray clusters, and run jobs, from a notebook.

Loaded by ``%load_ext eksray_jupyter``, and without it in every kernel the Jupyter server
starts (its kernel provisioner adds ``--ext=eksray_jupyter``). Loading must stay cheap:
nothing here imports ray, and the backend is only built on the first ``%eksray`` call.

Output goes through IPython's display system with ``text/plain`` and ``text/html`` in one
bundle (see :mod:`.present`). Errors are one line: argparse and :class:`EKSRayError`
become IPython ``UsageError`` (shown without a traceback, and it stops "run all"), and
argparse never exits the kernel.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import display

from . import console, present
from .console import Parser, ParserExit, UsageProblem
from .core.accounting import report_csv
from .core.errors import BackendError, EKSRayError, InvalidRequestError, NotReadyError
from .core.models import Cluster
from .core.net import port_open
from .core.ray_auth import AUTH_MODE_ENV, TOKEN_PATH_ENV
from .core.service import CLUSTER_ENV, CONNECTABLE_PHASES, ClusterService, Connection
from .jobs.models import Job, JobState
from .jobs.runner import STOP_WAIT_S
from .kernel_driver import DriverGuard, bind_kernel, ray_connected_address, same_address, set_driver_env
from .services import Services

if TYPE_CHECKING:
    from .jobs.service import JobService

HINT = "Create one with %eksray up, or choose one with %eksray use NAME."
JOB_HINT = 'Submit one with %eksray job submit --entrypoint "python main.py".'


def build_parser() -> Parser:
    parser = Parser(
        prog="%eksray",
        description="Ray clusters from this notebook. New kernels connect to your active cluster: "
        "`import ray; ray.init()` needs no address.",
        epilog="Help on one command: %eksray COMMAND --help",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    add = console.command_adder(sub)
    console.add_create_options(add("up", "create a cluster, make it active and point this kernel at it"))
    console.add_cluster_commands(
        add,
        follow_help="keep showing new events (interrupt to stop)",
        dashboard_help="a link to the cluster's Ray dashboard",
    )
    add("use", "make a cluster active: new kernels and ray.init() here connect to it").add_argument(
        "name", metavar="NAME"
    )
    add("connect", "connect this kernel to a cluster now (ray.init), no restart needed").add_argument(
        "name", nargs="?", metavar="NAME", help="default: the active cluster"
    )
    add("down", "delete a cluster and stop all its processes").add_argument("name", metavar="NAME")
    console.add_usage_options(add("usage", console.USAGE_SUMMARY))

    job = add("job", "run a command on a Ray cluster created for it; keep its log and results")
    jobs = job.add_subparsers(dest="job_command", metavar="JOB_COMMAND", parser_class=Parser)
    console.add_job_commands(
        console.command_adder(jobs),
        follow_help="keep showing the log until the job ends",
        results_help="save the result files of a job next to this notebook's kernel",
    )
    return parser


@magics_class
class EKSRayMagics(Magics):
    def __init__(self, shell: Any, services_factory: Callable[[], Services] | None = None) -> None:
        super().__init__(shell)
        self._services_factory = services_factory or Services.from_environment
        self._services: Services | None = None
        self.parser = build_parser()

    @property
    def services(self) -> Services:
        if self._services is None:
            self._services = self._services_factory()
            # Watch and follower threads must stop before the kernel's interpreter finalizes.
            atexit.register(self._services.close)
        return self._services

    @property
    def clusters(self) -> ClusterService:
        return self.services.clusters

    @property
    def jobs(self) -> JobService:
        return self.services.jobs

    @line_magic
    def eksray(self, line: str) -> None:
        """Ray clusters from this notebook; ``%eksray --help`` lists the commands."""
        try:
            args = self.parser.parse_args(shlex.split(line))
        except ParserExit:
            return  # --help was printed
        except UsageProblem as e:
            raise UsageError(f"{e.message} (see {e.prog} --help)") from None
        except ValueError as e:  # shlex: unbalanced quotes
            raise UsageError(f"%eksray: {e}") from None
        if args.command is None:
            self.parser.print_help()
            return
        command = args.command
        if command == "job":
            if args.job_command is None:
                with contextlib.suppress(ParserExit):
                    self.parser.parse_args(["job", "--help"])
                return
            command = f"job_{args.job_command}"
        try:
            getattr(self, f"_cmd_{command}")(args)
        except EKSRayError as e:
            raise UsageError(f"%eksray {command.replace('_', ' ')}: {e.message}") from None

    # --- output --------------------------------------------------------------------------

    @staticmethod
    def _show(view: present.View) -> None:
        display(view.bundle(), raw=True)

    def _say(self, text: str, link: present.Link | None = None) -> None:
        self._show(present.paragraph(text, link))

    def say_in_cell(self, text: str) -> None:
        self._say(text)

    def _dashboard_url(self, cluster: Cluster) -> str | None:
        return console.dashboard_link(self.clusters, cluster)

    def _wait(self, name: str, timeout: float, active: bool) -> Cluster | None:
        """Wait with a display that updates in place; None if the user interrupted."""
        handle: Any = None
        last: str | None = None

        def show(cluster: Cluster, elapsed: float) -> None:
            nonlocal handle, last
            view = present.progress(cluster, elapsed)
            if handle is None:
                handle = display(view.bundle(), raw=True, display_id=True)
            elif view.text != last:
                handle.update(view.bundle(), raw=True)
            last = view.text

        try:
            cluster = console.wait(self.clusters, name, timeout, show)
        except KeyboardInterrupt:
            self._say(f"Stopped waiting; {name} carries on. %eksray status {name} shows where it is.")
            return None
        view = present.cluster_detail(cluster, self._dashboard_url(cluster), active=active)
        if handle is not None:
            handle.update(view.bundle(), raw=True)
        else:
            self._show(view)
        return cluster

    def _point_kernel_at(self, connection: Connection) -> None:
        """Make a bare ``ray.init()`` in this kernel connect to the cluster (as a new kernel would)."""
        current = ray_connected_address()
        connected_elsewhere = current is not None and not same_address(current, connection.address)
        # A running driver keeps its cluster's token until %eksray connect switches it.
        set_driver_env(connection, reload_ray=not connected_elsewhere)
        if connected_elsewhere:
            self._say(
                f"This kernel's Ray session still uses {current}; "
                f"%eksray connect {connection.name} switches it."
            )

    # --- commands ------------------------------------------------------------------------

    def _cmd_up(self, args: argparse.Namespace) -> None:
        request = console.create_request(
            self.clusters,
            name=args.name,
            profile=args.profile,
            workers=args.workers,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            lifecycle=console.lifecycle_request(args),
        )
        cluster = self.clusters.create(request)
        name = cluster.name
        self.clusters.use(name)
        self._point_kernel_at(self.clusters.connection(name, cluster))
        if not args.wait:
            self._show(present.cluster_detail(cluster, None, active=True))
            self._say(
                f"{name} is starting and is now your active cluster. %eksray status {name} shows progress."
            )
            return
        ready = self._wait(name, args.timeout, active=True)
        if ready is not None:
            self._say(
                f"{name} is ready and active: ray.init() in this kernel and in new kernels connects to it."
            )

    def _cmd_list(self, args: argparse.Namespace) -> None:
        clusters = self.clusters.list()
        active = self.clusters.active_of(clusters)
        links = {c.name: self._dashboard_url(c) for c in clusters}
        self._show(present.cluster_list(clusters, active.name if active else None, links, HINT))

    def _cmd_status(self, args: argparse.Namespace) -> None:
        cluster, active = console.status(self.clusters, args.name, HINT)
        cluster = self.clusters.accounting.with_use(cluster)
        cost = self.clusters.accounting.cluster_cost(cluster)
        view = present.cluster_detail(cluster, self._dashboard_url(cluster), active=active, cost=cost)
        self._show(present.join(view, present.timeline_view(cluster)) if args.timeline else view)

    def _cmd_usage(self, args: argparse.Namespace) -> None:
        report = self.clusters.accounting.report()
        if args.csv:
            print(report_csv(report), end="")
            return
        self._show(present.usage_view(report))

    def _cmd_scale(self, args: argparse.Namespace) -> None:
        request = console.scale_request(args.group, args.replicas, args.min_replicas, args.max_replicas)
        cluster = self.clusters.scale(args.name, request)
        if args.wait:
            self._wait(cluster.name, args.timeout, active=self.clusters.active_name() == cluster.name)
        else:
            self._show(present.cluster_detail(cluster, self._dashboard_url(cluster)))

    def _cmd_events(self, args: argparse.Namespace) -> None:
        name = console.resolve_name(self.clusters, args.name, HINT)
        events = self.clusters.events(name)
        self._show(present.events_view(events))
        if not args.follow:
            return
        print(f"Following events of {name}; interrupt the kernel to stop.", flush=True)
        try:
            console.follow_events(
                self.clusters,
                name,
                lambda e: print(present.event_line(e), flush=True),
                seen={e.id for e in events},
            )
        except KeyboardInterrupt:
            return
        print(f"{name} was deleted.", flush=True)

    def _cmd_dashboard(self, args: argparse.Namespace) -> None:
        name = console.resolve_name(self.clusters, args.name, HINT)
        url = console.require_dashboard(self.clusters, name)
        self._say(f"Ray dashboard of {name}:", present.Link(url, url))

    def _cmd_use(self, args: argparse.Namespace) -> None:
        cluster = self.clusters.use(args.name)
        self._point_kernel_at(self.clusters.connection(cluster.name, cluster))
        self._say(f"{cluster.name} is your active cluster: new kernels and ray.init() here connect to it.")

    def _cmd_connect(self, args: argparse.Namespace) -> None:
        name = console.resolve_name(self.clusters, args.name, HINT)
        cluster, address, cpus = self._connect_driver(name)
        url = self._dashboard_url(cluster)
        self._say(
            f"Connected to {name} at {address} ({cpus:g} CPUs).",
            present.Link("Ray dashboard", url) if url else None,
        )

    def _connect_driver(self, name: str) -> tuple[Cluster, str, float]:
        """Connect this kernel's Ray driver to ``name`` (if not already): the cluster, its
        address and its CPUs."""
        cluster = self.clusters.get(name)
        if cluster.phase not in CONNECTABLE_PHASES:
            raise NotReadyError(
                f"{name} is {cluster.phase.value}; only a running cluster can be connected to."
            )
        connection = self.clusters.connection(name, cluster)
        address = connection.address
        # A direct GCS address that does not answer would make ray.init() hang for a minute.
        if not address.startswith("ray://") and not port_open(address, timeout=3.0):
            raise NotReadyError(
                f"Nothing answers at {address}; is {name} up? %eksray status {name} shows it."
            )
        current = ray_connected_address()
        if current is None or not same_address(current, address):
            import ray  # only here: importing ray costs about a second

            if current is not None:
                ray.shutdown()
            set_driver_env(connection)
            try:
                ray.init(address=address)
            except Exception as e:  # Ray raises ConnectionError, RuntimeError, ...: one line for the user
                raise BackendError(f"Could not connect to {name} at {address}: {e}") from None
        import ray

        bind_kernel(self.clusters, name)
        return cluster, address, ray.cluster_resources().get("CPU", 0)

    def reconnect_after_resume(self, name: str) -> str:
        """The driver guard's reconnect (kernel_driver.py): a new driver on the resumed cluster."""
        _cluster, address, cpus = self._connect_driver(name)
        return (
            f"Reconnected this kernel to {name} at {address} ({cpus:g} CPUs): it was suspended and "
            "resumed, so Ray objects and actors from before are gone."
        )

    def _cmd_suspend(self, args: argparse.Namespace) -> None:
        name = console.resolve_name(self.clusters, args.name, HINT)
        cluster = self.clusters.get(name)
        if same_address(ray_connected_address(), cluster.address):
            sys.modules["ray"].shutdown()  # its nodes stop: a connected driver would only see errors
        cluster = self.clusters.suspend(name, "Suspended from a notebook")
        self._show(present.cluster_detail(cluster, None))
        self._say(f"{name} is suspended: no Ray node runs. %eksray resume {name} starts it again.")

    def _cmd_resume(self, args: argparse.Namespace) -> None:
        name = console.resolve_name(self.clusters, args.name, HINT)
        cluster = self.clusters.resume(name)
        active = self.clusters.active_name() == name
        if not args.wait:
            self._show(present.cluster_detail(cluster, None, active=active))
            self._say(f"{name} is starting. %eksray connect {name} connects this kernel once it is ready.")
            return
        if self._wait(name, args.timeout, active=active) is not None:
            self._say(f"{name} is ready again. %eksray connect {name} connects this kernel to it.")

    def _cmd_keepalive(self, args: argparse.Namespace) -> None:
        name = console.resolve_name(self.clusters, args.name, HINT)
        self.clusters.keepalive(name, "a notebook")
        self._say(f"{name} is kept running: its idle time starts again now.")

    def _cmd_down(self, args: argparse.Namespace) -> None:
        cluster = self.clusters.get(args.name)
        address = cluster.address
        if same_address(ray_connected_address(), address):
            sys.modules["ray"].shutdown()  # a driver on a deleted cluster only produces errors
        self.clusters.delete(args.name)
        if os.environ.get(CLUSTER_ENV) == args.name or same_address(os.environ.get("RAY_ADDRESS"), address):
            # ray.init() without an address falls back to its default (a new local instance).
            for key in ("RAY_ADDRESS", CLUSTER_ENV, AUTH_MODE_ENV, TOKEN_PATH_ENV):
                os.environ.pop(key, None)
        self._say(f"Deleted {args.name}.")

    # --- jobs ----------------------------------------------------------------------------

    def _follow_job(self, job: Job) -> Job | None:
        """Progress in one updating display while the cluster starts, then the log as cell output.

        None if the user interrupted (the job carries on).
        """
        handle: Any = None
        last: str | None = None

        def on_state(state: JobState, elapsed: float) -> None:
            nonlocal handle, last
            if state.value in console.WAITING_STATES:
                cluster = None
                if job.cluster_name:
                    try:
                        cluster = self.clusters.get(job.cluster_name)
                    except EKSRayError:
                        cluster = None  # not created yet
                line = present.job_progress_line(job.id, state, elapsed, cluster)
            else:
                line = f"{job.id}: {state.value}"
            if line == last:
                return
            view = present.paragraph(line)
            if handle is None:
                handle = display(view.bundle(), raw=True, display_id=True)
            else:
                handle.update(view.bundle(), raw=True)
            last = line

        try:
            return console.follow_job(
                self.jobs, job.id, lambda text: print(text, end="", flush=True), on_state
            )
        except KeyboardInterrupt:
            self._say(f"Stopped following; {job.id} carries on. %eksray job stop {job.id} stops it.")
            return None

    def _job_outcome(self, job: Job) -> None:
        """Show the ended job; a failed or stopped one fails the cell (so "run all" stops)."""
        self._show(present.job_detail(job))
        if not console.job_succeeded(job):
            raise UsageError(f"%eksray job submit: {present.job_end_line(job)}")

    def _cmd_job_submit(self, args: argparse.Namespace) -> None:
        if args.spec == "-":
            raise InvalidRequestError("A notebook has no standard input to read a spec from; name a file")
        job = console.submit_job(self.jobs, args)
        if not args.follow:
            self._show(present.job_detail(job))
            self._say(f"{job.id} is {job.state.value}. %eksray job logs {job.id} --follow streams its log.")
            return
        ended = self._follow_job(job)
        if ended is not None:
            self._job_outcome(ended)

    def _cmd_job_list(self, args: argparse.Namespace) -> None:
        jobs, warnings = self.jobs.list_with_warnings()
        self._show(present.job_list(jobs, JOB_HINT, warnings))

    def _cmd_job_status(self, args: argparse.Namespace) -> None:
        self._show(present.job_detail(self.jobs.get(args.job_id)))

    def _cmd_job_logs(self, args: argparse.Namespace) -> None:
        offset = 0
        if not args.follow or args.tail is not None:  # page by page, each printed as it comes
            offset = console.show_job_log(
                self.jobs, args.job_id, lambda text, _: print(text, end="", flush=True), args.tail
            )
            if not args.follow:
                return
        try:
            job = console.follow_job(
                self.jobs, args.job_id, lambda text: print(text, end="", flush=True), offset=offset
            )
        except KeyboardInterrupt:
            return
        self._say(present.job_end_line(job))

    def _cmd_job_results(self, args: argparse.Namespace) -> None:
        saved = console.save_results(self.jobs, args.job_id, args.paths, args.to)
        rows: list[list[present.Cell]] = [[s["path"], s["size"], s["savedTo"]] for s in saved]
        table = present.Table(["result", "size", "saved to"], rows)
        self._show(present.View(table.text(), table.html()))

    def _cmd_job_stop(self, args: argparse.Namespace) -> None:
        job = self.jobs.stop(args.job_id, wait=STOP_WAIT_S)
        self._show(present.job_detail(job))
        if not job.terminal:
            self._say(f"{job.id} is still stopping; %eksray job status {job.id} shows when it has.")


def load_ipython_extension(ipython: Any) -> None:
    magics = EKSRayMagics(ipython)
    ipython.register_magics(magics)
    DriverGuard(magics.reconnect_after_resume, magics.say_in_cell).install(ipython)
