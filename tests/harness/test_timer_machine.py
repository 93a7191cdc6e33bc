"""The generic timer on machine vCPUs (harness/timer.py over devmodel/timer.py) and the clock and WFI behaviour of
the scheduler (harness/scheduler.py, harness/clock.py): exact deadlines, sleeping in WFI, the uncounted fast
path, access control, EL2/VHE, determinism, and the same verdicts as qemu-system-aarch64 7.2."""
from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess

import pytest
from unicorn.arm64_const import UC_ARM64_REG_X0, UC_ARM64_REG_X19, UC_ARM64_REG_X20, UC_ARM64_REG_X21, \
    UC_ARM64_REG_X22

from devmodel.timer import CTL_ENABLE, CTL_ISTATUS
from devmodel.trace import ListSink, Tracer
from guestbin import guest_elf, run_cli, under_cpu_load
from harness.elfload import load_elf
from harness.exits import EXIT_BUDGET, EXIT_UNDEF, Kind
from harness.log import Log
from harness.machine import DEFAULT_RAM_IPA, Machine
from harness.sysregs import mrs_word, msr_word

BASE = DEFAULT_RAM_IPA + 0x80000
QEMU = shutil.which("qemu-system-aarch64")
CNTKCTL_EL1, CNTVCT_EL0, CNTFRQ_EL0 = (3, 0, 14, 1, 0), (3, 3, 14, 0, 2), (3, 3, 14, 0, 0)
ELR_EL1, SPSR_EL1, HCR_EL2, SCTLR_EL1 = (3, 0, 4, 0, 1), (3, 0, 4, 0, 0), (3, 4, 1, 1, 0), (3, 0, 1, 0, 0)
CNTP_CVAL_EL0, CNTHP_CVAL_EL2, CNTP_CVAL_EL02 = (3, 3, 14, 2, 2), (3, 4, 14, 2, 2), (3, 5, 14, 2, 2)
CNTVOFF_EL2, CNTPCT_EL0 = (3, 4, 14, 0, 3), (3, 3, 14, 0, 1)
ERET, UDF, ISB = 0xD69F03E0, 0x00000000, 0xD5033FDF
PSCI_OFF_SMC = (0xD2800100, 0xF2B08000, 0xD4000003)             # movz x0, #8; movk x0, #0x8400, lsl 16; smc #0


def words(*ws: int) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in ws)


def mov(rd: int, value: int) -> list[int]:
    """movz/movk sequence putting a 64-bit constant in x<rd>."""
    out = [0xD2800000 | (value & 0xFFFF) << 5 | rd]
    for hw in (1, 2, 3):
        part = (value >> (16 * hw)) & 0xFFFF
        if part:
            out.append(0xF2800000 | hw << 21 | part << 5 | rd)
    return out


def traced_run(name: str, patch: dict[str, int] | None = None, *, events: str = "timer_output,vcpu_*,clock_warp",
               **vm_kw):
    img = load_elf(str(guest_elf(name)))
    sink = ListSink()
    m = Machine(tracer=Tracer(events=events, sinks=[sink]), console=lambda vm, d, s: None)
    vm = m.add_vm(**vm_kw)
    vm.load(img)
    for sym, value in (patch or {}).items():
        vm.ipa.write64(img.symbol(sym), value)
    outcome = m.run(timeout=60)
    return m, vm.vcpus[0], outcome, sink, img


def regs(v, *ids):
    return [v.uc.reg_read(i) for i in ids]


# -- the clock seen through the timer ---------------------------------------------------------------------------
@pytest.mark.parametrize("delta", [5000, 50_000, 123_457])
def test_a_polled_timer_fires_at_its_exact_deadline(delta):
    m, v, o, sink, _ = traced_run("timer_poll", {"delta": delta})
    t0, cval, after, ctl = regs(v, UC_ARM64_REG_X19, UC_ARM64_REG_X21, UC_ARM64_REG_X20, UC_ARM64_REG_X22)
    assert o.exit_code == 0 and cval == t0 + delta and ctl == CTL_ENABLE | CTL_ISTATUS
    assert after == cval + 16                       # ISTATUS seen at the deadline, then one more sample
    assert [(r.event, r["timer"], r["level"], r["ppi"], r["count"]) for r in sink.records] == \
        [("timer_output", "virt", True, 27, cval)]
    assert m.clock.started_by == "generic timer" and m.clock.next_deadline() is None


