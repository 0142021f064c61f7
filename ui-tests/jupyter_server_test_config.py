"""Jupyter server configuration for the Galata UI tests.

Used by the Playwright ``webServer`` (``jlpm start``); see playwright.config.js.
"""

from jupyterlab.galata import configure_jupyter_server

c = get_config()  # noqa: F821 (``get_config`` is provided by Jupyter's config loader)

configure_jupyter_server(c)

# CI runs as root.
c.ServerApp.allow_root = True

# A private, empty state directory per run: the tests must not see (or touch) a developer's clusters.
# The tests delete the clusters they create; the directory goes when the server exits.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

c.EKSRay.state_dir = tempfile.mkdtemp(prefix="eksray-ui-")
atexit.register(shutil.rmtree, c.EKSRay.state_dir, ignore_errors=True)

# An administrator's lifecycle bounds for one profile: the form shows them when it is chosen.
c.EKSRay.lifecycle_bounds = {
    "tagged": {
        "idleTimeoutMinutes": {"minimum": 10, "maximum": 240, "allowOff": False, "default": 60},
        "idleAction": {"allowed": ["suspend"]},
    }
}

# A quota and a monthly budget for everyone (no prices: the local backend's clusters cost $0, so the
# budget stays at 0 %): the Usage section shows them, and a create past maxCpus is refused (409).
c.EKSRay.quotas = {"default": {"maxCpus": 16, "maxMemoryGiB": 64, "monthlyBudget": 100}}
