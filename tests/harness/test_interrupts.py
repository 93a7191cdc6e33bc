"""Interrupts into the vCPUs (harness/gic.py, harness/interrupts.py): the GIC of each VM at QEMU virt's addresses,
IRQs taken at the vector at a deterministic instruction boundary, WFI wake-up. The irq_* guests' output under
qemu-system-aarch64 7.2 (-M virt,gic-version=N -cpu max -semihosting) is checked through their entries in
guest_fw/tests/unittests.cfg (tests/harness/test_qemu.py); here: where and when each interrupt is taken."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from devmodel.trace import ListSink, Tracer
from guestbin import guest_elf, run_cli, under_cpu_load
from harness.elfload import load_elf
from harness.exits import EXIT_BUDGET, Kind
from harness.interrupts import isr_el1, pending, route, scan_unmask_sites, unmasked
from harness.exceptions import Vector
from harness.machine import Machine

QEMU = shutil.which("qemu-system-aarch64")


def traced(name: str, events: str = "cpu_irq_taken,vcpu_wfi,vcpu_wake", **vm_kw):
    img = load_elf(str(guest_elf(name)))
    sink = ListSink()
    out = bytearray()
    m = Machine(tracer=Tracer(events=events, sinks=[sink]), console=lambda vm, d, s: out.extend(d))
    vm = m.add_vm(**vm_kw)
    vm.load(img)
    o = m.run(timeout=60)
    return m, vm, o, sink, img, out.decode()


def irqs_taken(sink: ListSink) -> list[dict]:
    return [r.fields for r in sink.records if r.event == "cpu_irq_taken"]


def run_taking(name: str, **vm_kw):
    """Run guest `name` to a 0 exit: its VM, image and the `cpu_irq_taken` records."""
    m, vm, o, sink, img, out = traced(name, **vm_kw)
    assert o.exit_code == 0, out
    return vm, img, irqs_taken(sink)


def vbar_of(vm, el: int) -> int:
    return vm.vcpus[0].uc.cpr_read(3, 0 if el == 1 else 4, 12, 0, 0)       # VBAR_EL1 / VBAR_EL2


# -- pure routing and masking ------------------------------------------------------------------------------------
def test_routing_and_masking_as_the_arm_arm():
    HCR_IMO, HCR_FMO, HCR_TGE, HCR_E2H = 1 << 4, 1 << 3, 1 << 27, 1 << 34
    assert route(False, HCR_IMO, 1) == 1                       # no EL2 of the guest's: EL1 whatever HCR says
    assert route(False, HCR_IMO, 2) == 2 and route(False, HCR_FMO, 2) == 1 and route(True, HCR_FMO, 2) == 2
    assert route(False, HCR_TGE, 2) == 2
    assert not unmasked(False, 1, 1, 1 << 7, 0) and unmasked(False, 1, 1, 1 << 6, 0)
    assert unmasked(False, 1, 2, 1 << 7, HCR_IMO)              # to a higher EL: PSTATE.I does not mask
    assert not unmasked(False, 1, 2, 1 << 7, HCR_IMO | HCR_TGE | HCR_E2H)
    assert not unmasked(False, 2, 1, 0, 0)                     # never to a lower EL
    assert pending(True, True, 1, 0, 0, 1) == (Vector.FIQ, 1)  # FIQ first
    assert pending(True, True, 1, 1 << 6, 0, 1) == (Vector.IRQ, 1)
    assert pending(True, False, 1, 1 << 7, 0, 1) is None
    assert isr_el1(True, False, 1, 0, 1) == 0x80 and isr_el1(False, True, 1, 0, 1) == 0x40
    assert isr_el1(True, False, 1, HCR_IMO, 2) == 0 and isr_el1(False, False, 1, HCR_IMO | 1 << 7, 2) == 0x80


def test_unmask_site_scan_finds_daifclr_i_or_f_and_msr_daif():
    daifclr_i, daifclr_d, msr_daif_x3, nop = 0xD50342FF, 0xD50348FF, 0xD51B4223, 0xD503201F
    code = b"".join(w.to_bytes(4, "little") for w in (nop, daifclr_i, daifclr_d, msr_daif_x3, nop))
    assert scan_unmask_sites([(0x1000, code)]) == [0x1008, 0x1010]


# -- the board -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ncpus,want", [(1, 2), (8, 2), (9, 3)])
def test_default_gic_version_is_qemu_7_2_virt_under_tcg(ncpus, want):
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(ncpus=ncpus)
    assert vm.gic_version == want and vm.gic.model.__class__.__name__ == f"GicV{want}"


def test_gic_version_can_change_before_the_run_and_the_frames_follow():
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(ncpus=2)
    assert [r.name for r in vm.ipa.regions if r.name.startswith("gic")] == ["gicd", "gicc"]
    vm.gic_version = 3
    assert [r.name for r in vm.ipa.regions if r.name.startswith("gic")] == ["gicd", "gicr"]
    assert vm.gic.model.__class__.__name__ == "GicV3"
    vm9 = m.add_vm(ncpus=9)
    from harness.exits import HarnessInputError
    with pytest.raises(HarnessInputError, match="GICv2"):
        vm9.gic_version = 2
    assert vm9.gic_version == 3


def test_a_gicv2_model_is_built_at_its_first_use_and_answers_as_at_reset_until_then():
    """harness/gic.py: a guest that never touches its GICv2 never builds the model (hello's run); until it is
    built nothing is pending, and a frame access, by the guest or by Python on the IPA bus, an input or `model`
    builds it, once, with the state those accesses leave."""
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(ncpus=2)
    vm.load(guest_elf("hello"))
    assert m.run(timeout=60).exit_code == 0 and vm.gic._model is None
    assert (vm.gic.irq_line(0), vm.gic.fiq_line(1), vm.gic.hppi(0)) == (False, False, None)
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(ncpus=2)
    assert (vm.ipa.read(0x0800_0004, 4) >> 5) & 7 == 1 and vm.gic._model is not None    # GICD_TYPER.CPUNumber
    model = vm.gic.model
    vm.gic.set_spi(33, True)
    assert vm.gic.model is model and vm.gic._model is model
    vm2 = Machine(console=lambda vm, d, s: None).add_vm()
    vm2.gic.line(33)(1)                                 # the PL011's line
    assert vm2.gic._model is not None and vm2.gic.model.__class__.__name__ == "GicV2"


# -- delivery ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gic", [2, 3])
def test_timer_ppi_is_taken_right_after_the_unmask(gic):
    m, vm, o, sink, img, out = traced("irq_timer", gic_version=gic)
    assert o.exit_code == 0, out
    taken = irqs_taken(sink)
    vbar = vbar_of(vm, 1)
    assert taken == [{"cpu": 0, "kind": "IRQ", "intid": 27, "pc": img.symbol("after_unmask"), "el": 1,
                      "vector": vbar + 0x280}]                      # current EL with SPx: + 0x200 + 0x80
    wfi = [r.event for r in sink.records if r.event.startswith("vcpu_")]
    assert wfi[:2] == ["vcpu_wfi", "vcpu_wake"]
    assert [r.fields["why"] for r in sink.records if r.event == "vcpu_wake"][0] == "interrupt"


def test_timer_ppi_taken_at_el2_with_hcr_imo():
    vm, img, taken = run_taking("irq_timer", start_el=2, gic_version=3)
    vbar = vbar_of(vm, 2)
    assert [(t["el"], t["intid"], t["pc"], t["vector"]) for t in taken] == [
        (2, 27, img.symbol("after_unmask"), vbar + 0x280)]


@pytest.mark.parametrize("gic", [2, 3])
def test_irq_from_masked_el1_is_taken_to_el2_with_imo(gic):
    m, vm, o, sink, img, out = traced("irq_el2", start_el=2, gic_version=gic)
    assert o.exit_code == 0 and "FAIL" not in out, out
    taken = irqs_taken(sink)
    vbar = vbar_of(vm, 2)
    assert [(t["el"], t["intid"], t["vector"]) for t in taken] == [(2, 27, vbar + 0x480)]   # from a lower EL
    assert img.symbol("el1_spin") <= taken[0]["pc"] <= img.symbol("el1_spin") + 4


@pytest.mark.parametrize("gic", [2, 3])
def test_preemption_nesting_and_the_eret_that_unmasks(gic):
    """The higher priority B is taken inside A's handler right after its unmask (nested, current EL SPx); C, of
    A's priority, at the ERET out of A's handler: ELR = that ERET's target, the instruction A interrupted."""
    vm, img, taken = run_taking("irq_prio", gic_version=gic)
    assert [t["intid"] for t in taken] == [40, 41, 42, 43]
    a, b, c, _ = taken
    assert c["pc"] == a["pc"] and b["pc"] != a["pc"]
    vbar = vbar_of(vm, 1)
    assert {t["vector"] for t in taken} == {vbar + 0x280}


@pytest.mark.parametrize("gic", [2, 3])
def test_group_0_is_taken_at_the_fiq_vector(gic):
    vm, img, taken = run_taking("irq_fiq", gic_version=gic)
    vbar = vbar_of(vm, 1)
    sgis = [("FIQ", 2, vbar + 0x300), ("FIQ", 3, vbar + 0x300)] if gic == 3 else []   # ICC_SGI0R/ASGI1R_EL1
    want = [("FIQ", 44, vbar + 0x300)] + sgis
    assert [(t["kind"], t["intid"], t["vector"]) for t in taken] == want


@pytest.mark.parametrize("gic", [2, 3])
def test_pl011_tx_interrupt_is_spi_1(gic):
    m, vm, o, sink, img, out = traced("irq_uart", events="cpu_irq_taken,pl011_irq_state", gic_version=gic)
    assert o.exit_code == 0, out
    taken = irqs_taken(sink)
    assert [t["intid"] for t in taken] == [33]
    levels = [r.fields["level"] for r in sink.records if r.event == "pl011_irq_state"]
    assert levels[:2] == [1, 0]                                   # unmasked in UARTIMSC, cleared by UARTICR
    insn = vm.ipa.read32(taken[0]["pc"] - 4)
    assert insn & 0xFFFFF0FF == 0xD50340FF                        # right after the msr daifclr


@pytest.mark.parametrize("gic", [2, 3])
def test_sgis_between_vcpus(gic):
    m, vm, o, sink, img, out = traced("irq_sgi", ncpus=2, gic_version=gic)
    assert o.exit_code == 0, out
    taken = [(r.fields["cpu"], r.fields["intid"]) for r in sink.records if r.event == "cpu_irq_taken"]
    assert sorted(taken) == [(0, 3), (0, 6), (1, 5), (1, 7)]


def test_wfi_with_nothing_that_can_wake_ends_124():
    """The GIC is in use (armed) and nothing is pending or will be: the timer no longer wakes WFI by itself."""
    m, vm, o, sink, img, out = traced("irq_idle")
    assert o.kind is Kind.IDLE and o.exit_code == EXIT_BUDGET == 124
    assert "nothing can wake" in o.message


def test_delivery_is_deterministic_under_load():
    def records():
        m, vm, o, sink, img, out = traced("irq_sgi", events="cpu_irq_taken,vcpu_*,gic_*,psci_call", ncpus=2)
        assert o.exit_code == 0
        return [(r.event, r.ts, r.fields) for r in sink.records]
    quiet = records()
    loaded = under_cpu_load(records)
    assert quiet == loaded and sum(e == "cpu_irq_taken" for e, _, _ in quiet) == 4


# -- the Unicorn facts Vcpu.stop_after_access builds on ----------------------------------------------------------
def test_unicorn_stop_in_an_mmio_callback_leaves_the_pc_on_the_instruction():
    """Unicorn 2.1.4: emu_stop from an MMIO read callback ends emu_start with the PC still on the load, so the
    next emu_start executes it - and the access - again."""
    from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, Uc
    from unicorn.arm64_const import UC_ARM64_REG_PC, UC_ARM64_REG_X0
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.mem_map(0x1000, 0x1000)
    ldr, nop = 0xB9400001, 0xD503201F                                   # ldr w1, [x0]; nop
    uc.mem_write(0x1000, b"".join(w.to_bytes(4, "little") for w in (ldr, nop, nop)))
    reads = []

    def read(uc_, off, size, ud):
        reads.append(off)
        uc_.emu_stop()
        return 0x1234
    uc.mmio_map(0x8000000, 0x1000, read, None, lambda *a: None, None)
    uc.reg_write(UC_ARM64_REG_X0, 0x8000000)
    uc.emu_start(0x1000, 0x100C, 0, 10)
    assert uc.reg_read(UC_ARM64_REG_PC) == 0x1000 and reads == [0]
    uc.emu_start(0x1000, 0x100C, 0, 10)
    assert uc.reg_read(UC_ARM64_REG_PC) == 0x1000 and reads == [0, 0]


def test_a_self_ipi_by_mmio_is_taken_after_its_store_once():
    """GICv2 GICD_SGIR store to itself: the slice ends after the store (completed once, not re-executed) and the
    IRQ is taken with ELR = the next instruction."""
    from capstone import CS_ARCH_ARM64, CS_MODE_ARM, Cs
    m, vm, o, sink, img, out = traced("irq_sgi", ncpus=2, gic_version=2,
                                      events="cpu_irq_taken,gic_sgi")
    assert o.exit_code == 0, out
    sgis = [r.fields for r in sink.records if r.event == "gic_sgi"]
    assert len(sgis) == 4                                   # self, 0->1, 1->0, broadcast: none repeated
    first = next(r.fields for r in sink.records if r.event == "cpu_irq_taken")
    assert (first["cpu"], first["intid"]) == (0, 3)
    insn = next(Cs(CS_ARCH_ARM64, CS_MODE_ARM).disasm(vm.ipa.read_bytes(first["pc"] - 4, 4), first["pc"] - 4))
    assert insn.mnemonic == "str"


@pytest.mark.parametrize("gic", [2, 3])
def test_an_smmu_in_the_vm_signals_its_wired_lines_as_spis_74_to_77(gic):
    """QEMU virt: the SMMUv3's event queue, PRI queue, CMD_SYNC and GERROR lines on SPIs 74..77 (hw/arm/virt.c
    create_smmu, the SMMUIrq order of hw/arm/smmuv3-internal.h); the tree marks them edge-rising."""
    from devmodel.smmuv3.device import SMMUv3
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(gic_version=gic)
    seen = []
    smmu = SMMUv3(vm.ipa, irq=seen.append)
    vm.add_device(0x0905_0000, 0x2_0000, smmu, "smmu")
    dist = vm.gic.model.distributor
    for intid in range(106, 110):                                # SPIs 74..77: edge (GICD_ICFGR), enabled
        reg = 0xC00 + intid // 16 * 4
        dist.write(reg, dist.read(reg, 4) | 2 << (intid % 16 * 2), 4)
    smmu.write(0x50, 1, 4)                                       # IRQ_CTRL.GERROR_IRQEN
    smmu.raise_gerror("CMDQ_ERR")
    assert seen == ["gerror"]                                    # the SMMU's own callback still runs
    pend = dist.read(0x200 + 109 // 32 * 4, 4)
    assert pend >> (109 % 32) & 1 and not pend >> (106 % 32) & 1


# -- bad guests and bad options ------------------------------------------------------------------------------------
def test_an_irq_with_no_vector_table_ends_the_run_with_a_death_line():
    p = run_cli("run", guest_elf("irq_novec"))
    assert p.returncode == 139, p.stderr
    assert "IRQ (INTID 27) taken with no vector table" in p.stderr and "VBAR_EL1 0x0" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("args,message", [
    (["-machine", "gic-version=4"], "GICv4 is not modelled"),
    (["-machine", "gic-version=host"], "gic-version=host requires KVM"),
    (["-machine", "virt,its=off"], "not modelled"),
    (["-machine", "gic-version=3", "--gic", "2"], "--gic 2 contradicts -machine gic-version"),
    (["--gic", "2", "--cpus", "9"], "exceed the 8 CPU interfaces of a GICv2"),
])
def test_bad_board_options_exit_125_with_one_line(args, message):
    p = run_cli("run", guest_elf("hello"), *args)
    assert p.returncode == 125 and message in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert "Traceback" not in p.stderr


def test_machine_option_reaches_the_tree_and_the_board():
    p = run_cli("run", guest_elf("irq_timer"), "-M", "virt,gic-version=max,virtualization=on")
    assert p.returncode == 0 and "FAIL" not in p.stdout, p.stdout + p.stderr


def test_pl011_rx_interrupt_from_console_input():
    from harness.semihost import ConsoleInput
    img = load_elf(str(guest_elf("irq_uart_rx")))
    out = bytearray()
    sink = ListSink()
    m = Machine(tracer=Tracer(events="cpu_irq_taken,pl011_irq_state", sinks=[sink]),
                console=lambda vm, d, s: out.extend(d), console_input=ConsoleInput.from_bytes(b"hello\n"))
    vm = m.add_vm()
    vm.load(img)
    assert m.run(timeout=60).exit_code == 0, out
    assert "received 'hello'" in out.decode()
    assert {r.fields["intid"] for r in sink.records if r.event == "cpu_irq_taken"} == {33}


@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed (Debian: apt-get install qemu-system-arm)")
def test_pl011_rx_same_as_qemu():
    """Console input on the run's stdin, as QEMU's -serial stdio."""
    elf = guest_elf("irq_uart_rx")
    cmd = [QEMU, "-M", "virt", "-cpu", "max", "-m", "128M", "-semihosting", "-nographic", "-no-reboot", "-monitor",
           "none", "-serial", "stdio", "-kernel", str(elf)]
    q = subprocess.run(cmd, capture_output=True, text=True, timeout=60, input="hello\n")
    h = subprocess.run([sys.executable, "-m", "harness", "run", str(elf)], capture_output=True, text=True,
                       timeout=60, input="hello\n")
    assert q.returncode == h.returncode == 0, (q.stdout, h.stdout, h.stderr)
    assert q.stdout.replace("\r\n", "\n") == h.stdout


@pytest.mark.parametrize("gic", [2, 3])
def test_virtio_mmio_transport_lines_are_spis_16_up(gic):
    """Transport i's interrupt is SPI 16 + i (hw/arm/virt.c VIRT_MMIO in a15irqmap), a level: pending while high."""
    from harness.virtio import transport_spi
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(gic_version=gic)
    dist = vm.gic.model.distributor

    def pending(intid):
        return dist.read(0x200 + intid // 32 * 4, 4) >> (intid % 32) & 1
    spi = transport_spi(31)
    assert spi == 47
    vm.virtio.irq_handler(spi, 1)
    assert pending(32 + spi) and not pending(32 + spi - 1)
    vm.virtio.irq_handler(spi, 0)
    assert not pending(32 + spi)
