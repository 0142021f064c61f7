"""Running ``%eksray`` as a notebook cell does, for the magics tests."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import CapturedIO, capture_output


def run(shell: InteractiveShell, line: str) -> CapturedIO:
    """Run a magic the way a cell does; errors propagate (UsageError for the user's mistakes)."""
    with capture_output() as cap:
        shell.run_line_magic("eksray", line)
    return cap


def fail(shell: InteractiveShell, line: str) -> str:
    """The one-line message a cell shows for a refused magic (never a traceback)."""
    with pytest.raises(UsageError) as info:
        run(shell, line)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message
