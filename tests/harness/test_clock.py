"""harness/clock.py: the virtual clock's accounting on its own (slices, samples, caps, deadlines, warps)."""
from __future__ import annotations

import pytest

from harness.clock import HZ, SAMPLE_STEP, VirtualClock


class Stops:
    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1


def test_units():
    c = VirtualClock()
    assert c.hz == HZ == 62_500_000 and c.now() == 0 and not c.started
    c.warp(62_500)
    assert c.ns() == 1_000_000 and c.us() == 1000.0 and c.us(1) == 0.016


def test_counted_slices_charge_their_planned_end():
    c = VirtualClock()
    stop = Stops()
    c.begin_slice(10_000, stop)
    assert c.end_slice() == 10_000 and c.now() == 10_000 and stop.n == 0
    c.begin_slice(500, stop)                       # a slice that ended early (PSCI, an exit): charged in full
    assert c.end_slice() == 500 and c.now() == 10_500


def test_samples_double_within_a_slice_and_stop_it_at_the_cap():
    c = VirtualClock()
    stop = Stops()
    c.begin_slice(1000, stop)
    seen = [c.sample() for _ in range(8)]
    assert seen == [16, 48, 112, 240, 496, 1000, 1000, 1000]      # +16, +32, ... capped at the slice's end
    assert stop.n == 1 and c.started and c.samples == 8
    assert c.end_slice() == 1000
    c.begin_slice(1000, stop)
    assert c.sample() == 1000 + SAMPLE_STEP                       # the next slice starts over at +16
    c.end_slice()
    assert c.now() == 2000


def test_a_deadline_caps_samples_and_bounds_what_the_guest_sees():
    c = VirtualClock()
    fired = []
    c.set_deadline("t0", 300, fired.append)
    assert c.started and c.next_deadline() == 300
    stop = Stops()
    c.begin_slice(10_000, stop)
    assert [c.sample() for _ in range(6)] == [16, 48, 112, 240, 300, 300] and stop.n == 1
    assert c.end_slice() == 300 and fired == []                  # stopped at the cap: ends at the deadline
    assert c.fire_due() == 1 and fired == [300] and c.next_deadline() is None


def test_wfi_sleeps_to_a_deadline_armed_during_the_slice_only():
    c = VirtualClock()
    stop = Stops()
    c.begin_slice(10_000, stop)
    c.set_deadline("t0", 2_000, lambda now: None)
    assert c.end_slice(wfi=True) == 2_000                        # WFI: the rest of the slice up to the deadline
    c.begin_slice(10_000, stop)
    c.set_deadline("t0", 50_000, lambda now: None)
    assert c.end_slice(wfi=True) == 10_000 and c.now() == 12_000


def test_uncounted_runs_stand_still_until_time_is_needed():
    c = VirtualClock()
    stop = Stops()
    c.begin_slice(0, stop)
    assert c.now() == 0
    assert c.sample("guest") == 16 and c.started_by == "guest" and stop.n == 1   # the uncounted run must end
    assert c.sample() == 48 and stop.n == 1
    assert c.end_slice() == 48                                    # only the samples moved time
    c2 = VirtualClock()
    c2.begin_slice(0, stop)
    c2.start("trace timestamps")
    assert stop.n == 2 and c2.end_slice() == 0


def test_deadlines_fire_in_order_and_rearm():
    c = VirtualClock()
    order = []

    def fire(key, again=None):
        def f(now):
            order.append((key, now))
            if again is not None:
                c.set_deadline(key, again, fire(key))
        return f
    c.set_deadline("a", 100, fire("a", again=250))
    c.set_deadline("b", 200, fire("b"))
    c.warp(150)
    assert c.fire_due() == 1 and order == [("a", 150)] and c.next_deadline() == 200
    c.warp(300)
    assert c.fire_due() == 2 and sorted(order[1:]) == [("a", 300), ("b", 300)] and c.next_deadline() is None
    c.set_deadline("x", 400, fire("x"))
    c.set_deadline("x", None)
    assert c.next_deadline() is None
    c.warp(100)
    assert c.now() == 300                                         # never backwards
    with pytest.raises(ValueError):
        c.set_deadline("y", 5)
