"""Machine, VM, vCPU and scheduler (harness/machine.py) through the Python API."""
import pytest
from unicorn.arm64_const import UC_ARM64_REG_X0, UC_ARM64_REG_X2

from guestbin import guest_elf
from harness.exits import EXIT_ABORT, EXIT_BUDGET, EXIT_UNDEF, HarnessInputError, Kind
from harness.machine import DEFAULT_RAM_IPA, Machine, mpidr_of

# Raw AArch64 encodings used below (Arm ARM C6): semihosting exit needs a block, so these tests use PSCI.
MOVZ_X0_PSCI_SYSTEM_OFF = [0xD2800100, 0xF2B08000]    # movz x0, #8; movk x0, #0x8400, lsl #16
HVC0 = 0xD4000002
B_SELF = 0x14000000
NOP = 0xD503201F


def code(*words):
    return b"".join(w.to_bytes(4, "little") for w in words)


def quiet_machine(**kw):
    out = bytearray()
    return Machine(console=lambda vm, data, stream: out.extend(data), **kw), out


def run_guest(name, ncpus=1, **kw):
    m, out = quiet_machine()
    vm = m.add_vm(ncpus=ncpus)
    vm.load(str(guest_elf(name)))
    return m.run(timeout=30, **kw), bytes(out), m


def test_hello_exits_0_with_console_output():
    o, out, m = run_guest("hello")
    assert o.kind is Kind.EXIT and o.exit_code == 0
    assert out.startswith(b"Hello from an smmu-harness guest on cpu 0 at EL1\n")
    assert b"SUMMARY: 5 tests, 0 unexpected failures, 0 skipped\n" in out
    assert m.vms[0].output == out


def test_failing_report_exits_1_and_status_7_passes_through():
    o, out, _ = run_guest("report_fail")
    assert o.exit_code == 1 and b"FAIL: sample: this fails on purpose\n" in out
    o, out, _ = run_guest("exit7")
    assert (o.kind, o.status, o.exit_code) == (Kind.EXIT, 7, 7)


def test_ram_is_shared_zero_copy_with_the_host_bus():
    m, _ = quiet_machine()
    vm = m.add_vm(ncpus=2)
    vm.load_code(DEFAULT_RAM_IPA, code(0xD2800540, HVC0, B_SELF))   # movz x0, #42
    m.bus.write64(vm.ram_pa + 0x1000, 0x1122334455667788)
    for v in vm.vcpus:                                                 # every vCPU sees the host's write
        assert int.from_bytes(v.uc.mem_read(DEFAULT_RAM_IPA + 0x1000, 8), "little") == 0x1122334455667788
    vm.vcpus[1].uc.mem_write(DEFAULT_RAM_IPA + 0x2000, b"\xAA")
    assert m.bus.read(vm.ram_pa + 0x2000, 1) == 0xAA and vm.ipa.read(DEFAULT_RAM_IPA + 0x2000, 1) == 0xAA


def test_two_vms_get_distinct_ram_pas_and_vmids():
    m, _ = quiet_machine()
    a, b = m.add_vm("a"), m.add_vm("b", ram_size=64 << 20)
    assert a.ram_pa != b.ram_pa and a.ram_ipa == b.ram_ipa == DEFAULT_RAM_IPA
    assert (a.vmid, b.vmid) == (1, 2) and a.vcpus[0].vmid == 1
    assert [v.dvm_name for v in m.vcpus] == ["a.cpu0", "b.cpu0"]
    with pytest.raises(ValueError, match="overlaps"):
        m.add_vm("c", ram_pa=a.ram_pa)


def test_two_vms_run_to_completion_under_one_scheduler():
    m, out = quiet_machine()
    for name in ("a", "b"):
        m.add_vm(name).load(str(guest_elf("hello")))
    o = m.run(timeout=30)
    assert o.exit_code == 0 and all(vm.outcome.exit_code == 0 for vm in m.vms)
    assert out.count(b"SUMMARY: 5 tests, 0 unexpected failures") == 2


def test_mpidr_per_vcpu():
    m, _ = quiet_machine()
    vm = m.add_vm(ncpus=3)
    # mrs x0, mpidr_el1 ; b .
    vm.load_code(DEFAULT_RAM_IPA, code(0xD53800A0, B_SELF))
    for v in vm.vcpus:
        v.power_on(DEFAULT_RAM_IPA)
        v.uc.emu_start(DEFAULT_RAM_IPA, 0, count=1)
        assert v.uc.reg_read(UC_ARM64_REG_X0) == mpidr_of(v.index) == 0x8000_0000 | v.index


def test_psci_system_off_ends_run_with_0():
    m, _ = quiet_machine()
    vm = m.add_vm()
    vm.load_code(DEFAULT_RAM_IPA, code(*MOVZ_X0_PSCI_SYSTEM_OFF, HVC0, B_SELF))
    o = m.run(timeout=10)
    assert (o.kind, o.exit_code) == (Kind.EXIT, 0) and "SYSTEM_OFF" in o.message


