"""Backtests: what a new or changed policy would have raised over the stored history."""