def test_counter_reads_are_deterministic_and_double_within_a_slice():
    reads = []
    for _ in range(2):
        m, v, o, _, img = traced_run("timer_counts", {"n": 40, "gap": 3})
        off = img.symbol("counts") - DEFAULT_RAM_IPA
        reads.append(struct.unpack("<40Q", bytes(m.vms[0].ram.buf[off:off + 320])))
        assert o.exit_code == 0
    a = reads[0]
    assert reads[0] == reads[1]
    assert a[0] == 16 and all(x < y for x, y in zip(a, a[1:]))
    assert [y - x for x, y in zip(a[:6], a[1:7])] == [16, 32, 64, 128, 256, 512]
    assert a[10] == 10_016 + 0 and a[11] == 10_032             # the 10th read hit the slice's end (quantum)


def test_an_untimed_guest_keeps_the_uncounted_fast_path():
    m, v, o, _, _ = traced_run("hello")
    assert o.exit_code == 0 and not m.clock.started and m.clock.now() == 0 and v.slices == 1
    m, v, o, _, _ = traced_run("timer_poll")
    assert m.clock.started and v.slices > 1                     # the first counter read switched to slices


# -- WFI ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suspend", [0, 1])
def test_wfi_and_cpu_suspend_sleep_until_the_timer_deadline(suspend):
    m, v, o, sink, _ = traced_run("timer_wfi", {"delta": 100_000, "suspend": suspend})
    cval = m.timers.model(v).read("CNTV_CVAL", 0)
    assert o.exit_code == 0 and regs(v, UC_ARM64_REG_X20) == [cval + 16]
    ev = [(r.event, r.fields) for r in sink.records]
    assert [e for e, _ in ev] == ["vcpu_wfi", "clock_warp", "timer_output", "vcpu_wake"]
    assert ev[0][1]["deadline"] == cval and ev[1][1]["to"] == cval
    assert ev[3][1] == {"cpu": 0, "why": "generic timer", "count": cval}


def test_a_masked_timer_cannot_wake_wfi_and_the_run_ends_idle():
    m, v, o, sink, _ = traced_run("timer_wfi", {"ctl": CTL_ENABLE | 2})       # ENABLE | IMASK
    assert o.kind is Kind.IDLE and o.exit_code == EXIT_BUDGET == 124
    assert "waits in WFI" in o.message and "<_start+" in o.message and "nothing can wake" in o.message
    assert [r.event for r in sink.records] == ["vcpu_wfi", "clock_warp"]     # ISTATUS rose, the line did not


def test_a_host_kick_wakes_wfi_without_a_timer():
    img = load_elf(str(guest_elf("timer_wfi")))
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm()
    vm.load(img)
    vm.ipa.write64(img.symbol("ctl"), 0)                           # timer disabled: nothing else can wake it
    m.scheduler.kick(vm.vcpus[0])
    assert m.run(timeout=30).exit_code == 0


def test_a_vcpu_in_wfi_does_not_stop_time_for_the_others():
    o, out = run_out("timer_wfi_smp", ncpus=2)
    assert o.exit_code == 0, out
    assert out.count("PASS") == 4


def test_the_guests_own_wfi_trap_is_delivered_not_slept():
    """WFI at EL0 with SCTLR_EL1.nTWI=0 traps to EL1 (EC 0x01) under the guest's own controls."""
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm()
    el0 = BASE + 0x100
    code = [mrs_word(SCTLR_EL1, 4), *mov(5, 1 << 16), 0x8A250084, msr_word(SCTLR_EL1, 4),   # bic x4, x4, x5
            *mov(2, el0), msr_word(ELR_EL1, 2), *mov(3, 0), msr_word(SPSR_EL1, 3), ERET]
    vm.load_code(BASE, words(*code))
    vm.load_code(el0, words(0xD503207F), entry=BASE)               # wfi
    o = m.run(timeout=30)
    assert o.kind is Kind.UNDEF and o.exit_code == EXIT_UNDEF and o.pc == el0 and o.esr >> 26 == 0x01
    assert "WFI trapped by the guest's controls (SCTLR_EL1.nTWI=0)" in o.message


