"""What wakes the observers: file-system notifications (filtered) and process exits (pidfds)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eksray_jupyter.core.wakeup import Wakeup


@pytest.fixture
def wakeup() -> Iterator[Wakeup]:
    w = Wakeup("test")
    yield w
    w.close()


def test_a_matching_file_written_in_a_watched_tree_wakes_it(tmp_path: Path, wakeup: Wakeup) -> None:
    wakeup.watch_dirs({tmp_path: (lambda p: p.endswith("/job.json"), True)})
    (tmp_path / "a" / "b").mkdir(parents=True)
    wakeup.wait(0.5)  # the directories themselves may or may not count: start from here
    (tmp_path / "a" / "b" / "other.txt").write_text("x")
    assert not wakeup.wait(0.5), "a file the filter refuses must not wake it"
    tmp = tmp_path / "a" / "b" / ".job.json.tmp"
    tmp.write_text("{}")
    os.replace(tmp, tmp_path / "a" / "b" / "job.json")  # an atomic write: the rename's target counts
    assert wakeup.wait(10.0)


def test_a_directory_no_longer_wanted_stops_waking_it(tmp_path: Path, wakeup: Wakeup) -> None:
    keep, drop = tmp_path / "keep", tmp_path / "drop"
    keep.mkdir()
    drop.mkdir()
    every = (lambda p: True, False)
    wakeup.watch_dirs({keep: every, drop: every})
    wakeup.watch_dirs({keep: every})
    (drop / "f").write_text("x")
    assert not wakeup.wait(0.5)
    (keep / "f").write_text("x")
    assert wakeup.wait(10.0)


def test_a_watched_process_that_exits_wakes_it(wakeup: Wakeup) -> None:
    # Not our child's exit status: a pidfd works for any process (a CLI may have started it).
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        wakeup.watch_pids({proc.pid})
        assert not wakeup.wait(0.3)
        proc.stdin.close()  # type: ignore[union-attr]
        assert wakeup.wait(10.0)
    finally:
        proc.kill()
        proc.wait()


def test_a_process_already_gone_wakes_it_at_once(wakeup: Wakeup) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    wakeup.watch_pids({proc.pid})
    assert wakeup.wait(1.0)


def test_close_releases_a_waiter(tmp_path: Path) -> None:
    w = Wakeup("test")
    w.watch_dirs({tmp_path: (lambda p: True, True)})
    w.close()
    assert w.wait(0.0)
