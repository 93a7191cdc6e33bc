"""Stalled transactions (IHI 0070 3.12.2 "Stall model"): the SMMU's table of outstanding stalls and the pure rules
around them. The device (`device.py`) decides *when* a fault stalls; this module keeps the stalls, allocates
their tags and says how CMD_RESUME ends them.

* A stall is a `Fault` with `stall=True` and a `stag` (the event record's Stall and STAG fields). STAGs are
  allocated here, 16 bits, unique among the outstanding stalls of a StreamID (software names a stall by
  StreamID + STAG in CMD_RESUME); at most `capacity` (IDR5.STALL_MAX) stalls are outstanding.
* How a stall ends (`Resume`): CMD_RESUME with Ac=1 retries (the transaction is translated again, as a new
  transaction: it sees the configuration and TLB state of that moment, so software must have completed its
  CFGI/TLBI + CMD_SYNC first; it may fault, and stall, again); Ac=0 terminates it, with an abort (Ab=1) or RAZ/WI
  (Ab=0: reads return zero, writes are ignored, the device sees success). CMD_STALL_TERM and SMMUEN 1 -> 0 end
  every stall of a StreamID / of the SMMU with an abort.
* A device that can wait registers a waiter (`wait`); it is told the `StallEnd`. Without a waiter the end is
  only counted (a caller that cannot hold a transaction has already seen the stalled Fault as a failure).

CMD_RESUME's Resp field is declared as Linux declares it (`CMDQ_RESUME_0_RESP`, values TERM 0, RETRY 1, ABORT 2);
the specification names its bits Ac (bit 12, action) and Ab (bit 13, abort): `resume_action` decodes them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable

from .fault import Fault

__all__ = ["Resume", "StallEnd", "Stalled", "StallTable", "resume_action"]


class Resume(str, Enum):
    RETRY = "retry"      # translate the transaction again
    ABORT = "abort"      # terminated: an abort to the device
    RAZWI = "razwi"      # terminated: reads return zero, writes are ignored, the device sees success


def resume_action(resp: int) -> Resume:
    """CMD_RESUME Resp[1:0] = {Ab, Ac}: Ac=1 retry (Ab ignored); Ac=0 terminate, with an abort when Ab=1."""
    if resp & 1:
        return Resume.RETRY
    return Resume.ABORT if resp & 2 else Resume.RAZWI


@dataclass(frozen=True, slots=True)
class StallEnd:
    """How a stall ended, as its waiter is told. `result`: for RETRY the new translation (a `TransResult`, or a
    `Fault`, which may be stalled again with a new STAG); else None. `why`: "resume", "stall_term",
    "smmuen_off", "evtq_disabled", "evtq_abort" or "reset"."""
    action: Resume
    result: Any
    why: str


@dataclass(eq=False, slots=True)
class Stalled:
    fault: Fault                                        # stall=True, stag set; rnw/ind/pnu say the access
    waiter: Callable[[StallEnd], None] | None = None


class StallTable:
    """The outstanding stalls of one SMMU, by (StreamID, STAG)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._by_key: dict[tuple[int, int], Stalled] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def alloc(self, fault: Fault) -> Fault | None:
        """Hold the transaction of `fault`: the fault with `stall`, its STAG and `record` (a stall is always
        recorded: software needs the STAG), or None when `capacity` stalls are outstanding already."""
        if len(self._by_key) >= self.capacity:
            return None
        for _ in range(0x10000):
            stag, self._next = self._next, (self._next + 1) & 0xFFFF
            if (fault.sid, stag) not in self._by_key:
                break
        f = dataclasses.replace(fault, stall=True, stag=stag, record=True)
        self._by_key[(f.sid, stag)] = Stalled(f)
        return f

    def get(self, sid: int, stag: int) -> Stalled | None:
        return self._by_key.get((sid, stag))

    def take(self, sid: int, stag: int) -> Stalled | None:
        """Remove and return the stall (None: no such stall; CMD_RESUME for it is ignored)."""
        return self._by_key.pop((sid, stag), None)

    def take_sid(self, sid: int) -> list[Stalled]:
        keys = [k for k in self._by_key if k[0] == sid]
        return [self._by_key.pop(k) for k in keys]

    def take_all(self) -> list[Stalled]:
        out = list(self._by_key.values())
        self._by_key.clear()
        return out

    def wait(self, sid: int, stag: int, waiter: Callable[[StallEnd], None]) -> bool:
        """Tell `waiter` how the stall ends; False when it is not outstanding (already ended)."""
        st = self._by_key.get((sid, stag))
        if st is None:
            return False
        st.waiter = waiter
        return True

    def outstanding(self) -> list[Fault]:
        return [s.fault for s in self._by_key.values()]