# -- access control and EL2 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("cntkctl,dies_at", [(0, 0x100), (0b10, 0x104)])       # EL0VCTEN
def test_el0_counter_reads_follow_cntkctl(cntkctl, dies_at):
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm()
    el0 = BASE + 0x100
    code = [*mov(1, cntkctl), msr_word(CNTKCTL_EL1, 1), *mov(2, el0), msr_word(ELR_EL1, 2), *mov(3, 0),
            msr_word(SPSR_EL1, 3), ERET]
    vm.load_code(BASE, words(*code))
    vm.load_code(el0, words(mrs_word(CNTVCT_EL0, 0), UDF), entry=BASE)
    o = m.run(timeout=30)
    assert o.exit_code == EXIT_UNDEF and o.pc == BASE + dies_at, o.message
    if cntkctl:
        assert vm.vcpus[0].uc.reg_read(UC_ARM64_REG_X0) == 16  # served from the virtual clock


def test_el2_virtual_offset():
    """At EL2 (HCR_EL2.E2H=0) CNTVCT_EL0 = CNTPCT_EL0 - CNTVOFF_EL2 (QEMU gt_virt_cnt_offset)."""
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(start_el=2)
    vm.load_code(BASE, words(*mov(1, 1 << 40), msr_word(CNTVOFF_EL2, 1), mrs_word(CNTVCT_EL0, 19),
                             mrs_word(CNTPCT_EL0, 20), *PSCI_OFF_SMC))
    o = m.run(timeout=30)
    virt, phys = regs(vm.vcpus[0], UC_ARM64_REG_X19, UC_ARM64_REG_X20)
    assert o.exit_code == 0, o.message
    assert virt == (16 - (1 << 40)) % (1 << 64) and 16 < phys < 1 << 20


def max_cpu(monkeypatch) -> None:
    """vCPUs with FEAT_VHE: Unicorn's `max` model (the default model has none)."""
    import unicorn

    import harness.vcpu

    def uc(*args):
        u = unicorn.Uc(*args)
        u.ctl_set_cpu_model(unicorn.arm64_const.UC_CPU_ARM64_MAX)
        return u
    if getattr(harness.vcpu, "Uc", None) is not unicorn.Uc:
        pytest.skip("harness.vcpu no longer builds vCPUs with unicorn.Uc: choose the max model its own way")
    monkeypatch.setattr(harness.vcpu, "Uc", uc)


def test_el2_vhe_redirects_the_el0_timer_names_and_the_virtual_offset(monkeypatch):
    """At EL2 with HCR_EL2.E2H=1: CNTP_CVAL_EL0 is CNTHP_CVAL_EL2, CNTP_CVAL_EL02 is the EL1 timer's, and
    CNTVCT_EL0 has no offset (QEMU gt_phys_redir_timeridx, gt_virt_cnt_offset)."""
    max_cpu(monkeypatch)
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(start_el=2)
    code = [*mov(1, 1 << 40), msr_word(CNTVOFF_EL2, 1), *mov(1, (1 << 34) | (1 << 31)), msr_word(HCR_EL2, 1),
            ISB, *mov(1, 1234), msr_word(CNTP_CVAL_EL0, 1), mrs_word(CNTHP_CVAL_EL2, 21),
            mrs_word(CNTP_CVAL_EL02, 22), mrs_word(CNTVCT_EL0, 23), mrs_word(CNTPCT_EL0, 24), *PSCI_OFF_SMC]
    vm.load_code(BASE, words(*code))
    o = m.run(timeout=30)
    v = vm.vcpus[0]
    assert o.exit_code == 0, o.message
    assert regs(v, UC_ARM64_REG_X21, UC_ARM64_REG_X22) == [1234, 0]
    assert m.timers.model(v).read("CNTHP_CVAL", 0) == 1234 and m.timers.model(v).read("CNTP_CVAL", 0) == 0
    virt, phys = regs(v, UC_ARM64_REG_X21 + 2, UC_ARM64_REG_X21 + 3)
    assert 0 < virt < phys < 1 << 20                                  # no CNTVOFF_EL2 at EL2 with E2H=1


def test_registers_of_absent_features_stay_undefined():
    """EL1 guest: the EL2 timer registers do not exist (QEMU virt without virtualization=on)."""
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm()
    vm.load_code(BASE, words(mrs_word(CNTHP_CVAL_EL2, 0), UDF))
    o = m.run(timeout=30)
    assert o.exit_code == EXIT_UNDEF and o.pc == BASE
    assert CNTHP_CVAL_EL2 not in vm.vcpus[0].sysregs.reads


