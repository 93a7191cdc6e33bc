"""The machine's virtual clock: one deterministic timeline, a function of the instructions the vCPUs retire.

It is the one source of time for the generic timer (harness/timer.py: CNTPCT/CNTVCT, the timers' deadlines),
semihosting (SYS_CLOCK, SYS_ELAPSED, SYS_TIME), trace timestamps (`Record.ts`) and, through the timer outputs,
interrupt delivery. Nothing in it reads the host's clock, so runs are identical on every host, at any load.

Unit: the tick of the system counter, `HZ` = 62.5 MHz (CNTFRQ_EL0 of `qemu-system-aarch64 -M virt -cpu max`
7.2), and the nominal rate is one tick per instruction (62.5 M instructions per virtual second). That keeps
guests that busy-wait on the counter fast here (kvm-unit-tests' `mdelay(100)` is 6.25 M ticks) while a
counter read still advances time like real code does.

How time advances (the model of QEMU's icount with round-robin vCPUs, softmmu/icount.c: one count shared by
every vCPU, deadlines bounding each vCPU's budget, an idle machine warping to the next deadline):
* Unicorn counts instructions exactly only in `emu_start(count=n)` slices and says nothing mid-slice, so time
  advances per slice. The scheduler bounds every slice by the next deadline (`next_deadline`): a timer fires
  at an exact instruction boundary. A slice that ran out of instructions ends at `start + n`.
* A slice ended early (WFI, PSCI, a stop requested by a device) is charged in full - its planned end - except
  that a WFI sleeps only to the earliest deadline when a deadline programmed during the slice came sooner
  (the rest of the slice is idle time either way).
* Mid-slice, time seen by the guest (`sample`: counter, CTL and TVAL reads, TVAL writes, semihosting clocks)
  is the slice's start plus an estimate that doubles with each sample in the slice: +16, +32, +64 ... ticks,
  never past the slice's cap (its planned end or the earliest deadline); the sample that reaches the cap ends
  the slice there. Isolated reads move time little; a busy-wait loop on the counter or on ISTATUS reaches
  the end of its slice in log2(slice / 16) reads, so `mdelay` costs a few Python calls per slice.
* Trace records and other observers read `now()` without moving it.
* While nothing needs time (`started` is False: no guest access to the timer or a semihosting clock, no
  consumer such as a Chrome trace) a lone vCPU runs uncounted at full speed and time stands still; the first
  access `start`s the clock and stops the uncounted run so the scheduler switches to counted slices. With two
  or more runnable vCPUs slices are counted anyway, so time advances.
* When no vCPU can run, time warps to the next deadline (`warp`), as QEMU's icount does when every vCPU
  sleeps; a vCPU sleeping in WFI does not stop time for the others.

Resolution: an event inside a slice is dated at the slice's start plus the samples taken so far; so the
error on an interval is at most one slice (the scheduler's quantum, 10,000 ticks = 160 us by default).
"""
from __future__ import annotations

from typing import Any, Callable

from devmodel.timer import CNTFRQ_HZ

__all__ = ["VirtualClock", "HZ", "SAMPLE_STEP"]

HZ = CNTFRQ_HZ
SAMPLE_STEP = 16                 # ticks the first time sample of a slice adds; each next one doubles it
_MAX_SHIFT = 40


