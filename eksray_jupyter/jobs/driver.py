"""Run a job's entrypoint, then collect its result files (the Ray job's actual entrypoint).

When a job declares ``results`` patterns the runner submits::

    <python> -m eksray_jupyter.jobs.driver --results '["out/*.csv"]' -- 'python train.py'

This runs the user's command in a shell, in the working directory Ray prepared, and when
it exits (success, failure or a stop's SIGTERM) copies the files matching the patterns
(relative to that directory, ``**`` allowed, never outside it) into ``$EKSRAY_RESULTS_DIR``,
keeping their relative paths. It exits with the command's exit code.

On a head that does not share this machine's disk (the kuberay runner), the runner also
sets ``$EKSRAY_RESULTS_UPLOAD``: a short-lived presigned S3 POST (``{"url", "fields",
"prefix", "maxBytes", "expiresAt"}``; the head needs no AWS credentials of its own), or only
where to upload (``{"bucket", "prefix", "region", "maxBytes"}``) for a head whose pods have
their own IAM role. The wrapper then gives the command a fresh ``$EKSRAY_RESULTS_DIR`` if
none is set, and afterwards uploads everything in it under ``prefix`` (the job's
``results/`` in its store).

Standard library only (boto3 only for the pod's own role), and runnable without the package (:func:`inline_command` ships its
source in the entrypoint), so it works on a head node where eksray-jupyter is not installed.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator

RESULTS_DIR_ENV = "EKSRAY_RESULTS_DIR"
RESULTS_UPLOAD_ENV = "EKSRAY_RESULTS_UPLOAD"


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


def multipart(fields: dict[str, str], path: str, boundary: str) -> tuple[Iterator[bytes], int]:
    """A multipart/form-data body with the file last, as blocks (the file is streamed, never held
    in memory), and its length (urllib needs it for an iterable body)."""
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="result"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def blocks() -> Iterator[bytes]:
        yield head
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                yield block
        yield tail

    return blocks(), len(head) + os.path.getsize(path) + len(tail)


def too_large(files: list[str], source: str, target: dict[str, object]) -> list[str]:
    """The files over the upload's ``maxBytes`` (S3 would refuse them), each reported once."""
    limit = target.get("maxBytes")
    if not isinstance(limit, int):
        return []
    over = [rel for rel in files if os.path.getsize(os.path.join(source, rel)) > limit]
    for rel in over:
        print(
            f"[eksray] not uploading the result {rel}: larger than {limit // (1024 * 1024)} MiB "
            "(KubeRayJobRunner.results_max_file_mb)",
            flush=True,
        )
    return over


def upload(files: list[str], source: str, target: dict[str, object], tries: int = 3) -> list[str]:
    """Upload each file (relative to ``source``) under ``target["prefix"]``; return the ones that failed.

    ``target`` is a presigned POST (``url``, ``fields``) or, for a head with its own IAM role,
    a ``bucket`` to upload to with boto3.
    """
    failed = too_large(files, source, target)
    files = [rel for rel in files if rel not in failed]
    if "bucket" in target:
        return failed + upload_with_role(files, source, target)
    expires = target.get("expiresAt")
    if isinstance(expires, int) and time.time() > expires:
        print(
            "[eksray] the presigned results upload expired before the job ended; ask the admin for "
            "KubeRayJobRunner.results_upload = 'pod-role' (or a longer results_upload_seconds)",
            flush=True,
        )
        return failed + files
    for rel in files:
        for attempt in range(tries):
            fields = {str(k): str(v) for k, v in dict(target["fields"]).items()}  # type: ignore[call-overload]
            fields["key"] = f"{target['prefix']}{rel}"
            boundary = uuid.uuid4().hex
            body, length = multipart(fields, os.path.join(source, rel), boundary)
            request = urllib.request.Request(
                str(target["url"]),
                data=body,
                method="POST",
                headers={
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(length),
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=300):
                    break
            except (urllib.error.URLError, OSError) as e:
                if attempt == tries - 1:
                    print(f"[eksray] could not upload the result {rel}: {e}", flush=True)
                    failed.append(rel)
                else:
                    time.sleep(2**attempt)
    return failed


def upload_with_role(files: list[str], source: str, target: dict[str, object]) -> list[str]:
    """Upload with the process's own AWS identity (the pod's IAM role); return the ones that failed."""
    try:
        import boto3  # not in the standard library: present in the Ray image, or this says so
    except ImportError:
        print(
            "[eksray] cannot upload results: boto3 is not installed on the head "
            "(needed for KubeRayJobRunner.results_upload = 'pod-role')",
            flush=True,
        )
        return list(files)
    client = boto3.client(
        "s3", region_name=target.get("region") or None, endpoint_url=target.get("endpointUrl") or None
    )
    failed = []
    for rel in files:
        try:
            client.upload_file(os.path.join(source, rel), str(target["bucket"]), f"{target['prefix']}{rel}")
        except Exception as e:  # botocore's errors: report per file, never raise
            print(f"[eksray] could not upload the result {rel}: {e}", flush=True)
            failed.append(rel)
    return failed


def inline_command(patterns: list[str], command: str, python: str = "python") -> str:
    """A shell command running this wrapper from its own source: nothing to install on the head."""
    with open(__file__, "rb") as f:
        packed = base64.b64encode(zlib.compress(f.read(), 9)).decode()
    loader = f"import base64,zlib;exec(zlib.decompress(base64.b64decode('{packed}')))"
    return shlex.join([python, "-c", loader, "--results", json.dumps(patterns), "--", command])


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: driver.py [--results JSON] -- COMMAND", file=sys.stderr)
        return 2
    split = argv.index("--")
    options, command = argv[:split], " ".join(argv[split + 1 :])
    patterns: list[str] = []
    if "--results" in options:
        patterns = json.loads(options[options.index("--results") + 1])
    upload_to = json.loads(os.environ[RESULTS_UPLOAD_ENV]) if os.environ.get(RESULTS_UPLOAD_ENV) else None
    made_results_dir = upload_to is not None and not os.environ.get(RESULTS_DIR_ENV)
    if made_results_dir:
        os.environ[RESULTS_DIR_ENV] = tempfile.mkdtemp(prefix="eksray-results-")
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
    if upload_to is not None and target and os.path.isdir(target):
        files = sorted(
            os.path.relpath(os.path.join(root, name), target)
            for root, _dirs, names in os.walk(target)
            for name in names
        )
        failed = upload(files, target, upload_to)
        print(f"[eksray] uploaded {len(files) - len(failed)} result file(s)", flush=True)
    if made_results_dir and target:
        shutil.rmtree(target, ignore_errors=True)  # uploaded (or reported): nothing to keep here
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
