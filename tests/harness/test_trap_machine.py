"""harness.trap as a machine plugin (harness.machine): vCPUs of a VM as DVM participants, DSB hooks from the
VM's code ranges, undefined TLBI -> the machine's death outcome (exit status 132), FB from `vcpu.hcr_fb`."""
from __future__ import annotations

from devmodel.tlbi import decode, encoding, sys_word
from devmodel.tlbi_types import DecodeContext
from devmodel.trace import ListSink, Tracer
from harness.exits import Kind
from harness.machine import Machine
from harness.trap import TlbiTrap

import pytest
from trap_paths import trap_path  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("trap_path")   # every test on the native and the Python trap

IPA = 0x4008_0000
DSB_ISH = 0xD5033B9F
HVC0, SMC0 = 0xD4000002, 0xD4000003
PSCI_SYSTEM_OFF = 0x84000008


def _mov_x0(v):                                    # movz x0, #lo ; movk x0, #hi, lsl #16
    return [0xD2800000 | ((v & 0xFFFF) << 5), 0xF2A00000 | (((v >> 16) & 0xFFFF) << 5)]


def _code(words):
    return b"".join(w.to_bytes(4, "little") for w in words)


def _machine(words, ncpus=2, start_el=1, hcr_fb=True, events="tlbi*,dvm*"):
    sink = ListSink()
    m = Machine(tracer=Tracer(events=events, sinks=[sink]), console=lambda vm, d, s: None)
    trap = TlbiTrap(m.interconnect, m.tracer)
    m.add_plugin(trap)
    vm = m.add_vm(ncpus=ncpus, start_el=start_el, vmid=7)
    for v in vm.vcpus:
        v.hcr_fb = hcr_fb
    vm.load_code(IPA, _code(words))
    return m, trap, sink


def _off(start_el=1):
    """PSCI SYSTEM_OFF over the conduit of QEMU virt: HVC for guests started at EL1, SMC at EL2."""
    return _mov_x0(PSCI_SYSTEM_OFF) + [HVC0 if start_el == 1 else SMC0]


def test_broadcast_and_sync_between_machine_vcpus():
    m, trap, sink = _machine([sys_word(*encoding("VAE1IS"), rt=1), DSB_ISH] + _off())
    out = m.run(max_insns=10_000)
    assert out.kind is Kind.EXIT and out.exit_code == 0
    (t,) = sink.of("tlbi_trap")
    assert (t["op"], t["cpu"], t["vmid"], t["broadcast"], t["pc"]) == ("VAE1IS", 0, 7, True, IPA)
    (d,) = sink.of("dvm_tlbi")
    assert (d["src"], d["dst"]) == ("vm0.cpu0", "vm0.cpu1")
    (s,) = sink.of("dvm_sync")
    assert s["src"] == "vm0.cpu0" and s["acks"] == 1
    assert trap.cpu(1).part.received == 1


def test_fb0_keeps_a_local_tlbi_local():
    m, trap, sink = _machine([sys_word(*encoding("VMALLE1")), DSB_ISH] + _off(), hcr_fb=False)
    m.run(max_insns=10_000)
    (t,) = sink.of("tlbi_trap")
    assert t["broadcast"] is False and not sink.of("dvm_tlbi") and not sink.of("dvm_sync")


def test_el2_form_at_el1_is_an_undefined_instruction_death():
    m, trap, sink = _machine([0xD503201F, sys_word(*encoding("VMALLS12E1IS"))] + _off(), ncpus=1)
    out = m.run(max_insns=10_000)
    assert out.kind is Kind.UNDEF and out.exit_code == 132 and out.pc == IPA + 4
    (u,) = sink.of("tlbi_undef")
    assert u["el"] == 1 and "VMALLS12E1IS" in u["reason"]


def test_el2_forms_at_el2():
    words = [sys_word(*encoding(n)) for n in ("VMALLS12E1IS", "ALLE1IS", "ALLE2IS")]
    m, trap, sink = _machine(words + [sys_word(*encoding("IPAS2E1IS"), rt=0), DSB_ISH] + _off(2), start_el=2)
    out = m.run(max_insns=10_000)
    assert out.kind is Kind.EXIT
    ops = [(r["op"], r["el"], r["vmid"]) for r in sink.of("tlbi_trap")]
    assert ops == [("VMALLS12E1IS", 2, 7), ("ALLE1IS", 2, None), ("ALLE2IS", 2, None), ("IPAS2E1IS", 2, 7)]
    assert len(sink.of("dvm_sync")) == 1


def test_plugin_adopts_the_machine_interconnect_and_flushes_lazily():
    sink = ListSink()
    m = Machine(tracer=Tracer(events="dvm*", sinks=[sink]), console=lambda vm, d, s: None)
    trap = TlbiTrap()                                  # no interconnect given: the machine's is used
    m.add_plugin(trap)
    vm = m.add_vm(ncpus=2)
    assert trap.interconnect is m.interconnect and trap.tracer is m.tracer
    vm.load_code(IPA, _code([sys_word(*encoding("VAE1IS"), rt=1), DSB_ISH] + _off()))
    m.run(max_insns=10_000)
    p1 = trap.cpu(1).part
    assert p1.received == 1 and p1.dirty and p1.flushes == 0    # cpu1 never ran: flush still pending
    trap.slice_start(vm.vcpus[1])
    assert not p1.dirty and p1.flushes == 1 and vm.vcpus[1].tlb_flushes >= 1
    # host maintenance reaching the vCPU that is running right now is applied at once
    op = decode(*encoding("ALLE1IS"), None, DecodeContext(el=2))     # e.g. KVM's rollover TLBI
    trap.slice_start(vm.vcpus[1])
    m.interconnect.tlbi(op, None)
    assert p1.flushes == 2 and not p1.dirty            # running (inside its slice): flushed immediately
    trap.slice_end(vm.vcpus[1])
    m.interconnect.tlbi(op, None)
    assert p1.dirty and p1.flushes == 2
