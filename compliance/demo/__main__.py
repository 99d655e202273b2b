"""Regenerate the bundled demo files: ``python -m compliance.demo``."""

from pathlib import Path

from compliance.demo import generate

generate(Path(__file__).parent)
