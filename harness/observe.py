"""Observation points of a vCPU's Unicorn: where Python code can see what the vCPU has done.

While a vCPU runs, nothing but the vCPU itself changes the machine except Python code, and Python code runs
only in the Unicorn callbacks (`hook_add` hooks of every kind, `mmio_map` accessors) and after `emu_start`
returns. Work that a native hook defers (the TLBI trap records TLBIs and DSBs in C and delivers them in a
batch, harness/trap.py) is therefore invisible to everything else as long as it is done at those points: before
each Python callback of that Unicorn runs, and when `emu_start` returns (before the scheduler looks at the
outcome, before the clock ends the slice), in the order the guest executed it. State lent to native code for
one run (the virtual clock, harness/sysregs.py) is handed over by `Observer.before`, just before `emu_start`.

`install(uc)` wraps, once per Unicorn instance, its `hook_add`, `mmio_map` and `emu_start` so that this happens
for every callback registered from then on: `Vcpu` installs it before adding any hook of its own. An installed
Unicorn with no deferred work pays one Python frame per callback (~0.1 us; the callbacks themselves cost
microseconds). `raw_hook_add(uc, ...)` registers a callback without the wrapper, for hooks that are themselves
the deferring kind (the Python TLBI trap). `SMMU_HARNESS_NATIVE=0` (harness/native) installs nothing.

Errors raised while deferred work is done inside a native callback (where Python cannot raise into Unicorn) are
kept with `fail(uc, exc)`, the emulation is stopped, and `emu_start` raises them when it returns, as the
Unicorn binding does with exceptions raised in its own hooks.
"""
from __future__ import annotations

from typing import Any, Callable

from . import native

__all__ = ["Observer", "install", "observer", "raw_hook_add", "fail"]


class Observer:
    """The deferred work of one Unicorn instance; `sync()` does it."""

    def __init__(self) -> None:
        self.work: list[Callable[[], None]] = []
        self.before: list[Callable[[], None]] = []     # run just before each emu_start
        self.error: BaseException | None = None

    def add(self, fn: Callable[[], None], first: bool = False) -> None:
        """`fn()` does deferred work (and returns at once when there is none); `first`: before the others
        (the clock a native hook advanced, harness/sysregs.py, is taken back before TLBIs are delivered)."""
        if first:
            self.work.insert(0, fn)
        else:
            self.work.append(fn)

    def sync(self) -> None:
        for fn in self.work:
            fn()


_ATTR = "harness_observer"             # where `install` keeps a Unicorn's observer (an attribute of the instance)


def observer(uc: Any) -> Observer | None:
    """The observer `install` gave `uc`, or None."""
    return getattr(uc, _ATTR, None)


def _observed(obs: Observer, cb: Callable[..., Any]) -> Callable[..., Any]:
    work = obs.work

    def observed(*args: Any) -> Any:
        if work:
            obs.sync()
        return cb(*args)

    return observed


def install(uc: Any, force: bool = False) -> Observer | None:
    """Make every later Python callback of `uc`, and the return of `emu_start`, an observation point
    (idempotent). Does nothing when the native helpers are disabled, unless `force`."""
    obs = observer(uc)
    if obs is not None:
        return obs
    if not force and not native.enabled():
        return None
    obs = Observer()
    hook_add, mmio_map, emu_start = uc.hook_add, uc.mmio_map, uc.emu_start     # the binding's, unwrapped

    def observed_hook_add(htype: int, callback: Callable, user_data: Any = None, begin: int = 1, end: int = 0,
                          aux1: int = 0, aux2: int = 0) -> int:
        return hook_add(htype, _observed(obs, callback), user_data, begin, end, aux1, aux2)

    def observed_mmio_map(address: int, size: int, read_cb: Callable | None, read_ud: Any,
                          write_cb: Callable | None, write_ud: Any) -> None:
        mmio_map(address, size, read_cb and _observed(obs, read_cb), read_ud,
                 write_cb and _observed(obs, write_cb), write_ud)

    def observed_emu_start(begin: int, until: int, timeout: int = 0, count: int = 0) -> None:
        obs.error = None
        for fn in obs.before:
            fn()
        try:
            emu_start(begin, until, timeout, count)
        finally:
            if obs.work:
                obs.sync()
        if obs.error is not None:
            err, obs.error = obs.error, None
            raise err

    uc.hook_add, uc.mmio_map, uc.emu_start = observed_hook_add, observed_mmio_map, observed_emu_start
    setattr(uc, _ATTR, obs)
    return obs


def raw_hook_add(uc: Any, *args: Any) -> int:
    """`uc.hook_add(*args)` without the observation wrapper (the binding's own method)."""
    return type(uc).hook_add(uc, *args)


def fail(uc: Any, exc: BaseException) -> None:
    """An error in deferred work done inside a native callback: stop `uc`; its `emu_start` raises `exc`."""
    obs = observer(uc)
    if obs is None:
        raise exc
    if obs.error is None:
        obs.error = exc
    uc.emu_stop()
