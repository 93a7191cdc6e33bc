"""One queue class for CMDQ and EVTQ (IHI 0070 3.5): index/wrap arithmetic, full/empty, base alignment."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from devmodel.regs import RegisterFile
from devmodel.smmuv3.queue import Queue, QueueState
from devmodel.smmuv3.regs import SmmuFeatures, build_regs


class _Owner:
    pass


def test_empty_full_wrap() -> None:
    s = QueueState(0, 2, prod=0, cons=0)
    assert s.empty and not s.full
    s = QueueState(0, 2, prod=0b100, cons=0b000)      # same index, wrap differs
    assert s.full and not s.empty
    assert s.next(0b011) == 0b100 and s.next(0b111) == 0b000


def test_queue_reads_registers_and_caps_log2size() -> None:
    regs = RegisterFile(_Owner(), build_regs(SmmuFeatures(cmdqs=3)))
    q = Queue(regs, "CMDQ", 16, 3, owner="CONS")
    regs["CMDQ_BASE"] = 0x4000_1234 | 7                   # LOG2SIZE 7 capped to CMDQS=3; base aligned to 128 B
    regs["CMDQ_PROD"] = 0xFFFF_FFF5                       # bits above the wrap bit are ignored
    st = q.state()
    assert st.log2size == 3 and st.base == 0x4000_1200 and st.prod == 0b0101
    assert q.slot(st, 0b1101) == 0x4000_1200 + 5 * 16
    q.set_cons(0b1001)
    assert regs.get_field("CMDQ_CONS", "RD") == 0b1001 and q.state().cons == 0b1001


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 8), st.integers(0, 2**20 - 1), st.integers(0, 2**20 - 1))
def test_full_and_empty_are_exclusive(log2: int, p: int, c: int) -> None:
    mask = (2 << log2) - 1
    s = QueueState(0, log2, p & mask, c & mask)
    assert not (s.full and s.empty)
    used = (s.prod - s.cons) & mask
    assert (used == s.entries) == s.full and (used == 0) == s.empty   # (used > entries: software wrote an
    # inconsistent PROD; the model still only walks CONS towards PROD)
