"""rfc3987_syntax, loaded when an IRI is first checked instead of when it is imported.

``jsonschema`` imports ``rfc3987_syntax`` eagerly (for the ``iri`` formats, which Jupyter
installs through ``jsonschema[format-nongpl]``), and the real package builds some 35 Earley
grammars at import: 2.4 s of CPU here, paid by every Ray process that imports ``ray`` (its
runtime-env schema check imports jsonschema) — about ten per local cluster, on two cores
(python-jsonschema/jsonschema#1428). This stand-in is first on the ``PYTHONPATH`` of the Ray
processes eksray starts: it has the real package's submodules (its ``__path__`` is the real
one's) and the same names, and loads the real grammars on first use. Behaviour is unchanged.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from typing import Any

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_real = importlib.machinery.PathFinder.find_spec(
    __name__, [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
)
if _real is None or not _real.submodule_search_locations:
    raise ImportError("rfc3987_syntax is not installed", name=__name__)  # as without this stand-in
# The real package's directory: `from .syntax_helpers import ...` (ours and its own) finds its files.
__path__ = list(_real.submodule_search_locations)


def is_valid_syntax(term: str, value: str) -> bool:
    from .syntax_helpers import is_valid_syntax as real

    return real(term=term, value=value)


def __getattr__(name: str) -> Any:
    from . import syntax_helpers

    return getattr(syntax_helpers, name)