def test_smp_output_is_identical_over_runs():
    outs = set()
    for _ in range(3):
        o, out, _ = run_guest("smp", ncpus=2)
        assert o.exit_code == 0, out
        outs.add(out)
    assert len(outs) == 1
    out = outs.pop()
    assert b"PASS: smp: cpu1: running on the CPU it was started on\nPASS: smp: cpu1: AFFINITY_INFO says ON\n" \
        b"PASS: smp: CPU_ON cpu1\n" in out
    assert b"SUMMARY: 9 tests, 0 unexpected failures, 0 skipped" in out


def test_smp_with_four_cpus_and_budget_mode_is_deterministic():
    runs = [run_guest("smp", ncpus=4, max_insns=50_000_000)[:2] for _ in range(2)]
    assert runs[0] == runs[1] and runs[0][0].exit_code == 0


def test_smp_at_el2():
    m, out = quiet_machine()
    vm = m.add_vm(ncpus=2, start_el=2)
    vm.load(str(guest_elf("smp")))
    o = m.run(timeout=30)
    assert o.exit_code == 0, bytes(out)
    assert all(v.el == 2 for v in vm.vcpus if v.slices)


def test_mmu_guest_runs_translated_code():
    o, out, m = run_guest("mmu")
    assert o.exit_code == 0, out
    assert b"PASS: mmu: code runs at the alias VA (pc 0x1" in out
    v = m.vcpus[0]
    assert v.translate(0x1_0000_0000 + 0x80000).ipa == 0x4008_0000      # 1 GiB block alias
    assert not v.translate(0x3_0000_0000).ok


@pytest.mark.parametrize("guest,kind,status,needles", [
    ("undef", Kind.UNDEF, EXIT_UNDEF, ["undefined instruction", "<do_undef+0x4>", "udf #0", "ESR 0x02000000"]),
    ("mmio_hole", Kind.ABORT, EXIT_ABORT, ["data abort", "<poke_hole+", "str ", "EC 0x25", "FAR 0x8012000",
                                           "write of 4 bytes"]),
    ("jump_unmapped", Kind.ABORT, EXIT_ABORT, ["instruction fetch from unmapped address", "pc 0xe000000",
                                               "EC 0x21", "LR 0x", "<main+"]),
    ("mmu_fault", Kind.ABORT, EXIT_ABORT, ["data abort", "<load_unmapped+", "ldr x0", "FAR 0x300000008",
                                           "translation fault level 1", "ESR 0x96000005"]),
])
def test_deaths(guest, kind, status, needles):
    o, _, _ = run_guest(guest)
    assert (o.kind, o.exit_code) == (kind, status)
    assert "\n" not in o.message
    for n in needles:
        assert n in o.message, o.message


def test_budgets():
    o, _, _ = run_guest("spin", max_insns=200_000)
    assert (o.kind, o.exit_code) == (Kind.BUDGET, EXIT_BUDGET)
    m, _ = quiet_machine()
    m.add_vm().load(str(guest_elf("spin")))
    o = m.run(timeout=0.3)
    assert (o.kind, o.exit_code) == (Kind.TIMEOUT, EXIT_BUDGET) and "<main+" in o.message


def test_all_cpus_off_is_reported():
    m, _ = quiet_machine()
    vm = m.add_vm()
    vm.load_code(DEFAULT_RAM_IPA, code(0xD2800040, 0xF2B08000, HVC0, B_SELF))   # PSCI CPU_OFF
    o = m.run(timeout=10)
    assert (o.kind, o.exit_code) == (Kind.IDLE, EXIT_BUDGET) and "powered off" in o.message


def test_segments_outside_ram_are_bad_input():
    m, _ = quiet_machine()
    vm = m.add_vm(ram_size=1 << 20)                        # image + stacks fit in [0x4000_0000, +1 MiB)
    vm2 = m.add_vm(ram_ipa=0x8000_0000, ram_size=1 << 20)  # the image's 0x4008_0000 is not RAM here
    with pytest.raises(HarnessInputError, match=r"segment elf\[0\] .* does not fit in RAM"):
        vm2.load(str(guest_elf("hello")))
    assert vm.load(str(guest_elf("hello"))).entry == 0x4008_0000


class Recorder:
    def __init__(self):
        self.calls = []

    def attach_vcpu(self, v):
        self.calls.append(("attach", v.dvm_name))

    def before_run(self, m):
        self.calls.append(("before", len(m.vms[0].code_ranges)))

    def slice_start(self, v):
        self.calls.append(("start", v.dvm_name))

    def slice_end(self, v):
        self.calls.append(("end", v.dvm_name))

    def after_run(self, m):
        self.calls.append(("after", m.outcome.exit_code))


