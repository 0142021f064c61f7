"""How clusters, worker groups, events and jobs look: one definition for the magics and the CLI.

Every view comes in two renderings, plain text and HTML, built from the same rows. The
magics send both in one display bundle (``text/plain`` + ``text/html``: JupyterLab and VS
Code show the HTML, a terminal client the text); the CLI prints the text. Nothing here
talks to a backend: callers pass the clusters, links and events they already have.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .core import quotas, usage
from .core.models import Cluster, ClusterEvent

if TYPE_CHECKING:
    from .core.accounting import ClusterCost
    from .jobs.models import Job, JobState

TABLE_STYLE = "border-collapse: collapse; margin: 0.25em 0"


@dataclass(frozen=True)
class Link:
    text: str
    url: str

    def html(self) -> str:
        return (
            f'<a href="{html.escape(self.url)}" target="_blank" rel="noopener noreferrer">'
            f"{html.escape(self.text)}</a>"
        )


Cell = str | int | float | Link | None


def _text(cell: Cell) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, Link):
        return cell.url
    return str(cell)


def _html(cell: Cell) -> str:
    if isinstance(cell, Link):
        return cell.html()
    return html.escape(_text(cell))


@dataclass
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[Cell]]

    def text(self) -> str:
        cells = [[h.upper() for h in self.headers]] + [[_text(c) for c in row] for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.headers))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
        )

    def html(self) -> str:
        head = "".join(f'<th style="text-align: left">{html.escape(h)}</th>' for h in self.headers)
        body = "".join(
            "<tr>" + "".join(f'<td style="text-align: left">{_html(c)}</td>' for c in row) + "</tr>"
            for row in self.rows
        )
        return f'<table class="eksray-table" style="{TABLE_STYLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


@dataclass(frozen=True)
class View:
    """One piece of output in its two renderings."""

    text: str
    html: str

    def bundle(self) -> dict[str, str]:
        return {"text/plain": self.text, "text/html": self.html}

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.text


def join(*views: View) -> View:
    return View("\n".join(v.text for v in views if v.text), "".join(v.html for v in views))


def paragraph(text: str, link: Link | None = None, bold: str | None = None) -> View:
    """A line of text, optionally starting with a bold name and ending with a link."""
    plain = " ".join(p for p in (bold, text, link.url if link else None) if p)
    parts = [f"<b>{html.escape(bold)}</b>" if bold else "", html.escape(text), link.html() if link else ""]
    return View(plain, '<div class="eksray-line">' + " ".join(p for p in parts if p) + "</div>")


def age(created_at: float, now: float | None = None) -> str:
    seconds = max(0, int((now if now is not None else time.time()) - created_at))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def clock(timestamp: float, now: float | None = None) -> str:
    """Local time of an event; the date only when it is not from the last day."""
    when = datetime.fromtimestamp(timestamp)
    recent = (now if now is not None else time.time()) - timestamp < 86400
    return when.strftime("%H:%M:%S" if recent else "%Y-%m-%d %H:%M:%S")


def workers(cluster: Cluster) -> str:
    """``ready/desired`` workers over all groups."""
    ready = sum(g.ready for g in cluster.worker_groups)
    desired = sum(g.desired for g in cluster.worker_groups)
    return f"{ready}/{desired}"


def _resources(resources: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in resources.items() if v) or "-"


# --- clusters ------------------------------------------------------------------------------


def cluster_list(
    clusters: Sequence[Cluster],
    active: str | None,
    dashboards: dict[str, str | None],
    empty_hint: str,
) -> View:
    """All clusters: ``*`` marks the active one (the one new kernels connect to)."""
    if not clusters:
        return paragraph(f"No clusters. {empty_hint}")
    rows: list[list[Cell]] = []
    for c in clusters:
        url = dashboards.get(c.name)
        rows.append(
            [
                "*" if c.name == active else "",
                c.name,
                c.phase.value,
                workers(c),
                age(c.created_at),
                c.address,
                Link("dashboard", url) if url else None,
            ]
        )
    table = Table(["", "name", "phase", "workers", "age", "address", "dashboard"], rows)
    footer = "* active: new kernels connect to it" if active else ""
    return View(
        table.text() + (f"\n{footer}" if footer else ""),
        table.html() + (f"<div><small>{html.escape(footer)}</small></div>" if footer else ""),
    )


def groups_table(cluster: Cluster) -> Table:
    """Worker groups: ``ready`` workers up, ``desired`` being brought up, the autoscaler's bounds."""
    rows: list[list[Cell]] = [
        [g.group_name, g.ready, g.desired, g.min_replicas, g.max_replicas, _resources(g.resources)]
        for g in cluster.worker_groups
    ]
    return Table(["group", "ready", "desired", "min", "max", "resources"], rows)


