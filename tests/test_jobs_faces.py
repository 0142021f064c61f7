"""``eksray rj`` and ``%eksray job`` on the fake cluster backend and a stepping runner (no Ray):
parsing, requests built from flags, exit codes, JSON output, errors and following a job."""

from __future__ import annotations

import io
import json
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from eksray_jupyter import console
from eksray_jupyter.cli import main
from eksray_jupyter.core.errors import EKSRayError
from eksray_jupyter.jobs.models import Job, JobState, transition
from eksray_jupyter.jobs.runner import JobRunner
from eksray_jupyter.jobs.service import JobService
from eksray_jupyter.magics import EKSRayMagics
from eksray_jupyter.services import Services
from tests.fakes import isolate_env, make_service
from tests.magic_cells import fail, run
from tests.waiting import wait_until

STEP = 0.05


class StepRunner(JobRunner):
    """Runs a job in a thread: starting (creates its cluster), running with two log lines, then an end.

    The entrypoint decides the end: ``exit 1`` fails, ``forever`` runs until stopped,
    anything else succeeds. Log lines are written before the end is recorded, as the
    supervisor does.
    """

    name = "steps"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threads: dict[str, threading.Thread] = {}
        self.stops: dict[str, threading.Event] = {}
        #: If set, jobs stay ``starting`` until it is (a test watching the progress of that state).
        self.starting_gate: threading.Event | None = None

    def start(self, job: Job) -> None:
        store = self.stores.open(job.store)
        stop = self.stops[job.id] = threading.Event()
        entrypoint = job.spec["entrypoint"]

        def update(state: JobState, reason: str | None = None) -> None:
            store.write(transition(store.read(job.owner, job.id), state, reason))

        def log(text: str) -> None:
            store.append_log(job.owner, job.id, text.encode())

        def run() -> None:
            update(JobState.STARTING)
            if job.cluster_created:
                self.service.create({**job.spec["cluster"], "name": job.id})
            stop.wait(4 * STEP)
            while self.starting_gate is not None and not self.starting_gate.wait(STEP) and not stop.is_set():
                pass
            log("[eksray] cluster ready\n")
            update(JobState.RUNNING)
            for i in (1, 2):
                stop.wait(STEP)
                log(f"line {i} ✓\n")
            while "forever" in entrypoint and not stop.wait(STEP):
                pass
            if stop.is_set():
                update(JobState.STOPPED, "stopped on request")
            elif "exit 1" in entrypoint:
                update(JobState.FAILED, "the entrypoint exited with code 1")
            else:
                record = store.read(job.owner, job.id)
                if job.spec.get("results"):  # as the supervisor does: the files, then the list
                    with tempfile.TemporaryDirectory() as tmp:
                        source = Path(tmp) / "metrics.csv"
                        source.write_text("epoch,loss\n1,0.5\n")
                        store.put_result(job.owner, job.id, "out/metrics.csv", source)
                    record["results"] = [{"path": "out/metrics.csv", "size": 17}]
                store.write(transition(record, JobState.SUCCEEDED))

        thread = self.threads[job.id] = threading.Thread(target=run, daemon=True)
        thread.start()

    def stop(self, job: Job) -> bool:
        if self.is_active(job):
            self.stops[job.id].set()
            return True
        return False

    def is_active(self, job: Job) -> bool | None:
        thread = self.threads.get(job.id)
        return None if thread is None else thread.is_alive()


@pytest.fixture
def svc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    isolate_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(console, "FOLLOW_JOB_INTERVAL", 0.01)
    clusters = make_service(tmp_path / "state")
    runner = StepRunner(parent=clusters.config, log=clusters.config.log, service=clusters)
    yield Services(clusters, JobService(clusters, runner=runner))
    for stop in runner.stops.values():
        stop.set()
    for thread in runner.threads.values():
        thread.join(5)


def wait_for(svc: Services, job_id: str, state: str) -> Job:
    return wait_until(lambda: (job := svc.jobs.get(job_id)).state.value == state and job, f"{job_id} {state}")


