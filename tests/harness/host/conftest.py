"""Shared helpers for the host tests: a DVM participant that records what the host broadcasts."""
from __future__ import annotations

import pytest

from devmodel.dvm import DvmSync, Interconnect
from devmodel.tlbi_types import TlbiOp


class Recorder:
    """A DVM participant (stands for an SMMU with BTM or another PE) that logs TLBIs and Syncs in order."""

    dvm_name = "recorder"

    def __init__(self) -> None:
        self.log: list[tuple[str, object]] = []

    def dvm_tlbi(self, op: TlbiOp, msg: int) -> None:
        self.log.append(("tlbi", op))

    def dvm_sync(self, sync: DvmSync) -> None:
        self.log.append(("sync", sync))

    def tlbis(self, name: str | None = None) -> list[TlbiOp]:
        return [op for kind, op in self.log if kind == "tlbi" and (name is None or op.name == name)]


@pytest.fixture
def dvm():
    ic = Interconnect()
    rec = Recorder()
    ic.attach(rec)
    return ic, rec