def cluster_detail(
    cluster: Cluster, dashboard: str | None, active: bool = False, cost: ClusterCost | None = None
) -> View:
    """One cluster: its phase and reason, address, dashboard link, worker groups, and what its
    nodes use and it costs."""
    facts = [cluster.phase.value]
    if active:
        facts.append("active")
    head = paragraph(f"({', '.join(facts)}) address {cluster.address or '-'}", bold=cluster.name)
    parts = [head]
    if cluster.reason:
        parts.append(paragraph(f"Reason: {cluster.reason}"))
    if dashboard:
        parts.append(paragraph("Ray dashboard:", Link(dashboard, dashboard)))
    if life := lifecycle_text(cluster):
        parts.append(paragraph(life))
    if cluster.worker_groups:
        table = groups_table(cluster)
        parts.append(View(table.text(), table.html()))
    else:
        parts.append(paragraph("No worker groups: tasks run on the head node."))
    if any(n.state != "dead" for n in cluster.nodes):
        table = utilisation_table(cluster)
        parts.append(paragraph("Nodes: what Ray has in use of what it schedules there."))
        parts.append(View(table.text(), table.html()))
    if cost is not None:
        parts.append(paragraph(cost_text(cost)))
    return join(*parts)


# --- utilisation and cost ----------------------------------------------------------------------


def _share(used: float, total: float, unit: str = "", digits: int = 1) -> str:
    if not total:
        return "-"
    return f"{used:.{digits}f}/{total:.{digits}f}{unit} ({used / total:.0%})"


def utilisation_table(cluster: Cluster) -> Table:
    """Per running node: what Ray has in use against what it may schedule there."""
    rows: list[list[Cell]] = []
    for node in cluster.nodes:
        if node.state == "dead":
            continue
        total, used = usage.from_ray(node.resources), usage.from_ray(node.used)
        rows.append(
            [
                node.group if node.kind == "worker" else "head",
                node.id[:12],
                node.state,
                _share(used["cpu"], total["cpu"], digits=1),
                _share(used["gpu"], total["gpu"], digits=0),
                _share(used["memoryGiB"], total["memoryGiB"], " GiB"),
                _share(used["objectStoreGiB"], total["objectStoreGiB"], " GiB", digits=2),
            ]
        )
    return Table(["group", "node", "state", "cpu used", "gpu used", "memory used", "object store used"], rows)


def money(value: float) -> str:
    return "under $0.01" if 0 < value < 0.005 else f"${value:,.2f}"


def cost_text(cost: ClusterCost) -> str:
    """ "Cost: $0.08/h, $0.52 since created (13.0 CPU-h, 26.0 GiB-h)."."""
    hours = usage.resource_hours_text(cost.meter.resource_hours) if cost.meter else "nothing yet"
    accrued = cost.meter.accrued if cost.meter else 0.0
    if cost.suspended:
        return f"Cost: suspended, costs nothing now; {money(accrued)} since created ({hours})."
    if not cost.priced:
        return f"Usage: {hours} since created (no prices are set, so no dollars are shown)."
    text = f"Cost: {money(cost.dollars_per_hour)}/h, {money(accrued)} since created ({hours})."
    if cost.unknown:
        text += " Price unknown for some nodes: " + "; ".join(cost.unknown) + "."
    return text


