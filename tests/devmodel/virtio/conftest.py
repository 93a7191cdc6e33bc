"""Fixtures for the virtio model tests: a console with a chr-testdev on either interface (helpers in
driver.py)."""
from __future__ import annotations

import pytest

from devmodel.virtio import ChrTestdev, VirtioConsole

from .driver import make_rig


class ConsoleRig:
    """A virtio console whose port 0 writes into a chr-testdev and records every byte."""

    def __init__(self, legacy: bool, **console_kw):
        self.testdev = ChrTestdev()
        self.out = bytearray()

        def backend(data: bytes) -> None:
            self.out += data
            self.testdev.write(data)

        self.rig = make_rig(lambda mem, tracer, log: VirtioConsole(mem, backend, tracer=tracer, log=log,
                                                                    **console_kw), legacy=legacy)
        self.console = self.rig.device
        self.drv = self.rig.driver
        self.t = self.rig.transport

    def up(self, wanted: int | None = None):
        """Linux-style bring-up of port 0: features, queues 0 and 1, DRIVER_OK; returns (rx, tx)."""
        assert self.drv.init(wanted) or wanted == 0
        rx, tx = self.drv.setup_queue(0), self.drv.setup_queue(1)
        self.drv.driver_ok()
        return rx, tx


@pytest.fixture(params=[False, True], ids=["version2", "version1"])
def console(request) -> ConsoleRig:
    return ConsoleRig(legacy=request.param)


@pytest.fixture
def modern() -> ConsoleRig:
    return ConsoleRig(legacy=False)


@pytest.fixture
def legacy() -> ConsoleRig:
    return ConsoleRig(legacy=True)
