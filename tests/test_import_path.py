"""The import path's stand-ins: Ray processes and kernels import ray without building grammars they
never use (seconds per process; benchmarks/first_task measures it), and behave the same."""

from __future__ import annotations

import os
import subprocess
import sys

from eksray_jupyter.core import processes

BUILT = "'rfc3987_syntax.syntax_helpers' in sys.modules"
IRI_CHECKS = f"""
import sys
import ray, jsonschema
print("BUILT_AT_IMPORT", {BUILT})
checker = jsonschema.Draft7Validator.FORMAT_CHECKER
ok = [checker.conforms(v, f) for v, f in
      (("http://example.org/é", "iri"), ("http://[bad", "iri"), ("a b", "iri-reference"), ("rel/ü", "iri-reference"))]
print("CHECKS", ok)
print("BUILT_AFTER_CHECKS", {BUILT})
"""


def run(code: str, env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)


def test_the_iri_grammars_are_built_on_first_use_with_the_same_answers() -> None:
    plain = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    without = run(IRI_CHECKS, plain)
    stood_in = run(IRI_CHECKS, processes.with_import_path(plain))
    # Without the stand-in, importing ray builds every grammar; with it, only a check does.
    assert without["BUILT_AT_IMPORT"] == "True"
    assert stood_in["BUILT_AT_IMPORT"] == "False"
    assert stood_in["BUILT_AFTER_CHECKS"] == "True"  # the real grammars answered
    assert stood_in["CHECKS"] == without["CHECKS"] == "[True, False, False, True]"


def test_without_the_real_package_the_stand_in_is_absent_too() -> None:
    # jsonschema registers the iri checks only if rfc3987_syntax imports: the stand-in must not
    # pretend to be a package that is not installed.
    code = (
        "import sys; sys.path[:] = [p for p in sys.path if 'site-packages' not in p]\n"
        "try:\n    import rfc3987_syntax\n    print('IMPORTED yes')\nexcept ImportError:\n    print('IMPORTED no')\n"
    )
    assert run(code, processes.with_import_path(dict(os.environ)))["IMPORTED"] == "no"


def test_ray_processes_get_the_import_path_first_and_keep_the_users() -> None:
    env = processes.ray_env({"PYTHONPATH": f"/opt/mine{os.pathsep}{processes.IMPORT_PATH}"})
    assert env["PYTHONPATH"].split(os.pathsep) == [processes.IMPORT_PATH, "/opt/mine"]
    assert processes.with_import_path({})["PYTHONPATH"] == processes.IMPORT_PATH
