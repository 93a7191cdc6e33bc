"""Priority arithmetic shared by the GICv2 and GICv3 CPU interfaces (pure functions, no state).

Terms follow the specs: a priority is 8 bits, lower is higher priority; the *group priority* is the part of
it above the binary point (IHI 0048B 3.3 "Interrupt prioritization", IHI 0069 4.8 "Preemption"); the *running
priority* is the group priority of the highest-priority active interrupt, recorded as one bit per preemption
level in the active priorities registers (GICC_APRn/NSAPRn, ICC_AP0Rn/AP1Rn).
"""
from __future__ import annotations

__all__ = ["IDLE_PRIORITY", "prio_mask", "group_prio_mask", "apr_bit", "apr_priority", "lowest_bit"]

#: running priority when nothing is active (GICC_RPR / ICC_RPR_EL1 read 0xFF)
IDLE_PRIORITY = 0xFF


def prio_mask(bits: int) -> int:
    """The implemented bits of an 8-bit priority field when `bits` bits are implemented (5 -> 0xF8)."""
    return (0xFF << (8 - bits)) & 0xFF


def group_prio_mask(bpr: int, alias: bool = False) -> int:
    """Mask of the group-priority bits for binary point `bpr`.

    BPR=0 means group priority [7:1] ... BPR=7 means no group priority bits (IHI 0048B 3.3.3 "Priority
    grouping", IHI 0069 4.8 "Preemption"). `alias` is the Group 1 binary point of GICC_ABPR / ICC_BPR1_EL1
    when CBPR=0, whose value is one more than the equivalent Group 0 binary point (ABPR=1 is group priority
    [7:1]).
    """
    if alias:
        bpr = max(bpr - 1, 0)
    return (0xFF << ((bpr & 7) + 1)) & 0xFF


def apr_bit(group_prio: int, prebits: int) -> int:
    """Active-priority bit number for a group priority with `prebits` preemption bits (IHI 0069 12.2.1:
    ICC_AP1R0_EL1 bit n stands for group priority n << (8 - prebits))."""
    return group_prio >> (8 - prebits)


def apr_priority(bit: int, prebits: int) -> int:
    """The group priority an active-priority bit stands for (inverse of `apr_bit`)."""
    return bit << (8 - prebits)


def lowest_bit(value: int) -> int:
    """Index of the least significant set bit of a non-zero int."""
    return (value & -value).bit_length() - 1
