"""Helpers for the GIC model tests: MMIO shorthands and an independent consistency check of the engine."""
from __future__ import annotations

from devmodel.gic.state import IrqEngine


def check_consistent(gic: IrqEngine) -> None:
    """Recompute, from the interrupts' own state, what the engine caches: candidate sets, highest-priority
    candidate and outputs. Fails if the incremental bookkeeping drifted."""
    irqs = list(all_irqs(gic))
    for cpu in range(gic.ncpus):
        want = {i for i in irqs if cpu in i.targets and i.enabled and i.pending and not i.active
                and gic.group_enabled(cpu, i.group)}
        assert gic.cands[cpu] == want, (cpu, gic.cands[cpu] ^ want)
        best = min(want, key=lambda i: (i.prio, i.intid)) if want else None
        assert gic.hppi(cpu) is best
        irq, fiq = gic.signal(cpu, best)
        assert (gic.irq_pending(cpu), gic.fiq_pending(cpu)) == (irq, fiq), cpu
    for i in irqs:
        assert i.cands == frozenset(c for c in range(gic.ncpus) if i in gic.cands[c])


def all_irqs(gic):
    if hasattr(gic, "private"):                          # GICv2
        for bank in gic.private:
            yield from bank
    else:
        for rd in gic.redists:
            yield from rd.private
            yield from rd.lpis.values()
    yield from gic.spis


class Changes:
    """on_change recorder."""

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, cpu: int) -> None:
        self.calls.append(cpu)

    def take(self) -> list[int]:
        out, self.calls = self.calls, []
        return out
