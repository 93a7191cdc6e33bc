"""Collect the guest regression suite (guest_fw/**/unittests.cfg) with harness.pytest_plugin."""
from harness.pytest_plugin import pytest_addoption, pytest_collect_file  # noqa: F401  (pytest hooks)
