"""The --max-insns budget (harness/scheduler.py `retired`): what an early-ended slice costs it."""
from __future__ import annotations

import pytest
from unicorn.arm64_const import UC_ARM64_REG_PC, UC_ARM64_REG_X0

from harness.exits import Kind
from harness.machine import Machine

CODE = 0x4008_0000
# mov x0, #0; 1: mrs x1, cntvct_el0; add x0, x0, #1; b 1b   (a guest polling the counter, as mdelay does)
POLL = (0xD2800000, 0xD53BE041, 0x91000400, 0x17FFFFFE)


def _poll(budget: int) -> tuple[Kind, int, int, int]:
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(ram_size=16 << 20)
    vm.load_code(CODE, b"".join(w.to_bytes(4, "little") for w in POLL), entry=CODE)
    out = m.run(max_insns=budget)
    uc = vm.vcpus[0].uc
    return out.kind, m.retired, uc.reg_read(UC_ARM64_REG_X0), uc.reg_read(UC_ARM64_REG_PC)


def test_budget_exit_is_deterministic():
    """Slices end where the guest's counter reads reach the clock's cap: the same instruction every run."""
    first = _poll(100_000)
    assert first[0] is Kind.BUDGET and first[1] == 100_000
    assert _poll(100_000) == first


@pytest.mark.xfail(strict=True, reason="a slice ended early is charged in full against --max-insns: Unicorn "
                   "2.1.4 does not say how many instructions a stopped emu_start(count=) ran (docs/DESIGN.md "
                   "'Instruction budget')")
def test_budget_counts_the_instructions_the_guest_ran():
    """Architecturally 100,000 instructions are ~33,333 loop iterations; today the run stops after ~100."""
    _kind, _retired, iterations, _pc = _poll(100_000)
    assert abs(1 + 3 * iterations - 100_000) <= 3
