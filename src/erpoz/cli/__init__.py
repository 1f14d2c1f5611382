"""The ``erpoz`` command, one module per command group.

:mod:`.app` is the root (``run``, ``validate``, ``events``) and :mod:`.runs` / :mod:`.review`
its groups that load with it; the other groups (``audit``, ``models``, ``serve`` …) are imported
when they run, through :mod:`.lazy`. :mod:`._console` (output, exit codes, common options, the
store and engine the commands open) and :mod:`._running` (loading a flow, driving a run,
reporting it) are shared by all of them.
"""

from .app import app, main

__all__ = ["app", "main"]