# --- the CLI ---------------------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(svc: Services) -> Callable[..., Result]:
    def run(*argv: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = main(["rj", *argv], services_factory=lambda: svc, out=out, err=err)
        return Result(code, out.getvalue(), err.getvalue())

    return run


def test_help_and_usage_errors_exit_2(cli: Callable[..., Result]) -> None:
    assert cli("--help").code == 0
    assert cli("submit", "--help").code == 0
    assert "usage: eksray rj" in cli().err and cli().code == 2
    for argv, expected in [
        (("nope",), "invalid choice: 'nope'"),
        (("status",), "required: ID"),
        (("submit", "--env", "NOEQUALS"), "'NOEQUALS' is not KEY=VALUE"),
        (("submit", "--retries", "x"), "'x' is not a whole number"),
        (("submit", "--profile", "a", "--cluster-name", "b"), "not allowed with argument"),
        (("list", "-o", "yaml"), "invalid choice: 'yaml'"),
        (
            ("submit", "--entrypoint", "x", "--store", "local", "--s3-bucket", "b"),
            "not allowed with argument",
        ),
        (("submit", "--entrypoint", "x", "--store", "gcs"), "invalid choice: 'gcs'"),
    ]:
        result = cli(*argv)
        assert (result.code, result.out) == (2, ""), argv
        assert expected in result.err, (argv, result.err)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "Nothing to run: give --entrypoint CMD, or a spec file with an entrypoint"),
        (("--entrypoint", "x", "--working-dir", "nope"), "workingDir: no directory 'nope'"),
        (("--entrypoint", "x", "--env", "EKSRAY_X=1"), "runtimeEnv.envVars.EKSRAY_X: names starting with"),
        (("--entrypoint", "x", "--deadline", "0"), "activeDeadlineSeconds"),
        (("--entrypoint", "x", "--results", "../up"), "results[0]"),
        (("--entrypoint", "x", "--profile", "gpu"), "cluster.profile"),
        (("--entrypoint", "x", "--cluster-name", "zz"), "you have no cluster named 'zz'"),
        (("/nonexistent/job.yaml",), "Cannot read /nonexistent/job.yaml"),
    ],
)
def test_an_invalid_spec_exits_2_with_one_line(
    cli: Callable[..., Result], svc: Services, argv: tuple[str, ...], message: str
) -> None:
    result = cli("submit", *argv)
    assert result.code == 2, result.err
    assert result.err.startswith("eksray rj submit: ") and message in result.err
    assert len(result.err.strip().splitlines()) == 1 and result.out == ""
    assert svc.jobs.list() == []


def test_submit_builds_the_spec_from_flags(cli: Callable[..., Result], tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    result = cli(
        "submit",
        "--entrypoint",
        "python train.py --epochs 3",
        "--working-dir",
        "proj",
        "--env",
        "A=1",
        "--env",
        "B=x=y",
        "--pip",
        "lightgbm==4.5.0",
        "--profile",
        "tagged",
        "--deadline",
        "60",
        "--retries",
        "2",
        "--results",
        "out/*.csv",
        "--results",
        "model.txt",
        "--ttl",
        "30",
        "--store",
        "local",
        "-o",
        "json",
    )
    assert result.code == 0, result.err
    job = result.json()
    assert job["name"] == "train" and job["id"].startswith("train-") and job["state"] == "pending"
    spec = job["spec"]
    assert spec["workingDir"] == str(tmp_path / "proj")  # relative to the current directory
    assert spec["runtimeEnv"] == {"envVars": {"A": "1", "B": "x=y"}, "pip": ["lightgbm==4.5.0"]}
    assert len(spec["cluster"]["workerGroups"]) == 2  # the tagged profile
    assert (spec["activeDeadlineSeconds"], spec["backoffLimit"]) == (60, 2)
    assert spec["results"] == ["out/*.csv", "model.txt"]
    assert spec["ttlSecondsAfterFinished"] == 30 and spec["store"] == {"type": "local"}
    assert f"`eksray rj logs {job['id']} --follow` streams its log" in result.err


def test_submit_a_spec_file_with_flag_overrides(
    cli: Callable[..., Result], svc: Services, tmp_path: Path
) -> None:
    svc.clusters.create({"name": "shared"})
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "name: nightly\nentrypoint: python a.py\nruntimeEnv: {envVars: {A: '1'}}\n"
        "cluster: {profile: tagged}\nresults: ['*.txt']\n"
    )
    result = cli("submit", str(spec), "--env", "B=2", "--cluster-name", "shared", "-o", "json")
    assert result.code == 0, result.err
    job = result.json()
    assert job["name"] == "nightly" and job["clusterName"] == "shared" and job["clusterCreated"] is False
    assert "cluster" not in job["spec"] and job["spec"]["results"] == ["*.txt"]
    assert job["spec"]["runtimeEnv"]["envVars"] == {"A": "1", "B": "2"}

    spec.write_text("- a list\n")
    bad = cli("submit", str(spec))
    assert bad.code == 2 and "must contain one job spec" in bad.err


