"""devmodel/timer.py: the generic timer of one PE as pure state (Arm ARM D12 "The Generic Timer", registers
D17.10), per register; and the access/redirection rules (QEMU 7.2 target/arm/helper.c gt_*_access)."""
from __future__ import annotations

import pytest

from devmodel.timer import (CNTFRQ_HZ, CTL, CTL_ENABLE, CTL_IMASK, CTL_ISTATUS, OK, PPI, REGISTERS, TIMERS, UNDEFINED,
                            GenericTimer, cntfrq_access, counter_access, redirect, timer_access,
                            virtual_offset_applies)

MASK64 = (1 << 64) - 1
PREFIX = {"phys": "CNTP", "virt": "CNTV", "hyp": "CNTHP", "hypvirt": "CNTHV"}


def changes(t: GenericTimer) -> list:
    got = []
    t.on_output_change.append(lambda cpu, which, level: got.append((cpu, which, level)))
    return got


def test_reset_state_and_names():
    t = GenericTimer(cpu="c0")
    assert t.read("CNTFRQ", 0) == CNTFRQ_HZ == 62_500_000             # QEMU's 16 ns tick
    assert all(t.read(f"{PREFIX[w]}_{r}", 123) == 0 for w in TIMERS for r in ("CTL", "CVAL"))
    assert t.read("CNTPCT", 123) == t.read("CNTVCT", 123) == 123 and t.read("CNTVOFF", 5) == 0
    assert PPI == {"phys": 30, "virt": 27, "hyp": 26, "hypvirt": 28}
    assert len(REGISTERS) == 4 + 12 and [f.name for f in CTL.fields] == ["ENABLE", "IMASK", "ISTATUS"]
    with pytest.raises(KeyError):
        t.read("CNTX_CTL", 0)
    with pytest.raises(KeyError):
        t.write("CNTVCT", 1, 0)                                       # read-only


@pytest.mark.parametrize("which", TIMERS)
def test_cval_istatus_imask_and_output(which):
    t = GenericTimer(has_el2=True)
    p = PREFIX[which]
    t.write(f"{p}_CVAL", 1000, 0)
    assert t.read(f"{p}_CTL", 999) == 0                               # disabled: ISTATUS reads 0 (QEMU)
    t.write(f"{p}_CTL", CTL_ENABLE | CTL_ISTATUS | 0xF0, 10)          # ISTATUS read-only, upper bits ignored
    assert t.read(f"{p}_CTL", 999) == CTL_ENABLE and not t.output(which, 999)
    assert t.read(f"{p}_CTL", 1000) == CTL_ENABLE | CTL_ISTATUS and t.output(which, 1000)
    t.write(f"{p}_CTL", CTL_ENABLE | CTL_IMASK, 1000)
    assert t.read(f"{p}_CTL", 1000) == CTL_ENABLE | CTL_IMASK | CTL_ISTATUS and not t.output(which, 1000)
    t.write(f"{p}_CTL", 0, 1000)
    assert t.read(f"{p}_CTL", 5000) == 0 and not t.output(which, 5000)


def test_condition_is_an_unsigned_64_bit_compare():
    t = GenericTimer()
    t.write("CNTP_CTL", CTL_ENABLE, 0)
    t.write("CNTP_CVAL", 1 << 63, 0)                                  # far future, not "negative"
    assert not t.istatus("phys", 5) and t.next_deadline(5) == 1 << 63
    t.write("CNTP_CVAL", 0, 5)                                        # anything >= 0: met at once
    assert t.istatus("phys", 5) and t.next_deadline(5) is None


