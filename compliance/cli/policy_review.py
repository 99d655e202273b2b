"""`policy explain|backtest`: a policy in plain words, and what it would have raised."""

from __future__ import annotations

from compliance.cli.policy import policy  # noqa: F401 (the group these commands join)
