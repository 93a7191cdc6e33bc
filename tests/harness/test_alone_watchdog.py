"""The wall-clock budget of a lone vCPU's uncounted run (harness/scheduler.py `_run_alone`): the process's
watchdog thread (harness/watchdog.py) stops it with emu_stop; emu_start gets no timeout (Unicorn 2.1's timeout
thread polls every 2 us)."""
from __future__ import annotations

import os
import threading
import time

import pytest

from guestbin import guest_elf

from harness.exits import EXIT_BUDGET, Kind
from harness.machine import Machine
from harness.watchdog import THREAD_NAME, WATCHDOG, Watchdog


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


def _watchdogs():
    return [th for th in threading.enumerate() if th.name == THREAD_NAME]


def test_one_long_lived_watchdog_thread_serves_every_run():
    for _ in range(2):
        m = Machine(console=lambda vm, d, s: None)
        m.add_vm().load(str(guest_elf("hello")))
        assert m.run(timeout=30).exit_code == 0
        assert not WATCHDOG.armed
    threads = _watchdogs()
    assert len(threads) == 1 and threads[0].daemon and threads[0].is_alive()


def test_a_disarmed_watchdog_never_calls_and_an_armed_one_calls_once():
    w = Watchdog()
    calls = []
    w.disarm(w.arm(0.05, lambda: calls.append("early")))
    w.arm(0.2, lambda: calls.append("second"))          # several armed at once: each fires at its own deadline
    w.arm(0.01, lambda: calls.append("first"))
    time.sleep(0.5)
    assert calls == ["first", "second"] and not w.armed
    calls.clear()
    w.arm(0.0, lambda: 1 / 0)                # a failing stop does not kill the thread
    time.sleep(0.05)
    w.arm(0.0, lambda: calls.append("again"))
    time.sleep(0.2)
    assert calls == ["again"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_starts_with_its_own_unarmed_watchdog():
    token = WATCHDOG.arm(60, lambda: None)
    try:
        pid = os.fork()
        if pid == 0:                          # the child: no thread yet, unarmed, and it arms and fires
            ok = not WATCHDOG.armed and WATCHDOG._thread is None
            fired = threading.Event()
            WATCHDOG.arm(0.0, fired.set)
            os._exit(0 if ok and fired.wait(5) else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        WATCHDOG.disarm(token)
