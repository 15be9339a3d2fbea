"""Package logger (``logging.getLogger("stmorph")``); library code never prints."""

from __future__ import annotations

import logging

logger = logging.getLogger("stmorph")
logger.addHandler(logging.NullHandler())