def usage_view(report: dict[str, Any]) -> View:
    """``eksray usage`` / ``%eksray usage``: clusters, totals, quota and budget."""
    rows: list[list[Cell]] = []
    for row in report["clusters"]:
        res, used = row["resources"], row["used"]
        rows.append(
            [
                row["name"],
                row["phase"],
                _share(used["cpu"], res["cpu"]),
                _share(used["gpu"], res["gpu"], digits=0),
                _share(used["memoryGiB"], res["memoryGiB"], " GiB"),
                "suspended: $0/h" if row["suspended"] else f"{money(row['dollarsPerHour'])}/h",
                money(row["accruedDollars"]),
                usage.resource_hours_text(row["resourceHours"]),
            ]
        )
    totals = report["totals"]
    parts: list[View] = []
    if rows:
        table = Table(
            [
                "cluster",
                "phase",
                "cpu used",
                "gpu used",
                "memory used",
                "now",
                "since created",
                "resource-hours",
            ],
            rows,
        )
        parts.append(View(table.text(), table.html()))
    else:
        parts.append(paragraph("No clusters."))
    parts.append(
        paragraph(
            f"Total: {money(totals['dollarsPerHour'])}/h now, {money(totals['accruedDollars'])} accrued by these "
            f"clusters; {money(totals['closedDollars'])} this month by clusters since deleted."
        )
    )
    quota = report["quota"]
    figures = []
    for name, (key, words, unit) in quotas.LIMITS.items():
        limit = quota["limits"].get(name)
        if limit is not None:
            now = quota["usage"].get(key, 0.0)
            shown = money(now) + "/h" if key == "dollarsPerHour" else f"{now:g}{unit}"
            cap = money(limit) + "/h" if key == "dollarsPerHour" else f"{limit:g}{unit}"
            figures.append(f"{words} {shown} of {cap}")
    if figures:
        parts.append(paragraph("Quota (at each cluster's maximum): " + ", ".join(figures) + "."))
    budget = report["budget"]
    if budget["monthlyBudget"] is not None:
        state = {"ok": "", "warning": " — over 80 %", "exceeded": " — used up: new clusters are refused"}
        parts.append(
            paragraph(
                f"Budget {budget['month']}: {money(budget['spentDollars'])} of {money(budget['monthlyBudget'])}"
                f"{state[budget['state']]}."
            )
        )
    return join(*parts)


def lifecycle_text(cluster: Cluster) -> str:
    """The lifecycle in words: "Lifecycle: suspend after 30 min idle. Last active 14:02:11."."""
    life = cluster.spec.get("lifecycle") or {}
    rules = []
    if life.get("idleTimeoutMinutes"):
        rules.append(f"{life.get('idleAction') or 'suspend'} after {life['idleTimeoutMinutes']} min idle")
    if life.get("suspendedTtlHours"):
        rules.append(f"delete after {life['suspendedTtlHours']:g} h suspended")
    if life.get("maxLifetimeHours"):
        rules.append(f"delete {life['maxLifetimeHours']:g} h after creation")
    text = f"Lifecycle: {'; '.join(rules)}." if rules else ""
    if cluster.suspended_at:
        text += f" Suspended since {clock(cluster.suspended_at)}."
    elif rules and cluster.last_active_at:
        text += f" Last active {clock(cluster.last_active_at)}."
    return text.strip()


def progress(cluster: Cluster, elapsed: float) -> View:
    """What a ``--wait`` shows while nodes come up."""
    line = f"{cluster.phase.value} after {elapsed:.0f} s; workers ready {workers(cluster)}"
    if cluster.reason:
        line += f" ({cluster.reason})"
    head = paragraph(line, bold=f"Waiting for {cluster.name}:")
    if not cluster.worker_groups:
        return head
    table = groups_table(cluster)
    return join(head, View(table.text(), table.html()))


def progress_line(cluster: Cluster, elapsed: float) -> str:
    """The one-line form of :func:`progress`, for a terminal."""
    groups = ", ".join(f"{g.group_name} {g.ready}/{g.desired}" for g in cluster.worker_groups)
    return f"{cluster.name}: {cluster.phase.value} after {elapsed:.0f} s" + (
        f"; workers ready {groups}" if groups else ""
    )


def timeline_view(cluster: Cluster) -> View:
    """The steps of the cluster's latest start: when (and seconds since the first) each happened."""
    steps = cluster.timeline
    if not steps:
        return paragraph("No start-up timeline: the cluster is not running, or its backend cannot tell.")
    first = steps[0].at
    rows: list[list[Cell]] = [
        [
            clock(m.at),
            f"+{m.at - first:.1f}s",
            m.message + (f" ({m.seconds:.1f}s)" if m.seconds is not None else ""),
        ]
        for m in steps
    ]
    table = Table(["time", "since start", "step"], rows)
    return join(paragraph("", bold="Start-up timeline"), View(table.text(), table.html()))


# --- events --------------------------------------------------------------------------------


def event_line(event: ClusterEvent) -> str:
    return f"{clock(event.time)}  {event.source:<10}  {event.severity.value:<7}  {event.message}"


