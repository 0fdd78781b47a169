"""Child Python processes, started isolated from the working directory.

``python -m pkg.mod`` puts the current directory first on ``sys.path``: a
``./engine/workers.py`` (or ``./cli/chanload.py``, ``./uvloop.py``) in the
directory where chanload is started would run in place of chanload's own,
with the parent's environment. ``-P`` (Python 3.11+) keeps that directory off
the path; the package is found where it is installed, as for the parent.
``-I`` would also drop PYTHONPATH and the user's site-packages, where a
``pip install --user`` of chanload lives, so it is not used.
"""

from __future__ import annotations

import sys


def python_module(module: str, *args: str) -> list[str]:
    """The command that runs ``module`` (``python -P -m module args``) with this interpreter."""
    return [sys.executable, "-P", "-m", module, *args]
