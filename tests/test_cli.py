"""``eksray rc ...`` on the fake backend: commands, output formats and exit codes."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from eksray_jupyter.cli import main
from eksray_jupyter.core.service import ClusterService
from eksray_jupyter.services import Services
from tests.fakes import isolate_env, make_service

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


@pytest.fixture
def make(tmp_path: Path) -> Callable[..., ClusterService]:
    return lambda **backend: make_service(tmp_path / "state", **backend)


@pytest.fixture
def svc(make: Callable[..., ClusterService], monkeypatch: pytest.MonkeyPatch) -> ClusterService:
    isolate_env(monkeypatch)
    return make()


@pytest.fixture
def cli(svc: ClusterService) -> Callable[..., Result]:
    def run(*argv: str, service: ClusterService | None = None) -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), services_factory=lambda: Services(service or svc), out=out, err=err)
        return Result(code, out.getvalue(), err.getvalue())

    return run


# --- usage -------------------------------------------------------------------------------------


def test_help_exits_0_and_bad_usage_exits_2_with_usage_on_stderr(cli: Callable[..., Result]) -> None:
    assert cli("--help").code == 0
    assert cli("rc", "--help").code == 0
    assert cli("rc", "create", "--help").code == 0
    assert cli("--version").code == 0

    for argv, expected in [
        ((), "usage: eksray"),
        (("rc",), "usage: eksray rc"),
        (("rc", "nope"), "invalid choice: 'nope'"),
        (("rc", "create", "--workers", "x"), "'x' is not a whole number"),
        (("rc", "scale", "t1"), "the following arguments are required: GROUP"),
        (("rc", "list", "-o", "yaml"), "invalid choice: 'yaml'"),
        (("rc", "delete"), "required: NAME"),
    ]:
        result = cli(*argv)
        assert result.code == 2, argv
        assert expected in result.err, (argv, result.err)
        assert result.out == ""


# --- create ------------------------------------------------------------------------------------


def test_create_from_flags(cli: Callable[..., Result], svc: ClusterService) -> None:
    result = cli("rc", "create", "--workers", "2", "-o", "json")
    assert result.code == 0, result.err
    body = result.json()
    assert isinstance(body, dict) and body["name"] == "ray-alice-1" and body["phase"] == "ready"
    assert body["workerGroups"][0]["replicas"] == 2
    assert svc.active_name() is None  # the CLI does not change the choice; `eksray rc use` does


def test_create_from_a_spec_file_with_flag_overrides(
    cli: Callable[..., Result], svc: ClusterService, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: from-file\nhead: {cpu: 1}\nworkerGroups:\n"
        "  - {groupName: small, replicas: 1, minReplicas: 0, maxReplicas: 2}\n"
        "  - {groupName: big, replicas: 0, maxReplicas: 1, cpu: 2}\n"
    )
    assert cli("rc", "create", "-f", str(spec)).code == 0
    assert [g["groupName"] for g in svc.get("from-file").spec["workerGroups"]] == ["small", "big"]
    assert svc.get("from-file").spec["autoscaling"]["enabled"] is True  # schema defaults filled in

    assert cli("rc", "create", "renamed", "-f", str(spec), "--workers", "2", "--max", "5").code == 0
    small, big = svc.get("renamed").spec["workerGroups"]
    assert (small["replicas"], small["maxReplicas"], big["groupName"]) == (2, 5, "big")

    as_json = tmp_path / "spec.json"
    as_json.write_text(json.dumps({"name": "j1", "profile": "tagged"}))
    assert cli("rc", "create", "-f", str(as_json)).code == 0
    assert len(svc.get("j1").spec["workerGroups"]) == 2


def test_a_spec_file_with_nan_or_infinity_is_refused_with_its_field(
    cli: Callable[..., Result], svc: ClusterService, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: odd\nhead: {cpu: .nan}\nworkerGroups:\n  - {groupName: g, cpu: .inf}\n")
    result = cli("rc", "create", "-f", str(spec))
    assert result.code == 2
    assert "head.cpu" in result.err and "workerGroups[0].cpu" in result.err and "finite" in result.err
    assert svc.list() == []


def test_create_reads_a_spec_from_stdin(
    cli: Callable[..., Result], svc: ClusterService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"name": "piped"}'))
    assert cli("rc", "create", "-f", "-").code == 0
    assert svc.get("piped").spec["workerGroups"] == []  # a file gets no default profile


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("rc", "create", "--profile", "gpu"), "no profile 'gpu'; available: cpu-small, tagged"),
        (("rc", "create", "x", "--min", "3", "--max", "1"), "must not exceed maxReplicas"),
        (("rc", "create", "-f", "/nonexistent/spec.yaml"), "Cannot read /nonexistent/spec.yaml"),
        (("rc", "create", "Bad_Name"), "is not a valid name"),
    ],
)
def test_invalid_input_exits_2(cli: Callable[..., Result], argv: tuple[str, ...], message: str) -> None:
    result = cli(*argv)
    assert result.code == 2
    assert message in result.err and result.err.startswith("eksray rc create: ")
    assert len(result.err.strip().splitlines()) == 1


def test_a_spec_file_that_is_not_a_spec_exits_2(cli: Callable[..., Result], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert "is not valid YAML or JSON" in cli("rc", "create", "-f", str(bad)).err
    bad.write_text("- just\n- a list\n")
    result = cli("rc", "create", "-f", str(bad))
    assert result.code == 2 and "must contain one cluster spec" in result.err


def test_create_wait_prints_progress_on_stderr_and_the_cluster_on_stdout(
    cli: Callable[..., Result], make: Callable[..., ClusterService]
) -> None:
    slow = make(start_seconds=1.5)
    result = cli("rc", "create", "t1", "--wait", service=slow)
    assert result.code == 0
    progress = result.err.strip().splitlines()
    assert progress[0].startswith("t1: starting after") and "cpu 0/1" in progress[0]
    assert progress[-1].startswith("t1: ready after") and "cpu 1/1" in progress[-1]
    assert len(progress) == 2  # not a redirected log file: one line per change only
    assert result.out.startswith("t1 (ready) address 127.0.0.1:")


def test_a_cluster_that_fails_to_start_exits_1(cli: Callable[..., Result], tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: doomed\nlabels: {fake-fail: 'yes'}\n")
    result = cli("rc", "create", "-f", str(spec), "--wait")
    assert result.code == 1
    assert result.err.strip().splitlines()[-1] == (
        "eksray rc create: Cluster 'doomed' failed: The head node's ray process exited (fake failure)"
    )


def test_a_name_in_use_exits_1(cli: Callable[..., Result]) -> None:
    assert cli("rc", "create", "t1").code == 0
    result = cli("rc", "create", "t1")
    assert result.code == 1 and "already exists" in result.err


# --- the other commands --------------------------------------------------------------------------


def test_list_status_use_and_dashboard(cli: Callable[..., Result], svc: ClusterService) -> None:
    assert "No clusters. Create one with `eksray rc create`" in cli("rc", "list").out
    assert cli("rc", "list", "-o", "json").json() == {"clusters": [], "active": None}
    status = cli("rc", "status")
    assert status.code == 1 and "You have no active cluster. Create one with `eksray rc create`" in status.err

    svc.create({"name": "a", "profile": "cpu-small"})
    svc.create({"name": "b", "profile": "tagged"})
    use = cli("rc", "use", "a", "-o", "json")
    assert use.json() == {"name": "a", "address": svc.get("a").address}
    listing = cli("rc", "list", "-o", "json").json()
    assert isinstance(listing, dict) and listing["active"] == "a"
    assert [c["name"] for c in listing["clusters"]] == ["a", "b"]
    assert listing["clusters"][0]["dashboardUrl"] == "http://127.0.0.1:8265"
    text = cli("rc", "list").out.splitlines()
    assert text[1].startswith("*  a") and text[-1] == "* active: new kernels connect to it"

    status_json = cli("rc", "status", "-o", "json").json()
    assert isinstance(status_json, dict) and status_json["name"] == "a" and status_json["active"] is True
    assert cli("rc", "status", "b").out.startswith("b (ready) address")
    timeline = cli("rc", "status", "b", "--timeline").out.splitlines()
    assert "Start-up timeline" in timeline and "Start-up timeline" not in cli("rc", "status", "b").out
    rows = timeline[timeline.index("Start-up timeline") + 2 :]
    assert [r.split(None, 2)[1:] for r in rows] == [["+0.0s", "Head process started"], ["+1.5s", "Ready"]]
    assert cli("rc", "dashboard", "b").out.strip() == "http://127.0.0.1:8265"
    assert cli("rc", "dashboard", "-o", "json").json() == {"name": "a", "url": "http://127.0.0.1:8265"}

    missing = cli("rc", "status", "zz")
    assert missing.code == 1 and missing.err.strip() == (
        "eksray rc status: No cluster named 'zz'. List your clusters to see their names."
    )


def test_env_exports_what_a_terminal_driver_needs(
    cli: Callable[..., Result], make: Callable[..., ClusterService]
) -> None:
    svc = make(ray_token_auth=True)
    svc.create({"name": "t1"})
    token_file = svc.backend.ray_auth_token_file(svc.owner, "t1")
    result = cli("rc", "env", "t1", service=svc)
    assert result.code == 0
    assert result.out.splitlines() == [
        f"export RAY_ADDRESS={svc.get('t1').address}",
        "export EKSRAY_CLUSTER=t1",
        "export RAY_AUTH_MODE=token",
        f"export RAY_AUTH_TOKEN_PATH={token_file}",
    ]
    assert token_file.read_text() not in result.out
    assert cli("rc", "env", "t1", "-o", "json", service=svc).json() == {
        "RAY_ADDRESS": svc.get("t1").address,
        "EKSRAY_CLUSTER": "t1",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
    }
    missing = cli("rc", "env", "zz", service=svc)
    assert missing.code == 1 and "No cluster named 'zz'" in missing.err


def test_scale(cli: Callable[..., Result], svc: ClusterService) -> None:
    svc.create({"name": "t1", "profile": "cpu-small"})
    result = cli("rc", "scale", "t1", "cpu", "--replicas", "2", "-o", "json")
    assert result.code == 0 and result.json()["workerGroups"][0]["replicas"] == 2  # type: ignore[index]
    assert cli("rc", "scale", "t1", "cpu").code == 2
    assert cli("rc", "scale", "t1", "cpu", "--replicas", "9").code == 2
    assert cli("rc", "scale", "zz", "cpu", "--replicas", "1").code == 1


def test_events(cli: Callable[..., Result], svc: ClusterService) -> None:
    svc.create({"name": "t1"})
    body = cli("rc", "events", "t1", "-o", "json").json()
    assert isinstance(body, dict) and [e["message"] for e in body["events"]] == ["Cluster t1 created"]
    assert "Cluster t1 created" in cli("rc", "events", "t1").out
    assert cli("rc", "events", "zz").code == 1


def test_delete(cli: Callable[..., Result], svc: ClusterService) -> None:
    svc.create({"name": "t1"})
    svc.use("t1")
    assert cli("rc", "delete", "t1", "-o", "json").json() == {"name": "t1", "deleted": True}
    assert svc.list() == [] and svc.active_name() is None
    result = cli("rc", "delete", "t1")
    assert result.code == 1 and "No cluster named 't1'" in result.err


# --- a real process --------------------------------------------------------------------------------


def test_the_installed_command_in_a_real_process(svc: ClusterService, tmp_path: Path) -> None:
    """`eksray rc list` as a script runs it: config from $EKSRAY_CONFIG, exit codes from sys.exit."""
    svc.create({"name": "t1"})
    command = (
        [shutil.which("eksray") or ""]
        if shutil.which("eksray")
        else [sys.executable, "-m", "eksray_jupyter.cli"]
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "EKSRAY_CONFIG": svc.environment_config(),  # what a kernel gets from the provisioner
        "JUPYTER_CONFIG_DIR": str(tmp_path / "no-config"),
    }
    out = subprocess.run(
        [*command, "rc", "list", "-o", "json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert [c["name"] for c in body["clusters"]] == ["t1"]
    assert body["clusters"][0]["backend"] == "fake"

    bad = subprocess.run([*command, "rc", "nope"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    gone = subprocess.run(
        [*command, "rc", "status", "zz"], capture_output=True, text=True, env=env, timeout=120
    )
    assert gone.returncode == 1 and "No cluster named 'zz'" in gone.stderr


# --- usage and cost ---------------------------------------------------------------------------


def test_usage_shows_clusters_quota_and_budget_and_exports_csv(
    cli: Callable[..., Result], svc: ClusterService
) -> None:
    svc.config.prices = {"cpuHour": 0.5}
    svc.config.quotas = {"default": {"maxCpus": 8, "monthlyBudget": 100}}
    assert cli("rc", "create", "demo", "--workers", "1").code == 0
    text = cli("usage")
    assert text.code == 0, text.err
    assert "demo" in text.out and "$1.00/h" in text.out  # head and a worker, 1 CPU each
    assert "Quota (at each cluster's maximum): CPUs 3 of 8" in text.out
    assert "Budget " in text.out and "of $100.00." in text.out
    table = cli("usage", "--csv")
    assert table.out.splitlines()[0].startswith("name,phase,cpu,gpu,memoryGiB")
    assert table.out.splitlines()[1].startswith("demo,")
    data = cli("usage", "-o", "json").json()
    assert data["clusters"][0]["dollarsPerHour"] == 1.0 and data["quota"]["limits"]["maxCpus"] == 8  # type: ignore[index]
    status = cli("rc", "status", "demo")
    assert "Cost: $1.00/h" in status.out
    refused = cli("rc", "create", "big", "--workers", "4", "--max", "8")
    assert refused.code == 1 and "would exceed the limit of 8" in refused.err


def test_prometheus_config_is_for_the_local_backend_only(cli: Callable[..., Result], tmp_path: Path) -> None:
    from eksray_jupyter.core.config import EKSRay

    local = ClusterService(EKSRay(state_dir=str(tmp_path / "local-state")))
    result = cli("rc", "prometheus-config", service=local)
    assert result.code == 0 and "file_sd_configs" in result.out
    assert str(tmp_path / "local-state" / "local" / "prometheus" / "*.json") in result.out
    other = cli("rc", "prometheus-config")
    assert other.code == 1 and "scraped by the Prometheus of where they run" in other.err
