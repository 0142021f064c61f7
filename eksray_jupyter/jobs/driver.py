"""Run a job's entrypoint, then collect its result files (the Ray job's actual entrypoint).

When a job declares ``results`` patterns the runner submits::

    <python> -m eksray_jupyter.jobs.driver --results '["out/*.csv"]' -- 'python train.py'

This runs the user's command in a shell, in the working directory Ray prepared, and when
it exits (success, failure or a stop's SIGTERM) copies the files matching the patterns
(relative to that directory, ``**`` allowed, never outside it) into ``$EKSRAY_RESULTS_DIR``,
keeping their relative paths. It exits with the command's exit code.

Standard library only, and importable without the package (``python -c "$(cat driver.py)"``),
so a runner can ship it to a head node where eksray-jupyter is not installed.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys

RESULTS_DIR_ENV = "EKSRAY_RESULTS_DIR"


def collect(patterns: list[str], source: str, target: str) -> list[str]:
    """Copy files under ``source`` matching ``patterns`` into ``target``; return their relative paths."""
    source = os.path.realpath(source)
    copied: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, root_dir=source, recursive=True))
        files: list[str] = []
        for match in matches:
            full = os.path.join(source, match)
            if os.path.isdir(full):
                for root, _dirs, names in os.walk(full):
                    files += [os.path.relpath(os.path.join(root, n), source) for n in names]
            elif os.path.isfile(full):
                files.append(match)
        if not files:
            print(f"[eksray] no file matches the results pattern {pattern!r}", flush=True)
        for rel in files:
            real = os.path.realpath(os.path.join(source, rel))
            if os.path.commonpath([real, source]) != source or rel in copied:
                continue  # a symlink out of the working directory, or matched twice
            dest = os.path.join(target, rel)
            os.makedirs(os.path.dirname(dest) or target, exist_ok=True)
            shutil.copyfile(real, dest)
            copied.append(rel)
    return copied


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: driver.py [--results JSON] -- COMMAND", file=sys.stderr)
        return 2
    split = argv.index("--")
    options, command = argv[:split], " ".join(argv[split + 1 :])
    patterns: list[str] = []
    if "--results" in options:
        patterns = json.loads(options[options.index("--results") + 1])
    child = subprocess.Popen(command, shell=True)

    def forward(signum: int, _frame: object) -> None:
        # Ray signals the whole process tree on stop; forward in case only we were signalled.
        with contextlib.suppress(OSError):
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    target = os.environ.get(RESULTS_DIR_ENV)
    if patterns and target:
        try:
            copied = collect(patterns, os.getcwd(), target)
            print(f"[eksray] collected {len(copied)} result file(s)", flush=True)
        except OSError as e:
            print(f"[eksray] collecting results failed: {e}", flush=True)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