def test_tval_is_a_signed_32_bit_view_of_cval_minus_count():
    t = GenericTimer()
    t.write("CNTV_TVAL", 1000, 5000)                                  # CVAL = count + 1000
    assert t.read("CNTV_CVAL", 0) == 6000
    assert t.read("CNTV_TVAL", 5500) == 500
    assert t.read("CNTV_TVAL", 7000) == (-1000) & 0xFFFF_FFFF         # bits [63:32] read 0
    t.write("CNTV_TVAL", 0xFFFF_FFFF, 5000)                           # SignExtend(TVAL[31:0]) = -1
    assert t.read("CNTV_CVAL", 0) == 4999
    t.write("CNTV_TVAL", 0x1_0000_0010, 5000)                         # bits [63:32] of the write ignored
    assert t.read("CNTV_CVAL", 0) == 5016
    t.write("CNTV_TVAL", 0x8000_0000, 10)                             # most negative: wraps below zero
    assert t.read("CNTV_CVAL", 0) == (10 - (1 << 31)) & MASK64


def test_virtual_offset_applies_to_the_virtual_timer_and_count_only():
    t = GenericTimer(has_el2=True)
    t.write("CNTVOFF", 300, 0)
    assert t.read("CNTVCT", 1000) == 700 and t.read("CNTPCT", 1000) == 1000
    t.write("CNTV_CVAL", 800, 1000)
    t.write("CNTV_CTL", CTL_ENABLE, 1000)
    t.write("CNTHV_CVAL", 800, 1000)                                  # EL2 virtual timer: offset 0 (QEMU)
    t.write("CNTHV_CTL", CTL_ENABLE, 1000)
    assert t.read("CNTV_TVAL", 1000) == 100 and t.next_deadline(1000) == 1100
    assert t.istatus("hypvirt", 1000) and not t.istatus("virt", 1099) and t.istatus("virt", 1100)
    assert t.read("CNTVCT", 200) == (200 - 300) & MASK64               # the count wraps, mod 2^64
    no_el2 = GenericTimer(has_el2=False)
    no_el2.write("CNTVOFF", 300, 0)                                   # no EL2: CNTVOFF is 0 and fixed
    assert no_el2.read("CNTVOFF", 0) == 0 and no_el2.read("CNTVCT", 1000) == 1000


def test_next_deadline_is_the_earliest_enabled_unmet_condition():
    t = GenericTimer(has_el2=True)
    assert t.next_deadline(0) is None
    t.write("CNTP_CVAL", 5000, 0)
    t.write("CNTHP_CVAL", 3000, 0)
    t.write("CNTP_CTL", CTL_ENABLE | CTL_IMASK, 0)                    # masked: ISTATUS still changes then
    assert t.next_deadline(100) == 5000
    t.write("CNTHP_CTL", CTL_ENABLE, 100)
    assert t.next_deadline(100) == 3000 and t.next_deadline(3000) == 5000 and t.next_deadline(5000) is None


def test_output_changes_are_reported_once_each():
    t = GenericTimer(cpu="cpu0", has_el2=True)
    got = changes(t)
    t.write("CNTV_CVAL", 100, 0)
    t.write("CNTV_CTL", CTL_ENABLE, 0)
    assert got == [] and t.update(99) == []
    assert t.update(100) == [("virt", True)] and t.update(150) == []
    t.write("CNTV_CTL", CTL_ENABLE | CTL_IMASK, 150)                  # masked: the line drops
    t.write("CNTV_CTL", CTL_ENABLE, 160)                              # unmasked again: it rises
    t.write("CNTV_CVAL", 10_000, 170)                                 # condition no longer met
    t.write("CNTVOFF", 20_000, 170)                                   # count - offset wraps high: met again
    assert got == [("cpu0", "virt", True), ("cpu0", "virt", False), ("cpu0", "virt", True),
                   ("cpu0", "virt", False), ("cpu0", "virt", True)]


def test_cntfrq_is_a_plain_32_bit_register():
    t = GenericTimer()
    t.write("CNTFRQ", (7 << 32) | 24_000_000, 0)
    assert t.read("CNTFRQ", 0) == 24_000_000                          # [63:32] RES0
    t.write("CNTP_TVAL", 10, 0)
    assert t.read("CNTP_CVAL", 0) == 10                                # the count's rate is unchanged


# -- who may access what ------------------------------------------------------------------------------------------
EL0PCTEN, EL0VCTEN, EL0VTEN, EL0PTEN = 1 << 0, 1 << 1, 1 << 8, 1 << 9


