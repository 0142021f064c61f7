"""The extension must not slow Jupyter's start: no ray, kubernetes or boto3 at load time."""

from __future__ import annotations

import subprocess
import sys


def test_loading_the_extension_imports_no_heavy_package(tmp_path: object) -> None:
    code = f"""
import sys
from jupyter_server.serverapp import ServerApp
app = ServerApp(jpserver_extensions={{"eksray_jupyter": True}}, allow_root=True, open_browser=False)
app.initialize(argv=["--EKSRay.state_dir={tmp_path}", "--ServerApp.port=0"])
assert "eksray_jupyter" in app.extension_manager.extensions
assert app.web_app.settings["eksray_services"].clusters.backend.name == "local"
heavy = sorted(m for m in ("ray", "kubernetes", "boto3", "botocore") if m in sys.modules)
print("HEAVY", heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout, out.stdout