def test_event_stream_enable_is_logged_as_unimplemented():
    log = io.StringIO()
    m = Machine(console=lambda vm, d, s: None, log=Log("unimp", stream=log))
    vm = m.add_vm()
    vm.load_code(BASE, words(*mov(1, 0b100), msr_word(CNTKCTL_EL1, 1), mrs_word(CNTKCTL_EL1, 2), UDF))
    o = m.run(timeout=30)
    assert o.exit_code == EXIT_UNDEF and vm.vcpus[0].uc.reg_read(UC_ARM64_REG_X0 + 2) == 0b100   # Unicorn keeps it
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and "event stream (EVNTEN) enabled" in lines[0] and "vm0.cpu0" in lines[0]


@pytest.mark.parametrize("el", [1, 2])
def test_cntfrq_reads_qemus_value_and_is_writable_at_the_highest_el(el):
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(start_el=el)
    vm.load_code(BASE, words(mrs_word(CNTFRQ_EL0, 19), *mov(1, 24_000_000), msr_word(CNTFRQ_EL0, 1),
                             mrs_word(CNTFRQ_EL0, 20), UDF))
    o = m.run(timeout=30)
    v = vm.vcpus[0]
    assert regs(v, UC_ARM64_REG_X19, UC_ARM64_REG_X20) == [62_500_000, 24_000_000]
    assert o.exit_code == EXIT_UNDEF and o.pc == BASE + 4 * 5 and not m.clock.started   # CNTFRQ is not time


# -- determinism, semihosting, SMP --------------------------------------------------------------------------------
def run_out(name: str, **vm_kw):
    out = bytearray()
    m = Machine(console=lambda vm, d, s: out.extend(d))
    vm = m.add_vm(**vm_kw)
    vm.load(str(guest_elf(name)))
    return m.run(timeout=60), out.decode()


def test_same_trace_twice_also_with_the_host_cpu_loaded():
    """Virtual time depends on nothing but the guest: the same records (timestamps included) on an idle host and
    with another process burning a CPU."""
    def records():
        sink = ListSink()
        m = Machine(tracer=Tracer(events="timer_output,vcpu_*,clock_warp,dvm_*,psci_call", sinks=[sink]),
                    console=lambda vm, d, s: None)
        vm = m.add_vm(ncpus=2)
        vm.load(str(guest_elf("timer")))
        assert m.run(timeout=60).exit_code == 0
        return [(r.event, r.ts, r.fields) for r in sink.records], m.clock.now()
    quiet = records()
    loaded = under_cpu_load(records)
    assert quiet == loaded
    events = {e for e, _, _ in quiet[0]}
    assert {"timer_output", "psci_call"} <= events and len({ts for _, ts, _ in quiet[0]}) > 10


def test_semihosting_clocks_read_the_virtual_clock():
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm()
    blk = BASE + 0x200
    code = [*mov(0, 0x30), *mov(1, blk), 0xD45E0000, *mov(0, 0x30), *mov(1, blk + 8), 0xD45E0000, UDF]   # ELAPSED
    vm.load_code(BASE, words(*code))
    o = m.run(timeout=30)
    e1, e2 = vm.ipa.read64(blk), vm.ipa.read64(blk + 8)
    assert o.exit_code == EXIT_UNDEF and m.clock.started_by == "guest"
    assert (e1, e2) == (16 * 16, 32 * 16)          # ns at 62.5 MHz: 16 ticks, then the next slice's +16


@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed (Debian: apt-get install qemu-system-arm)")
@pytest.mark.parametrize("cpus,el", [pytest.param(1, 1, marks=pytest.mark.slow), (2, 1), (2, 2)])
def test_timer_guest_same_verdicts_under_qemu(cpus, el):
    machine = "virt,virtualization=on" if el == 2 else "virt"
    cmd = [QEMU, "-M", machine, "-cpu", "max", "-smp", str(cpus), "-m", "128M", "-semihosting", "-nographic",
           "-no-reboot", "-monitor", "none", "-serial", "stdio", "-kernel", str(guest_elf("timer"))]
    q = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                       env={**os.environ})
    h = run_cli("run", guest_elf("timer"), "--cpus", str(cpus), "--el", str(el))
    assert q.returncode == h.returncode == 0, (q.stdout, h.stdout)
    assert (q.stdout + q.stderr).replace("\r\n", "\n") == h.stdout