class VirtualClock:
    """Virtual time in ticks, slices, samples and deadlines (see the module docstring)."""

    def __init__(self, hz: int = HZ):
        self.hz = hz
        self.started = False
        self.started_by: str | None = None
        self.samples = 0                     # guest time samples taken (statistics)
        self._now = 0
        self._deadlines: dict[Any, tuple[int, Callable[[int], None]]] = {}
        self._next: int | None = None        # cached min of _deadlines
        # the running slice: start, planned end (None: uncounted), samples taken in it, stop request
        self._start = 0
        self._end: int | None = None
        self._k = 0
        self._in_slice = False
        self._stop: Callable[[], None] | None = None
        self._stopped_at_cap = False
        self.native: Any = None              # the SrClock the native MRS hooks share (harness/sysregs.py)

    # -- reading ------------------------------------------------------------------------------------------------
    def now(self) -> int:
        """Current virtual time in ticks (an observer's read: does not move time)."""
        return self._now

    def ns(self) -> int:
        """`now()` in nanoseconds."""
        return self._now * 1_000_000_000 // self.hz

    def us(self, ticks: int | None = None) -> float:
        """`ticks` (default: now) in microseconds, the unit of Chrome trace timestamps."""
        return (self._now if ticks is None else ticks) * 1_000_000 / self.hz

    def start(self, why: str) -> None:
        """Something needs time from now on: runs are counted (sticky)."""
        if not self.started:
            self.started, self.started_by = True, why
            if self._in_slice and self._end is None and self._stop is not None:
                self._stop()                 # an uncounted run: end it so the next one is counted

    def sample(self, why: str = "guest") -> int:
        """A guest-visible read of time: starts the clock, advances the in-slice estimate, returns the time."""
        self.start(why)
        self.samples += 1
        if not self._in_slice:
            return self._now
        step = SAMPLE_STEP << min(self._k, _MAX_SHIFT)
        self._k += 1
        t = self._now + step
        cap = self.cap()
        if cap is not None and t >= cap:
            t = max(cap, self._now)
            if not self._stopped_at_cap and self._stop is not None:
                self._stopped_at_cap = True
                self._stop()
        self._now = t
        return t

    def sample_ns(self, why: str = "guest") -> int:
        """`sample` in nanoseconds (semihosting's SYS_CLOCK/SYS_ELAPSED/SYS_TIME tick at 1 GHz, as QEMU's)."""
        return self.sample(why) * 1_000_000_000 // self.hz

    def cap(self) -> int | None:
        """The latest time the running slice may show: its planned end or the earliest deadline."""
        nd = self.next_deadline()
        if self._end is None:
            return nd
        return self._end if nd is None else min(self._end, nd)

    # -- deadlines ------------------------------------------------------------------------------------------------
    def set_deadline(self, key: Any, when: int | None, fire: Callable[[int], None] | None = None) -> None:
        """(Re)arm `key`'s deadline at tick `when` (None disarms); `fire(now)` runs once time reaches it.
        Arming a deadline starts the clock."""
        if when is None:
            if self._deadlines.pop(key, None) is not None:
                self._next = None if not self._deadlines else min(t for t, _ in self._deadlines.values())
            return
        if fire is None:
            raise ValueError("set_deadline needs fire= to arm a deadline")
        self.start("timer deadline")
        self._deadlines[key] = (when, fire)
        self._next = min(t for t, _ in self._deadlines.values())

    def next_deadline(self) -> int | None:
        return self._next

    def fire_due(self) -> int:
        """Run the callbacks of every deadline <= now (each re-arms itself or not); returns how many ran."""
        fired = 0
        while self._next is not None and self._next <= self._now:
            due = [k for k, (t, _) in self._deadlines.items() if t <= self._now]
            for k in due:
                entry = self._deadlines.pop(k, None)
                self._next = None if not self._deadlines else min(t for t, _ in self._deadlines.values())
                if entry is not None:
                    entry[1](self._now)
                    fired += 1
        return fired

    # -- the scheduler's side -------------------------------------------------------------------------------------
    def begin_slice(self, count: int, stop: Callable[[], None]) -> None:
        """A vCPU starts a slice of `count` instructions (0: uncounted); `stop()` ends it early."""
        self._start = self._now
        self._end = self._now + count if count > 0 else None
        self._k = 0
        self._stop = stop
        self._stopped_at_cap = False
        self._in_slice = True

    def end_slice(self, *, wfi: bool = False) -> int:
        """The slice is over: charge it (see the module docstring). Returns the ticks it took."""
        self._in_slice = False
        self._stop = None
        if self._end is not None and not self._stopped_at_cap:
            end = self._end
            if wfi:
                nd = self.next_deadline()
                if nd is not None:
                    end = max(self._now, min(end, nd))
            self._now = end
        return self._now - self._start

    # -- native samples (harness/native/sysreg.c) ------------------------------------------------------------
    def lend(self, m: Any) -> bool:
        """Just before a counted emu_start: let native code take this slice's counter samples (`m`: a
        harness/native/sysreg.py `SrClock`) by the rule of `sample`, up to the one that reaches the cap and
        stops the slice. Not lent (False) while the clock stands still or once the slice stopped at its cap:
        Python samples those."""
        cap = self.cap() if self.started and self._in_slice and self._end is not None else None
        if cap is None or self._stopped_at_cap:
            m.lent = 0
            return False
        m.now, m.cap, m.k, m.samples, m.stopped, m.lent = self._now, cap, self._k, 0, 0, 1
        return True

    def take_back(self, m: Any) -> None:
        """At an observation point (harness/observe.py): the samples native code took since `lend`."""
        if m.lent:
            self._now, self._k, m.lent = m.now, m.k, 0
            self.samples += m.samples
            if m.stopped:                    # a native sample reached the cap and stopped the slice there
                self._stopped_at_cap = True

    def warp(self, when: int) -> None:
        """Idle machine: jump to `when` (never backwards)."""
        if when > self._now:
            self._now = when

    def __repr__(self) -> str:
        return (f"<VirtualClock {self._now} ticks ({self.us():.3f} us), started={self.started_by}, "
                f"next deadline={self._next}>")
