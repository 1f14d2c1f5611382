"""What every test of the suite shares.

- Real providers may not reach a network: ``ERPOZ_BLOCK_REAL_MODELS=network`` for this process
  and every process a test starts. A model test talks to a local server that speaks the real
  protocol (``erpoz.testing.OpenAIStubServer`` on loopback, always allowed) or to a test
  double; weights that ship inside packages (MiniLM, RapidOCR) still load. A test that means
  to lift the block says so (``models.local_fixtures.real_models_allowed``).
- ``COLUMNS`` is left unset, so that the CLI's consoles, made when ``erpoz`` is imported, take
  the width each in-process command is given.
"""

from __future__ import annotations

import os

os.environ["ERPOZ_BLOCK_REAL_MODELS"] = "network"
os.environ.pop("COLUMNS", None)
