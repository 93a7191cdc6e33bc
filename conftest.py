"""Project-wide pytest configuration: tests marked `slow` run only when selected with `-m slow`
(or any -m expression naming them), so the default suite stays within its time budget."""
import pytest


def pytest_collection_modifyitems(config, items):
    markexpr = config.getoption("markexpr") or ""
    if "slow" in markexpr:
        return
    skip = pytest.mark.skip(reason="slow: select with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
