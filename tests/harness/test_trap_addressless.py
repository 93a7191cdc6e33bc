"""Untraced native delivery to receivers that read only VMID and regime (`VcpuParticipant.addressless`,
harness/trap.py `_deliver`): one op per (encoding, EL, VMID) gives the pure-Python trap's DVM counts, receiver
state and flushes; a receiver that is not addressless still gets every TLBI's own address. And the DSB sites
of counted vCPUs behind one range hook (native/tlbi_trap.c `tt_ranged`) record what one hook per site does."""
from __future__ import annotations

import pytest

from devmodel.tlbi import encoding, sys_word
from harness.machine import Machine
from harness.trap import TlbiTrap, VcpuParticipant
from trap_paths import PATHS, use_path

IPA = 0x4008_0000
DSB_ISH = 0xD5033B9F
HVC0, PSCI_SYSTEM_OFF = 0xD4000002, 0x84000008


def _mov(rd: int, v: int) -> list[int]:          # movz xd, #lo ; movk xd, #hi, lsl #16
    return [0xD2800000 | ((v & 0xFFFF) << 5) | rd, 0xF2A00000 | (((v >> 16) & 0xFFFF) << 5) | rd]


def _guest(n: int) -> bytes:
    """n pages: TLBI VAAE1IS / VAE1IS / VAE1 (FB: broadcast) by page, DSB ISH after each; ASIDE1IS, VMALLE1IS."""
    words = []
    for i in range(n):
        op = ("VAAE1IS", "VAE1IS", "VAE1")[i % 3]
        words += _mov(1, 0x40000 + i) + [sys_word(*encoding(op), rt=1), DSB_ISH]
    words += [sys_word(*encoding("ASIDE1IS"), rt=1), sys_word(*encoding("VMALLE1IS"), rt=31), DSB_ISH]
    return b"".join(w.to_bytes(4, "little") for w in words + _mov(0, PSCI_SYSTEM_OFF) + [HVC0])


class Recorder:
    """A receiver that looks at addresses (not addressless)."""
    dvm_name = "recorder"

    def __init__(self):
        self.addrs: list = []

    def dvm_tlbi(self, op, msg):
        self.addrs.append((op.name, op.addr, op.asid, msg))

    def dvm_sync(self, sync):
        self.addrs.append(("sync", sync.msg))


def _run(path: str, monkeypatch, recorder: bool):
    use_path(monkeypatch, path)
    m = Machine(console=lambda vm, d, s: None)
    trap = TlbiTrap(m.interconnect, m.tracer)
    m.add_plugin(trap)
    rec = Recorder() if recorder else None
    if rec is not None:
        m.interconnect.attach(rec)
    vm = m.add_vm(ncpus=2, vmid=5)
    vm.load_code(IPA, _guest(600))
    out = m.run(max_insns=100_000)
    assert out.exit_code == 0, out.message
    ic = m.interconnect
    parts = [trap.cpu(i).part for i in range(2)]
    state = ((ic.tlbis, ic.msgs, ic.syncs), [(p.received, p.flushes, p.dirty) for p in parts],
             [trap.cpu(i).traps for i in range(2)], [v.tlb_flushes for v in vm.vcpus])
    return trap, state, rec


@pytest.mark.parametrize("recorder", [False, True])
def test_untraced_delivery_same_counts_on_both_paths(monkeypatch, recorder):
    got = {}
    for path in PATHS:
        trap, state, rec = _run(path, monkeypatch, recorder)
        assert trap.native_hook is (path == "native")
        if path == "native":                    # counted (two vCPUs): the DSB sites share one hook
            assert trap.cpu(0).tc.ranged == 1 and trap.cpu(1).tc.ranged == 0      # cpu1 never ran
        got[path] = (state, rec.addrs if rec else None)
    assert got["native"] == got["python"]
    state, addrs = got["native"]
    assert state[0][0] == 602 and state[1][1][0] == 602           # every TLBI reached the other vCPU
    if recorder:                                                    # each with its own page
        assert [a[1] for a in addrs if a[0] == "VAAE1IS"][:3] == [0x4000_0000, 0x4000_3000, 0x4000_6000]


def test_only_vcpus_are_addressless():
    assert VcpuParticipant.addressless is True and not getattr(Recorder(), "addressless", False)


@pytest.mark.parametrize("ranged", [0, 1])
def test_range_hook_and_site_hooks_record_the_same(monkeypatch, ranged):
    """One vCPU, counted by an instruction budget: the DSB sites per address or behind the range hook (forced
    here by the plugin's counted_mode), the same DVM counts as the Python trap."""
    got = {}
    for path in PATHS:
        use_path(monkeypatch, path)
        m = Machine(console=lambda vm, d, s: None)
        trap = TlbiTrap(m.interconnect, m.tracer)
        m.add_plugin(trap)
        if path == "native":
            monkeypatch.setattr(trap, "counted_mode", lambda v, counted, f=trap.counted_mode: f(v, bool(ranged)))
        rec = Recorder()
        m.interconnect.attach(rec)
        vm = m.add_vm(ncpus=1, vmid=5)
        vm.load_code(IPA, _guest(300))
        out = m.run(max_insns=100_000)
        assert out.exit_code == 0, out.message
        if path == "native":
            assert trap.cpu(0).tc.ranged == ranged
        got[path] = (m.interconnect.tlbis, m.interconnect.syncs, rec.addrs)
    assert got["native"] == got["python"] and got["native"][1] == 301


class CountedAddressless(Recorder):
    """An addressless receiver that counts how often it is asked whether it is."""
    dvm_name = "counted"
    asked = 0

    @property
    def addressless(self):
        CountedAddressless.asked += 1
        return True


def test_addressless_asked_once_per_participant_set(monkeypatch):
    """Whether every receiver is addressless is a property of the participant set (`Interconnect.receivers_say`,
    kept until `generation` changes), not recomputed on each native batch; attaching a receiver that reads
    addresses is seen at once."""
    use_path(monkeypatch, "native")
    m = Machine(console=lambda vm, d, s: None, quantum=64)     # many slices: many native batches
    trap = TlbiTrap(m.interconnect, m.tracer)
    m.add_plugin(trap)
    rec = CountedAddressless()
    m.interconnect.attach(rec)
    CountedAddressless.asked = 0
    vm = m.add_vm(ncpus=2, vmid=5)
    vm.load_code(IPA, _guest(600))
    assert m.run(max_insns=100_000).exit_code == 0
    if not trap.native_hook:
        pytest.skip("native TLBI hook not available")
    assert len(rec.addrs) > 600 and CountedAddressless.asked <= 2     # once per source vCPU
    ic = m.interconnect
    assert ic.receivers_say(trap.cpu(0).part, "addressless")
    ic.attach(Recorder())
    assert not ic.receivers_say(trap.cpu(0).part, "addressless")
    ic.detach(ic.participants[-1])
    assert ic.receivers_say(trap.cpu(0).part, "addressless")
