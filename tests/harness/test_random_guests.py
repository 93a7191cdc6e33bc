"""Robustness: whatever a guest executes, the harness ends with one of its documented statuses and a one-line
message, never a Python exception. Random instruction words are biased towards the interesting classes
(system instructions incl. TLBI/DC/AT/MSR, exception generation, barriers, loads/stores to random addresses)."""
from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.machine import Machine
from harness.trap import TlbiTrap

BASE = 0x4008_0000
STATUSES = {0, 1, 124, 132, 134, 139} | set(range(0, 124))   # 134: unsupported semihosting op

_sys = st.builds(lambda l, op1, crn, crm, op2, rt: 0xD5000000 | l << 21 | 1 << 19 | op1 << 16 | crn << 12
                 | crm << 8 | op2 << 5 | rt,
                 st.integers(0, 1), st.integers(0, 7), st.sampled_from([7, 8, 9, 0, 1, 2, 12]), st.integers(0, 15),
                 st.integers(0, 7), st.integers(0, 31))
_exc = st.sampled_from([0xD4000001, 0xD4000002, 0xD4000003, 0xD45E0000, 0xD4200000, 0xD503201F,
                        0xD5033F9F, 0xD5033B9F, 0xD69F03E0])          # SVC HVC SMC HLT#0xf000 BRK NOP DSB DSB ERET
_mov = st.builds(lambda hw, imm, rd: 0xD2800000 | hw << 21 | imm << 5 | rd,
                 st.integers(0, 3), st.integers(0, 0xFFFF), st.integers(0, 30))     # MOVZ Xd, #imm, LSL #16*hw
_ldst = st.builds(lambda opc, rn, rt: (0xF9400000 if opc else 0xF9000000) | rn << 5 | rt,
                  st.booleans(), st.integers(0, 30), st.integers(0, 30))            # LDR/STR Xt, [Xn]
_word = st.one_of(_sys, _exc, _mov, _ldst, st.integers(0, 0xFFFF_FFFF))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(words=st.lists(_word, min_size=1, max_size=24), cpus=st.integers(1, 2))
def test_random_guest_code_never_raises(words, cpus):
    m = Machine(console=lambda vm, data, stream: None)
    vm = m.add_vm("vm0", ncpus=cpus, ram_size=16 << 20)
    vm.load_code(BASE, struct.pack(f"<{len(words)}I", *words) + struct.pack("<I", 0x14000000))   # B .
    m.add_plugin(TlbiTrap(m.interconnect, m.tracer))
    outcome = m.run(max_insns=20_000, timeout=10)
    assert outcome.exit_code in STATUSES
    assert outcome.message and "\n" not in outcome.message and "Traceback" not in outcome.message
