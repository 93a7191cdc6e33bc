"""The wall-clock budget of a lone vCPU's uncounted run (harness/scheduler.py `_run_alone`): a timer thread
stops it with emu_stop; emu_start gets no timeout (Unicorn 2.1's timeout thread polls every 2 us)."""
from __future__ import annotations

import threading
import time

from guestbin import guest_elf

from harness.exits import EXIT_BUDGET, Kind
from harness.machine import Machine


def test_spin_ends_at_its_wall_budget_without_an_emu_start_timeout(monkeypatch):
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm()
    vm.load(str(guest_elf("spin")))
    uc = vm.vcpus[0].uc
    starts = []
    emu_start = uc.emu_start

    def spy(begin, until, timeout=0, count=0):
        starts.append((timeout, count))
        return emu_start(begin, until, timeout, count)
    uc.emu_start = spy
    t = time.monotonic()
    o = m.run(timeout=0.3)
    took = time.monotonic() - t
    assert (o.kind, o.exit_code) == (Kind.TIMEOUT, EXIT_BUDGET) and "<main+" in o.message
    assert starts and all(s == (0, 0) for s in starts) and 0.3 <= took < 10
    assert not [th for th in threading.enumerate() if isinstance(th, threading.Timer) and th.is_alive()]


def test_a_run_that_ends_first_cancels_the_timer():
    m = Machine(console=lambda vm, d, s: None)
    m.add_vm().load(str(guest_elf("hello")))
    o = m.run(timeout=30)
    assert o.exit_code == 0
    assert not [th for th in threading.enumerate() if isinstance(th, threading.Timer) and th.is_alive()]