@pytest.mark.parametrize("which,cntkctl,expect", [
    ("phys", 0, 1), ("virt", 0, 1), ("phys", EL0PCTEN, OK), ("virt", EL0PCTEN, 1), ("virt", EL0VCTEN, OK)])
def test_el0_counter_access_follows_cntkctl(which, cntkctl, expect):
    assert counter_access(which, 0, cntkctl, 3, False, False, False) == expect


def test_counter_access_under_el2_controls():
    # EL1 physical count with EL2 implemented: CNTHCTL_EL2.EL1PCTEN (bit 0; bit 10 when E2H=1)
    assert counter_access("phys", 1, 0, 0b10, False, False, True) == 2
    assert counter_access("phys", 1, 0, 0b01, False, False, True) == OK
    assert counter_access("phys", 1, 0, 0, False, False, False) == OK        # no EL2: nothing to trap to
    assert counter_access("virt", 1, 0, 0, False, False, True) == OK
    assert counter_access("phys", 1, 0, 1 << 10, True, False, True) == OK
    assert counter_access("phys", 1, 0, 1, True, False, True) == 2
    # EL0 in the EL2&0 regime (E2H=TGE=1): CNTHCTL_EL2.EL0{P,V}CTEN decide, traps go to EL2
    assert counter_access("virt", 0, EL0VCTEN, 0, True, True, True) == 2
    assert counter_access("virt", 0, 0, EL0VCTEN, True, True, True) == OK
    # QEMU 7.2 (and Unicorn) test CNTHCTL_EL2 bit 1 for EL0 physical reads when E2H=0
    assert counter_access("phys", 0, EL0PCTEN, 0b01, False, False, True) == 2
    assert counter_access("phys", 0, EL0PCTEN, 0b10, False, False, True) == OK


def test_timer_access_rules():
    assert timer_access("virt", 0, 0, 3, False, False, False) == 1
    assert timer_access("virt", 0, EL0VTEN, 3, False, False, False) == OK
    assert timer_access("phys", 0, EL0VTEN, 3, False, False, False) == 1
    assert timer_access("phys", 0, EL0PTEN, 3, False, False, False) == OK
    assert timer_access("phys", 1, 0, 0b01, False, False, True) == 2         # EL1PCEN (bit 1)
    assert timer_access("phys", 1, 0, 0b10, False, False, True) == OK
    assert timer_access("phys", 1, 0, 1 << 11, True, False, True) == OK       # EL1PTEN (bit 11) with E2H
    assert timer_access("phys", 0, EL0PTEN, 0b10, False, False, True) == OK   # EL0 falls through to EL1's check
    assert timer_access("phys", 0, EL0PTEN, 0, False, False, True) == 2
    assert timer_access("phys", 0, 0, EL0PTEN, True, True, True) == OK        # EL2&0: CNTHCTL_EL2.EL0PTEN
    assert timer_access("virt", 0, EL0VTEN, 0, True, True, True) == 2


def test_cntfrq_access_rules():
    assert cntfrq_access(0, False, 0, 0, False, False, 1) == 1
    assert cntfrq_access(0, False, EL0VCTEN, 0, False, False, 1) == OK
    assert cntfrq_access(0, True, 3, 0, False, False, 1) == UNDEFINED
    assert cntfrq_access(1, True, 0, 0, False, False, 1) == OK                # EL1 is the highest EL
    assert cntfrq_access(1, True, 0, 0, False, False, 2) == UNDEFINED         # not with EL2 implemented
    assert cntfrq_access(2, True, 0, 0, False, False, 2) == OK


def test_redirection_in_the_el2_and_0_regime():
    assert redirect("phys", 2, True, False) == "hyp" and redirect("virt", 2, True, False) == "hypvirt"
    assert redirect("phys", 2, False, False) == "phys" and redirect("virt", 1, True, True) == "virt"
    assert redirect("virt", 0, True, True) == "hypvirt" and redirect("virt", 0, True, False) == "virt"
    assert not virtual_offset_applies(2, True, False) and virtual_offset_applies(2, False, False)
    assert not virtual_offset_applies(0, True, True) and virtual_offset_applies(1, True, True)
