"""Fixtures for the SMMUv3 model tests (helpers live in bench.py)."""
from __future__ import annotations

import pytest

from .bench import Bench


@pytest.fixture
def bench() -> Bench:
    return Bench()