def hold_starting_until_followed(svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs stay ``starting`` until a follower has read them in that state (on a loaded machine
    a job could otherwise run to its end between two reads, and no progress would show)."""
    runner = svc.jobs.runner
    assert isinstance(runner, StepRunner)
    gate = runner.starting_gate = threading.Event()
    logs = svc.jobs.logs

    def read(job_id: str, offset: int = 0, **kwargs: Any) -> Any:
        chunk = logs(job_id, offset, **kwargs)
        if chunk.state == JobState.STARTING:
            gate.set()
        return chunk

    monkeypatch.setattr(svc.jobs, "logs", read)


def test_submit_follow_streams_the_log_and_exits_with_the_outcome(
    cli: Callable[..., Result], svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold_starting_until_followed(svc, monkeypatch)
    ok = cli("submit", "--entrypoint", "python ok.py", "--follow")
    assert ok.code == 0, ok.err
    assert ok.out == "[eksray] cluster ready\nline 1 ✓\nline 2 ✓\n"  # the whole log, once, on stdout
    progress = ok.err.strip().splitlines()
    assert progress[0].startswith("Submitted ok-")
    assert any(": starting after" in line and "cluster ok-" in line for line in progress), progress
    assert progress[-1].startswith("ok-") and " succeeded after " in progress[-1]

    failed = cli("submit", "--entrypoint", "python fail.py; exit 1", "--follow")
    assert failed.code == 1
    assert failed.err.strip().splitlines()[-1].endswith(": the entrypoint exited with code 1")


def test_submit_follow_as_json_keeps_stdout_one_document(cli: Callable[..., Result]) -> None:
    result = cli("submit", "--entrypoint", "python ok.py", "--follow", "-o", "json")
    assert result.code == 0
    assert result.json()["state"] == "succeeded"
    assert "line 2 ✓" in result.err  # the log went to stderr


def test_a_followed_job_that_is_stopped_exits_1(cli: Callable[..., Result], svc: Services) -> None:
    def stop_when_running() -> None:
        running = wait_until(
            lambda: [j for j in svc.jobs.list() if j.state == JobState.RUNNING], "a running job"
        )
        svc.jobs.stop(running[0].id)

    stopper = threading.Thread(target=stop_when_running)
    stopper.start()
    result = cli("submit", "--entrypoint", "python forever.py", "--follow")
    stopper.join()
    assert result.code == 1
    assert result.err.strip().splitlines()[-1].endswith("stopped on request")


def test_on_a_terminal_progress_is_one_line_rewritten_in_place(svc: Services) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out, err = io.StringIO(), Terminal()
    runner = svc.jobs.runner
    assert isinstance(runner, StepRunner)
    runner.starting_gate = threading.Event()

    failed: list[BaseException] = []

    def start_once_shown() -> None:  # the cluster is ready once the progress was rewritten twice
        try:
            wait_until(lambda: err.getvalue().count(": starting after") >= 2, "the progress shown")
        except BaseException as e:
            failed.append(e)
        runner.starting_gate.set()  # type: ignore[union-attr]

    thread = threading.Thread(target=start_once_shown)
    thread.start()
    code = main(["rj", "submit", "--entrypoint", "python ok.py", "--follow"], lambda: svc, out, err)
    thread.join()
    if failed:
        raise failed[0]
    assert code == 0 and out.getvalue() == "[eksray] cluster ready\nline 1 ✓\nline 2 ✓\n"
    submitted, progress, rest = err.getvalue().split("\n", 2)
    assert submitted.startswith("Submitted ok-") and rest == ""
    *updates, end = progress.split("\r\033[K")  # one line, rewritten in place, cleared before the log
    assert updates[0] == "" and any(": starting after" in u for u in updates) and len(updates) >= 3
    assert " succeeded after " in end


def test_no_progress_line_among_the_log_when_it_begins_while_starting(
    svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner writes its first log line, then the state: a reader can see the line while the
    record still says "starting" (CI did). No "starting after" line is drawn after log text, so
    the end line still rewrites the progress line in place."""
    from eksray_jupyter.jobs.service import LogChunk

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    runner = svc.jobs.runner
    assert isinstance(runner, StepRunner)
    runner.starting_gate = threading.Event()  # the job stays starting: the pages below are scripted
    out, err = io.StringIO(), Terminal()
    text = b"[eksray] cluster ready\nline 1 \xe2\x9c\x93\n"
    pages = iter(
        [
            (JobState.STARTING, b""),
            (JobState.STARTING, text[:23]),  # the log began; the record still says starting
            (JobState.RUNNING, b""),
            (JobState.SUCCEEDED, text[23:]),
        ]
    )
    read = 0

    def scripted_logs(job_id: str, offset: int = 0, limit: int | None = None, tail: int | None = None) -> Any:
        nonlocal read
        state, data = next(pages)
        read += len(data)
        return LogChunk(data, offset, offset + len(data), state, read)

    monkeypatch.setattr(svc.jobs, "logs", scripted_logs)
    try:
        main(["rj", "submit", "--entrypoint", "python ok.py", "--follow"], lambda: svc, out, err)
    finally:
        runner.starting_gate.set()
    assert out.getvalue() == "[eksray] cluster ready\nline 1 ✓\n"
    submitted, progress, rest = err.getvalue().split("\n", 2)
    assert submitted.startswith("Submitted ") and rest == "", "the progress and the end: one line"
    *updates, _end = progress.split("\r\033[K")
    assert [u for u in updates if u] and all(": starting after" in u for u in updates if u)


def test_interrupting_a_follow_leaves_the_job_running(
    cli: Callable[..., Result], svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Job:
        raise KeyboardInterrupt

    monkeypatch.setattr(console, "follow_job", interrupted)
    result = cli("submit", "--entrypoint", "python forever.py", "--follow")
    (job,) = svc.jobs.list()
    assert result.code == 130
    assert result.err.strip().splitlines()[-1] == (
        f"Stopped following; {job.id} carries on (`eksray rj stop {job.id}` stops it)."
    )
    assert not job.terminal


def test_list_status_logs_and_stop(cli: Callable[..., Result], svc: Services) -> None:
    empty = cli("list")
    assert (
        empty.code == 0
        and 'No jobs. Submit one with `eksray rj submit --entrypoint "python main.py"`' in (empty.out)
    )
    assert cli("list", "-o", "json").json() == {"jobs": [], "warnings": []}

    done = svc.jobs.submit({"entrypoint": "python first.py"})
    wait_for(svc, done.id, "succeeded")
    running = svc.jobs.submit({"entrypoint": "python forever.py"})
    wait_for(svc, running.id, "running")

    listing = cli("list").out.splitlines()
    assert listing[0].split() == ["ID", "STATE", "DURATION", "CLUSTER", "AGE", "LOG"]
    assert listing[1].split()[:2] == [running.id, "running"]  # newest first
    assert listing[2].split()[:2] == [done.id, "succeeded"]
    assert listing[2].rstrip().endswith(f"{done.id}/log.txt")
    assert [j["id"] for j in cli("list", "-o", "json").json()["jobs"]] == [running.id, done.id]

    status = cli("status", done.id)
    assert status.code == 0 and status.out.startswith(f"{done.id} (succeeded) first, ")
    assert f"cluster:    {done.id} (created for the job)" in status.out
    assert cli("status", done.id, "-o", "json").json()["state"] == "succeeded"

    logs = cli("logs", done.id)
    assert logs.out == "[eksray] cluster ready\nline 1 ✓\nline 2 ✓\n"
    body = cli("logs", done.id, "-o", "json").json()
    assert body["state"] == "succeeded" and body["nextOffset"] == len(logs.out.encode())

    stopped = cli("stop", running.id, "-o", "json")
    assert stopped.code == 0 and stopped.json()["state"] == "stopped"
    assert stopped.json()["reason"] == "stopped on request"
    assert cli("stop", done.id, "-o", "json").json()["state"] == "succeeded"  # an ended job stays as it is

    missing = cli("status", "zz-00000")
    assert missing.code == 1
    assert (
        missing.err.strip() == "eksray rj status: No job with id 'zz-00000'. List your jobs to see their ids."
    )
    assert cli("logs", "zz-00000").code == 1
    assert cli("stop", "zz-00000").code == 1


def test_logs_follow(cli: Callable[..., Result], svc: Services) -> None:
    job = svc.jobs.submit({"entrypoint": "python ok.py"})
    result = cli("logs", job.id, "--follow")
    assert result.code == 0
    assert result.out == "[eksray] cluster ready\nline 1 ✓\nline 2 ✓\n"
    assert " succeeded after " in result.err

    lines = cli("logs", job.id, "--follow", "-o", "json").out.splitlines()
    assert (
        "".join(json.loads(line)["log"] for line in lines) == "[eksray] cluster ready\nline 1 ✓\nline 2 ✓\n"
    )


def test_logs_are_read_and_printed_page_by_page(
    cli: Callable[..., Result], svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log longer than a page: every face reads it in pages (each at most the configured most)
    and prints each as it comes; ``--tail N`` shows its last N lines, then --follow goes on."""
    job = svc.jobs.submit({"entrypoint": "python ok.py"})
    wait_for(svc, job.id, "succeeded")
    whole = "[eksray] cluster ready\nline 1 ✓\nline 2 ✓\n"
    svc.jobs.config.job_log_page_max_bytes = 5  # "✓" is 3 bytes: pages end inside it
    reads: list[tuple[int, int | None, int | None, int]] = []
    real = svc.jobs.logs

    def logs(job_id: str, offset: int = 0, limit: int | None = None, tail: int | None = None) -> Any:
        chunk = real(job_id, offset, limit, tail)
        reads.append((offset, limit, tail, len(chunk.data)))
        return chunk

    monkeypatch.setattr(svc.jobs, "logs", logs)
    assert cli("logs", job.id).out == whole
    assert len(reads) == -(-len(whole.encode()) // 5) and all(n <= 5 for *_, n in reads)
    pages = [json.loads(line) for line in cli("logs", job.id, "-o", "json").out.splitlines()]
    assert "".join(p["log"] for p in pages) == whole
    assert pages[-1]["nextOffset"] == pages[-1]["size"] == len(whole.encode())
    assert pages[0]["state"] == "succeeded" and pages[1]["offset"] == 5

    svc.jobs.config.job_log_page_max_bytes = 1 << 20
    reads.clear()
    assert cli("logs", job.id, "--tail", "2").out == "line 1 ✓\nline 2 ✓\n"
    assert [(r[1], r[2]) for r in reads] == [(None, 1 << 20)]  # one read: the log's end
    assert cli("logs", job.id, "--tail", "0").out == ""
    assert cli("logs", job.id, "--tail", "99").out == whole
    followed = cli("logs", job.id, "--tail", "1", "--follow")
    assert followed.code == 0 and followed.out == "line 2 ✓\n" and " succeeded after " in followed.err


def test_magic_logs_by_pages_and_tail(shell: InteractiveShell, svc: Services) -> None:
    job = svc.jobs.submit({"entrypoint": "python ok.py"})
    wait_for(svc, job.id, "succeeded")
    svc.jobs.config.job_log_page_max_bytes = 4
    assert run(shell, f"job logs {job.id}").stdout == "[eksray] cluster ready\nline 1 ✓\nline 2 ✓\n"
    svc.jobs.config.job_log_page_max_bytes = 1 << 20
    assert run(shell, f"job logs {job.id} --tail 1").stdout == "line 2 ✓\n"
    assert run(shell, f"job logs {job.id} --tail 1 --follow").stdout.startswith("line 2 ✓\n")


def test_a_log_chunk_ending_inside_a_character_is_decoded_whole(svc: Services) -> None:
    """follow_job decodes incrementally: a multi-byte character split between reads is not mangled."""
    job = svc.jobs.submit({"entrypoint": "python ok.py"})
    wait_for(svc, job.id, "succeeded")
    full = svc.jobs.logs(job.id).data
    cut = full.index("✓".encode()) + 1
    chunks = iter([full[:cut], full[cut:]])
    real = svc.jobs.logs

    class Split:
        log_page_max = svc.jobs.log_page_max

        def logs(self, job_id: str, offset: int = 0, **kwargs: Any) -> Any:
            chunk = real(job_id, offset, **kwargs)
            data = next(chunks, b"")
            return type(chunk)(
                data, offset, offset + len(data), JobState.RUNNING if offset == 0 else chunk.state, len(full)
            )

        def get(self, job_id: str) -> Job:
            return svc.jobs.get(job_id)

    texts: list[str] = []
    console.follow_job(Split(), job.id, texts.append, interval=0)  # type: ignore[arg-type]
    assert "".join(texts) == full.decode() and "\ufffd" not in "".join(texts)


# --- the magics ----------------------------------------------------------------------------------


@pytest.fixture
def shell(svc: Services) -> Iterator[InteractiveShell]:
    ip = InteractiveShell.instance()
    ip.register_magics(EKSRayMagics(ip, services_factory=lambda: svc))
    yield ip


def test_magic_help_and_usage_errors(shell: InteractiveShell) -> None:
    assert "job" in run(shell, "--help").stdout
    for line in ("job", "job --help"):
        out = run(shell, line).stdout
        assert all(c in out for c in ("submit", "list", "status", "logs", "stop")), out
    assert "--working-dir DIR" in run(shell, "job submit --help").stdout
    assert "invalid choice: 'nope'" in fail(shell, "job nope")
    assert "required: ID" in fail(shell, "job status")
    assert "is not KEY=VALUE" in fail(shell, "job submit --env X")
    assert fail(shell, "job submit") == (
        "%eksray job submit: Nothing to run: give --entrypoint CMD, or a spec file with an entrypoint"
    )
    assert "workingDir: no directory 'nope'" in fail(shell, "job submit --entrypoint x --working-dir nope")
    assert "no standard input" in fail(shell, "job submit -")
    assert fail(shell, "job status zz-00000") == (
        "%eksray job status: No job with id 'zz-00000'. List your jobs to see their ids."
    )


def test_magic_submit_list_status_logs_stop(shell: InteractiveShell, svc: Services) -> None:
    assert (
        "No jobs. Submit one with %eksray job submit" in run(shell, "job list").outputs[0].data["text/plain"]
    )

    cap = run(shell, "job submit --entrypoint 'python forever.py' --env A=1 --results 'out/*'")
    (job,) = svc.jobs.list()
    assert job.spec["runtimeEnv"] == {"envVars": {"A": "1"}} and job.spec["results"] == ["out/*"]
    detail, hint = (o.data for o in cap.outputs)
    assert detail["text/plain"].startswith(f"{job.id} (pending) forever")
    assert "<b>" in detail["text/html"] and "<table" in detail["text/html"]
    assert f"%eksray job logs {job.id} --follow" in hint["text/plain"]

    wait_for(svc, job.id, "running")
    listing = run(shell, "job list").outputs[0].data
    assert job.id in listing["text/plain"] and "running" in listing["text/plain"]
    assert (
        "<th" in listing["text/html"]
        and f'<td style="text-align: left">{job.id}</td>' in listing["text/html"]
    )

    status = run(shell, f"job status {job.id}").outputs[0].data
    assert f"{job.id}/log.txt" in status["text/plain"] and f"{job.id}/log.txt" in status["text/html"]

    stopped = run(shell, f"job stop {job.id}").outputs[0].data
    assert stopped["text/plain"].startswith(f"{job.id} (stopped)")
    assert "Reason: stopped on request" in stopped["text/plain"]
    assert run(shell, f"job logs {job.id}").stdout.startswith("[eksray] cluster ready\nline 1 ✓\n")


def test_magic_submit_follow_streams_into_the_cell_and_a_failure_fails_it(
    shell: InteractiveShell, svc: Services
) -> None:
    cap = run(shell, "job submit --entrypoint 'python ok.py' --follow")
    assert cap.stdout == "[eksray] cluster ready\nline 1 ✓\nline 2 ✓\n"
    texts = [o.data["text/plain"] for o in cap.outputs]
    assert texts[0].startswith("ok-") and " after 0 s" in texts[0]  # progress while the cluster starts
    assert " (succeeded) ok, " in texts[-1]

    with capture_output() as cap:
        result = shell.run_cell("%eksray job submit --entrypoint 'python bad.py; exit 1' --follow")
    assert isinstance(result.error_in_exec, UsageError)  # "run all" stops at a failed job
    assert cap.stderr.strip().splitlines()[-1].startswith("UsageError: %eksray job submit: bad-")
    assert " failed after " in cap.stderr
    assert "the entrypoint exited with code 1" in cap.stderr

    job = svc.jobs.list()[0]
    follow = run(shell, f"job logs {job.id} --follow")
    assert follow.stdout.endswith("line 2 ✓\n") and "failed after" in follow.outputs[-1].data["text/plain"]


def test_magic_errors_from_the_service_are_one_line(shell: InteractiveShell, svc: Services) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise EKSRayError("S3 failed while listing jobs in s3://b/p: AccessDenied")

    svc.jobs.list_with_warnings = broken  # type: ignore[method-assign]
    assert (
        fail(shell, "job list") == "%eksray job list: S3 failed while listing jobs in s3://b/p: AccessDenied"
    )


def test_results_are_saved_where_asked(
    cli: Callable[..., Result], shell: InteractiveShell, svc: Services, tmp_path: Path
) -> None:
    job = svc.jobs.submit({"entrypoint": "python train.py", "results": ["out/*.csv"]})
    wait_for(svc, job.id, "succeeded")
    saved = cli("results", job.id, "--to", str(tmp_path / "here"), "-o", "json")
    assert saved.code == 0, saved.err
    target = tmp_path / "here" / "out" / "metrics.csv"
    assert saved.json() == [{"path": "out/metrics.csv", "size": 17, "savedTo": str(target)}]
    assert target.read_text() == "epoch,loss\n1,0.5\n"
    text = cli("results", job.id, "out/metrics.csv", "--to", str(tmp_path / "again"))
    assert text.out.strip() == f"saved {tmp_path / 'again' / 'out' / 'metrics.csv'} (17 bytes)"

    unknown = cli("results", job.id, "nope.csv")
    assert unknown.code == 1 and "has no result 'nope.csv'; it has: out/metrics.csv" in unknown.err
    bare = svc.jobs.submit({"entrypoint": "python other.py"})
    wait_for(svc, bare.id, "succeeded")
    assert "has no result files" in cli("results", bare.id).err

    table = run(shell, f"job results {job.id} --to {tmp_path / 'nb'}").outputs[0].data
    assert "out/metrics.csv" in table["text/plain"] and "<table" in table["text/html"]
    assert (tmp_path / "nb" / "out" / "metrics.csv").is_file()