def events_view(events: Iterable[ClusterEvent]) -> View:
    events = list(events)
    if not events:
        return paragraph("No events yet.")
    table = Table(
        ["time", "source", "severity", "message"],
        [[clock(e.time), e.source, e.severity.value, e.message] for e in events],
    )
    return View(table.text(), table.html())


# --- jobs ----------------------------------------------------------------------------------


def span(seconds: float) -> str:
    """A duration: ``42s``, ``3m 05s``, ``2h 01m``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def job_duration(job: Job, now: float | None = None) -> str:
    """From submission (cluster start included, as the deadline counts) to the end, or until now."""
    end = job.finished_at if job.finished_at is not None else (now if now is not None else time.time())
    return span(end - job.created_at)


def _log_location(job: Job) -> str | None:
    if not job.location:
        return None
    if job.location.startswith("s3://"):
        return job.location.rstrip("/") + "/logs/"
    return job.location.rstrip("/") + "/log.txt"


def _results_location(job: Job) -> str | None:
    if not job.location or not job.results:
        return None
    return job.location.rstrip("/") + "/results/"


def _cluster_note(job: Job) -> str:
    if not job.cluster_name:
        return "-"
    if not job.cluster_created:
        return f"{job.cluster_name} (existing)"
    if job.cluster_deleted_at is not None:
        return f"{job.cluster_name} (created for the job, deleted)"
    return f"{job.cluster_name} (created for the job)"


def job_list(jobs: Sequence[Job], empty_hint: str, warnings: Sequence[str] = ()) -> View:
    """Jobs, newest first: state, how long they ran, their cluster and where their log is."""
    notes = [paragraph(f"Warning: {w}") for w in warnings]
    if not jobs:
        return join(paragraph(f"No jobs. {empty_hint}"), *notes)
    rows: list[list[Cell]] = [
        [j.id, j.state.value, job_duration(j), j.cluster_name, age(j.created_at), _log_location(j)]
        for j in jobs
    ]
    table = Table(["id", "state", "duration", "cluster", "age", "log"], rows)
    # Why a job has not started yet (mostly: what its cluster waits for) is worth a line each.
    waits = [
        paragraph(f"{j.id}: {j.reason}")
        for j in jobs
        if j.state.value in ("pending", "starting") and j.reason
    ]
    return join(View(table.text(), table.html()), *waits, *notes)


def job_detail(job: Job) -> View:
    """One job: state and reason, entrypoint, cluster, attempts, log and result locations."""
    head = paragraph(f"({job.state.value}) {job.name}, {job_duration(job)}", bold=job.id)
    parts = [head]
    if job.reason:
        parts.append(paragraph(f"Reason: {job.reason}"))
    attempts = len(job.attempts)
    facts: list[list[Cell]] = [
        ["entrypoint", job.spec.get("entrypoint")],
        ["cluster", _cluster_note(job)],
        ["submitted", clock(job.created_at)],
        ["finished", clock(job.finished_at) if job.finished_at is not None else None],
        ["attempts", f"{attempts} of {1 + int(job.spec.get('backoffLimit') or 0)}" if attempts else None],
        ["log", _log_location(job)],
        ["results", _results_location(job)],
    ]
    table = Table(["", ""], facts)
    text = "\n".join(f"{k + ':':<12}{_text(v)}" for k, v in facts)
    parts.append(View(text, table.html().replace("<thead><tr><th", "<thead hidden><tr><th", 1)))
    if job.results:
        files = Table(["result", "size"], [[r.get("path"), r.get("size")] for r in job.results])
        parts.append(View(files.text(), files.html()))
    return join(*parts)


def job_submitted(job: Job, follow_hint: str) -> View:
    return paragraph(f"submitted ({job.state.value}); cluster {job.cluster_name}. {follow_hint}", bold=job.id)


def job_progress_line(job_id: str, state: JobState, elapsed: float, cluster: Cluster | None = None) -> str:
    """One line while a followed job waits for its cluster."""
    line = f"{job_id}: {state.value} after {elapsed:.0f} s"
    if cluster is not None:
        line += f"; cluster {cluster.name} {cluster.phase.value}, workers ready {workers(cluster)}"
    return line


def job_end_line(job: Job) -> str:
    line = f"{job.id} {job.state.value} after {job_duration(job)}"
    return line + (f": {job.reason}" if job.reason else ".")
