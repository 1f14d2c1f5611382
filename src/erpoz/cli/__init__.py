"""The ``erpoz`` command, one module per command group.

:mod:`.app` is the root (``run``, ``validate``, ``events``); every group (``runs``, ``review``,
``audit``, ``models``, ``serve`` …) is imported when it runs, through :mod:`.lazy`.
:mod:`._console` (output, exit codes, common options, the store and engine the commands open)
and :mod:`._running` (loading a flow, driving a run, reporting it) are shared by all of them.
"""

from .app import app, main

__all__ = ["app", "main"]