def test_plugin_hooks_order():
    m, _ = quiet_machine()
    early = Recorder()
    m.add_plugin(early)
    vm = m.add_vm(ncpus=2)
    late = Recorder()
    m.add_plugin(late)
    vm.load(str(guest_elf("smp")))
    m.run(timeout=30)
    for r in (early, late):
        assert r.calls[:2] == [("attach", "vm0.cpu0"), ("attach", "vm0.cpu1")]
        assert r.calls[2][0] == "before" and r.calls[2][1] >= 1
        assert r.calls[-1] == ("after", 0)
        body = r.calls[3:-1]
        assert body and all(body[i][0] == "start" and body[i + 1] == ("end", body[i][1])
                            for i in range(0, len(body), 2))
        assert ("start", "vm0.cpu1") in body


def test_die_undefined_from_a_plugin_hook():
    class Refuse:
        def slice_start(self, v):
            if v.machine.vcpus[0].slices == 1:
                v.machine.die_undefined(v, why="refused by plugin")

    m, _ = quiet_machine()
    m.add_plugin(Refuse())
    m.add_vm().load(str(guest_elf("hello")))
    o = m.run(timeout=10)
    assert o.exit_code == EXIT_UNDEF and "refused by plugin" in o.message and "<_start>" in o.message
    assert m.vms[0].output == b""                          # the guest never ran


def test_guest_status_outside_0_123_is_reported_as_1():
    from harness.exits import Outcome
    assert [Outcome(Kind.EXIT, "", st).exit_code for st in (0, 7, 123, 124, 200, 1 << 32)] == [0, 7, 123, 1, 1, 1]


def test_read_virt_walks_the_guest_tables():
    # After the mmu guest, its MMU is still on: VA reads (semihosting blocks, death lines) follow its tables.
    o, out, m = run_guest("mmu")
    v, vm = m.vcpus[0], m.vms[0]
    assert o.exit_code == 0 and v.translation_regs().mmu_on
    assert v.read_virt(0x1_0000_0000 + 0x80000, 64) == bytes(vm.ram.buf[0x80000:0x80040])
    assert int.from_bytes(v.read_virt(0x2_0000_0018, 8), "little") == 0xFEED     # page_buf[3] via the 4K alias
    assert v.translate(0x2_0000_1000).ok is False


def test_machine_module_keeps_its_public_names():
    """harness/machine.py is the board; the vCPU, the scheduler and exceptions have their own modules, and the
    names other code imports from harness.machine are the same objects."""
    import harness.exceptions
    import harness.scheduler
    import harness.vcpu
    from harness.machine import DEFAULT_QUANTUM, EXCEPTION_OPT_IN, VM, CodeRange, Vcpu, write_console  # noqa: F401
    assert Vcpu is harness.vcpu.Vcpu and mpidr_of is harness.vcpu.mpidr_of
    assert DEFAULT_QUANTUM == harness.scheduler.DEFAULT_QUANTUM == 10_000
    assert EXCEPTION_OPT_IN == harness.exceptions.EXCEPTION_OPT_IN == "exception_handled_ecs"
    m, _ = quiet_machine(quantum=77)
    assert isinstance(m.scheduler, harness.scheduler.Scheduler) and m.quantum == 77 and m.retired == 0
    assert isinstance(m.exceptions, harness.exceptions.Exceptions)
    vm = m.add_vm()
    assert isinstance(vm, VM) and all(isinstance(v, Vcpu) for v in vm.vcpus)
    assert not hasattr(vm.vcpus[0], "dvm_tlbi")             # the TLBI trap's VcpuParticipant is the receiver


def test_run_slice_runs_exactly_count_instructions():
    """The scheduler's single-step seam: one vCPU, `count` instructions, the plugins' slice hooks around it."""
    m, _ = quiet_machine()
    vm = m.add_vm()
    add_x2 = 0x91000442                                     # add x2, x2, #1
    vm.load_code(DEFAULT_RAM_IPA, code(*[add_x2] * 8, B_SELF))
    v = vm.vcpus[0]
    v.power_on(DEFAULT_RAM_IPA)
    seen = []

    class Hooks:
        def slice_start(self, vcpu):
            seen.append(("start", vcpu.pc))

        def slice_end(self, vcpu):
            seen.append(("end", vcpu.pc))
    m.add_plugin(Hooks())
    for n in (1, 3):
        m.scheduler.run_slice(v, n)
    assert v.uc.reg_read(UC_ARM64_REG_X2) == 4 and v.pc == DEFAULT_RAM_IPA + 16 and v.slices == 2
    assert seen == [("start", DEFAULT_RAM_IPA), ("end", DEFAULT_RAM_IPA + 4), ("start", DEFAULT_RAM_IPA + 4),
                    ("end", DEFAULT_RAM_IPA + 16)]
    assert m.retired == 0                                   # run_slice charges nothing; run() does
