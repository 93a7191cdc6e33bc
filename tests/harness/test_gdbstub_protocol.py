"""The gdb stub (harness/gdbstub.py) driven by a Python client written from the GDB manual (tests/harness/
gdbclient.py): queries, registers, memory by VA, breakpoints, watchpoints, steps, per-thread continue, Ctrl-C,
detach, kill, disconnects, the end of the run, bad packets; and that a debugger that only continues (or
interrupts and continues) changes nothing the guest does. tests/harness/test_gdbstub.py uses the real gdb."""
from __future__ import annotations

import random
import re
import socket
import struct
import time

import pytest
from unicorn.arm64_const import UC_ARM64_REG_PC, UC_ARM64_REG_PSTATE, UC_ARM64_REG_X1, UC_ARM64_REG_X2

from devmodel.trace import ListSink, Tracer
from gdbclient import Client, Debugged
from guestbin import guest_elf
from harness import gdbregs
from harness.exits import Kind
from harness.gdbrsp import MAX_PACKET
from harness.gdbstub import GdbStub, parse_gdb_device
from harness.machine import Machine
from harness.trap import TlbiTrap

CODE, DATA, TABLES = 0x4008_0000, 0x4020_0000, 0x4040_0000
ADD_X1, ADD5_X1, NOP, B_SELF, B_BACK = 0x91000421, 0x91001421, 0xD503201F, 0x14000000, 0x17FFFFFF
STR_X1_X2, LDR_X0_X2, CSET_X5_EQ, UDF = 0xF9000041, 0xF9400040, 0x9A9F17E5, 0x00000000
PSCI_OFF = (0xD2800100, 0xF2B08000, 0xD4000002)                # x0 = SYSTEM_OFF; hvc #0


def words(*ws: int) -> bytes:
    return b"".join(struct.pack("<I", w) for w in ws)


def sys_exit(status: int) -> bytes:
    """x0 = SYS_EXIT, x1 = the block after the HLT; hlt #0xf000; (ADP_Stopped_ApplicationExit, status)."""
    return words(0xD2800300, 0x10000041, 0xD45E0000) + struct.pack("<QQ", 0x20026, status)


# +0 +4 +8: add x1 (x1 = 3); +12: str x1, [x2]; +16: ldr x0, [x2]; +20: cset x5, eq; then exit(6)
PROGRAM = words(ADD_X1, ADD_X1, ADD_X1, STR_X1_X2, LDR_X0_X2, CSET_X5_EQ) + sys_exit(6)


def machine(code: bytes = PROGRAM, ncpus: int = 1, tracer=None) -> Machine:
    m = Machine(console=lambda vm, d, s: None, tcg_buffer_size=8 << 20, **({"tracer": tracer} if tracer else {}))
    vm = m.add_vm(ncpus=ncpus, ram_size=32 << 20)
    vm.load_code(CODE, code)
    v = vm.vcpus[0]
    v.power_on(CODE)                      # on before the run: Machine.run leaves its registers as set here
    v.uc.reg_write(UC_ARM64_REG_X2, DATA)
    return m


@pytest.fixture
def session():
    made = []

    def start(m=None, **kw):
        d = Debugged(m or machine(), **kw)
        made.append(d)
        return d
    yield start
    for d in made:
        d.abort()


def reg(c: Client, n: int) -> int:
    return int.from_bytes(bytes.fromhex(c.ask(b"p%x" % n).decode()), "little")


def ram(m: Machine, ipa: int, n: int) -> bytes:
    vm = m.vms[0]
    return bytes(vm.ram.buf[ipa - vm.ram_ipa:ipa - vm.ram_ipa + n])


# -- queries ---------------------------------------------------------------------------------------------------

def test_qsupported_and_the_target_description(session):
    d = session()
    c = d.client
    features = c.ask(b"qSupported:multiprocess+;swbreak+;xmlRegisters=i386").split(b";")
    assert {b"PacketSize=%x" % MAX_PACKET, b"qXfer:features:read+", b"QStartNoAckMode+", b"vContSupported+",
            b"multiprocess+"} <= set(features)
    for annex in ("target.xml", "aarch64-core.xml", "aarch64-fpu.xml"):
        got, off = b"", 0
        while True:                                    # read in small pieces: 'm' until the last, 'l'
            r = c.ask(b"qXfer:features:read:%s:%x,40" % (annex.encode(), off))
            assert r[:1] in (b"m", b"l")
            got += r[1:]
            off += len(r) - 1
            if r[:1] == b"l":
                break
        assert got.decode() == gdbregs.feature_xml(annex)
    assert c.ask(b"qXfer:features:read:nosuch.xml:0,100") == b"E00"
    assert c.ask(b"qXfer:features:read:target.xml:ffff,10") == b"E00"
    assert c.ask(b"qAttached:1") == b"1"
    assert c.ask(b"vCont?") == b"vCont;c;C;s;S"
    assert c.ask(b"vMustReplyEmpty") == b""
    c.send(b"k")
    assert d.finish().kind is Kind.KILLED and d.outcome.exit_code == 137


def test_threads_in_plain_and_multiprocess_ids(session):
    m = machine(ncpus=2)
    d = session(m)
    c = d.client
    assert c.ask(b"qSupported").startswith(b"PacketSize=")
    assert [c.ask(b"qfThreadInfo"), c.ask(b"qsThreadInfo"), c.ask(b"qsThreadInfo")] == [b"m01", b"m02", b"l"]
    assert bytes.fromhex(c.ask(b"qThreadExtraInfo,1").decode()) == b"vm0.cpu0 [running]"
    assert bytes.fromhex(c.ask(b"qThreadExtraInfo,2").decode()) == b"vm0.cpu1 [off]"
    assert c.ask(b"T2") == b"OK" and c.ask(b"T3") == b"E22" and c.ask(b"qC") == b"QC01"
    m.vcpus[1].uc.reg_write(UC_ARM64_REG_X1, 0x77)
    assert c.ask(b"Hg2") == b"OK" and reg(c, 1) == 0x77
    assert c.ask(b"Hg0") == b"OK" and reg(c, 1) == 0                     # 0: any thread (the first)
    assert c.ask(b"Hg-1") == b"OK" and c.ask(b"Hg9") == b"E22"
    assert c.ask(b"qSupported:multiprocess+").endswith(b"multiprocess+")
    assert [c.ask(b"qfThreadInfo"), c.ask(b"qsThreadInfo"), c.ask(b"qsThreadInfo")] == \
        [b"mp01.01", b"mp01.02", b"l"]
    assert c.ask(b"Hgp1.2") == b"OK" and reg(c, 1) == 0x77 and c.ask(b"Hgp2.1") == b"E22"
    assert c.ask(b"?") == b"T05thread:p01.01;"
    c.send(b"k")
    d.finish()


# -- registers and memory --------------------------------------------------------------------------------------

def test_registers_g_G_p_P(session):
    m = machine()
    d = session(m)
    c = d.client
    uc = m.vcpus[0].uc
    g = bytes.fromhex(c.ask(b"g").decode())
    assert len(g) == 31 * 8 + 8 + 8 + 4                                  # x0-x30, sp, pc, cpsr (32 bits)
    assert struct.unpack_from("<Q", g, 2 * 8)[0] == DATA and struct.unpack_from("<Q", g, 32 * 8)[0] == CODE
    assert struct.unpack_from("<I", g, 33 * 8)[0] == uc.reg_read(UC_ARM64_REG_PSTATE)
    new = bytearray(g)
    struct.pack_into("<Q", new, 1 * 8, 0x1122_3344_5566_7788)
    assert c.ask(b"G" + new.hex().encode()) == b"OK" and uc.reg_read(UC_ARM64_REG_X1) == 0x1122_3344_5566_7788
    assert c.ask(b"G" + new[:16].hex().encode()) == b"OK"                # a short G writes what it holds
    assert c.ask(b"P25=" + (0x0F0E0D0C0B0A09080706050403020100).to_bytes(16, "little").hex().encode()) == b"OK"
    assert c.ask(b"p25") == bytes(range(16)).hex().encode()              # v3, little-endian
    assert c.ask(b"P42=01000000") == b"OK" and reg(c, 0x42) == 1         # fpsr
    assert c.ask(b"P1=0100000000000000") == b"OK" and reg(c, 1) == 1
    # cpsr: set Z; the guest's `cset x5, eq` then sees it (the write takes effect in Unicorn)
    assert c.ask(b"P21=" + ((reg(c, 0x21) | 1 << 30).to_bytes(4, "little").hex().encode())) == b"OK"
    assert c.ask(b"P20=" + (CODE + 20).to_bytes(8, "little").hex().encode()) == b"OK"
    assert c.ask(b"s").startswith(b"T05") and reg(c, 5) == 1 and reg(c, 0x20) == CODE + 24
    c.send(b"c")
    assert c.read_packet() == b"W06"
    assert d.finish().exit_code == 6


def _map_va(m: Machine, va: int, ipa: int) -> None:
    """Stage 1 for vCPU 0: 4 KiB pages, `va` -> `ipa` and the code identity-mapped; the MMU on."""
    from devmodel.pagetable import PageAllocator, PageTableBuilder
    vm, v = m.vms[0], m.vcpus[0]
    b = PageTableBuilder(vm.ipa, PageAllocator(vm.ipa, TABLES, 1 << 20), granule=4096, ias=39)
    b.map(va, ipa, 0x1000)
    b.map(CODE, CODE, 0x1000)
    uc = v.uc
    uc.cpr_write(3, 0, 10, 2, 0, 0xFF)                                   # MAIR_EL1
    uc.cpr_write(3, 0, 2, 0, 0, b.ttb)                                   # TTBR0_EL1
    tcr = (5 << 32) | (2 << 30) | (1 << 23) | (3 << 12) | (1 << 10) | (1 << 8) | 25   # 4K, T0SZ 25, EPD1
    uc.cpr_write(3, 0, 2, 0, 2, tcr)
    uc.cpr_write(3, 0, 1, 0, 0, uc.cpr_read(3, 0, 1, 0, 0) | 1)         # SCTLR_EL1.M
    v.flush_tlb()


def test_memory_by_virtual_address_through_the_vcpus_stage1(session):
    m = machine()
    va = 0x8000_0000
    _map_va(m, va, DATA)
    vm = m.vms[0]
    vm.ipa.write_bytes(DATA, bytes(range(16)))
    d = session(m)
    c = d.client
    assert c.ask(b"m%x,10" % va) == bytes(range(16)).hex().encode()
    assert c.ask(b"m%x,4" % DATA) == b"E14"                             # not mapped at that VA: MMU on
    assert c.ask(b"M%x,4:deadbeef" % va) == b"OK" and ram(m, DATA, 4) == bytes.fromhex("deadbeef")
    special = b"#$}*\x03\x00"                                           # escaped in X's binary data
    esc = b"".join(b"}" + bytes([x ^ 0x20]) if x in b"#$}*" else bytes([x]) for x in special)
    assert c.ask(b"X%x,%x:" % (va + 4, len(special)) + esc) == b"OK" and ram(m, DATA + 4, 6) == special
    assert c.ask(b"X%x,0:" % va) == b"OK"                                # gdb's probe for X
    before = ram(m, DATA + 0xFF0, 16)
    assert c.ask(b"M%x,20:" % (va + 0xFF0) + b"11" * 0x20) == b"E14"      # runs into an unmapped page
    assert ram(m, DATA + 0xFF0, 16) == before                            # nothing written
    assert c.ask(b"m%x,4" % (va + 0x1000)) == b"E14"
    c.send(b"k")
    d.finish()


def test_code_written_by_the_debugger_is_executed(session):
    m = machine(words(ADD_X1, NOP, B_BACK - 1, *PSCI_OFF))               # add; nop; b CODE: a loop
    d = session(m)
    c = d.client
    assert c.ask(b"Z0,%x,4" % (CODE + 4)) == b"OK"
    c.send(b"c")
    assert c.read_packet() == b"T05thread:01;" and reg(c, 1) == 1       # CODE's block is translated now
    assert c.ask(b"M%x,4:" % CODE + words(ADD5_X1).hex().encode()) == b"OK"
    # step over the breakpoint as gdb does (a continue from it would hit it again at once, as in QEMU)
    assert c.ask(b"z0,%x,4" % (CODE + 4)) == b"OK" and c.ask(b"s") == b"T05thread:01;"
    assert c.ask(b"Z0,%x,4" % (CODE + 4)) == b"OK"
    c.send(b"c")
    assert c.read_packet() == b"T05thread:01;" and reg(c, 1) == 6       # the new instruction ran
    c.send(b"c")
    assert c.read_packet() == b"T05thread:01;" and reg(c, 1) == 6       # again at once: not stepped over
    c.send(b"k")
    d.finish()


# -- breakpoints, watchpoints, steps ----------------------------------------------------------------------------

def test_breakpoint_watchpoints_and_step(session):
    m = machine()
    d = session(m)
    c = d.client
    assert c.ask(b"Z0,%x,4" % (CODE + 8)) == b"OK"
    c.send(b"vCont;c")
    assert c.read_packet() == b"T05thread:01;"
    assert reg(c, 0x20) == CODE + 8 and reg(c, 1) == 2                   # stopped before the instruction
    assert ram(m, CODE + 8, 4) == words(ADD_X1)                          # nothing written into the guest
    assert c.ask(b"z0,%x,4" % (CODE + 8)) == b"OK" and c.ask(b"z0,%x,4" % (CODE + 8)) == b"E22"
    assert c.ask(b"Z2,%x,8" % DATA) == b"OK"
    c.send(b"c")
    assert c.read_packet() == b"T05thread:01;watch:%x;" % DATA
    assert reg(c, 0x20) == CODE + 12 and ram(m, DATA, 8) == bytes(8)     # before the store
    assert c.ask(b"z2,%x,8" % DATA) == b"OK" and c.ask(b"Z3,%x,4" % (DATA + 4)) == b"OK"
    assert c.ask(b"s") == b"T05thread:01;" and reg(c, 0x20) == CODE + 16
    assert ram(m, DATA, 8) == (3).to_bytes(8, "little")                 # the store ran in the step
    c.send(b"c")
    assert c.read_packet() == b"T05thread:01;rwatch:%x;" % (DATA + 4)   # the load of [DATA, +8)
    assert c.ask(b"z3,%x,4" % (DATA + 4)) == b"OK" and c.ask(b"Z4,%x,1" % DATA) == b"OK"
    assert c.ask(b"s") == b"T05thread:01;awatch:%x;" % DATA             # the step stops at the access
    assert c.ask(b"z4,%x,1" % DATA) == b"OK"
    c.send(b"c")
    assert c.read_packet() == b"W06"
    assert d.finish().exit_code == 6


def test_a_step_overrides_a_breakpoint_at_the_pc(session):
    d = session()
    c = d.client
    assert c.ask(b"Z0,%x,4" % CODE) == b"OK" and c.ask(b"Z1,%x,4" % (CODE + 4)) == b"OK"
    assert c.ask(b"s") == b"T05thread:01;" and reg(c, 0x20) == CODE + 4  # not stopped by the one at CODE
    c.send(b"c")                                                         # the hardware one at CODE + 4 hits
    assert c.read_packet() == b"T05thread:01;" and reg(c, 0x20) == CODE + 4 and reg(c, 1) == 1
    c.send(b"k")
    d.finish()


LOOP = words(ADD_X1, B_BACK)                                              # add x1; b CODE: for ever


def _two_looping_vcpus() -> Machine:
    m = machine(LOOP, ncpus=2)
    m.vcpus[1].power_on(CODE)
    return m


def _interrupt(c: Client, expect: bytes = b"T02") -> bytes:
    time.sleep(0.2)
    c.send_raw(b"\x03")
    r = c.read_packet()
    assert r.startswith(expect), r
    return r


def test_a_step_runs_one_instruction_of_its_thread_only(session):
    m = _two_looping_vcpus()
    d = session(m)
    c = d.client
    v0, v1 = m.vcpus
    assert c.ask(b"vCont;s:2;c") == b"T05thread:02;"                      # thread 2 steps, the others stay
    assert (v0.pc, v1.pc, v0.retired, v1.retired) == (CODE, CODE + 4, 0, 1)
    assert c.ask(b"Hc1") == b"OK" and c.ask(b"s") == b"T05thread:01;"
    assert (v0.pc, v1.pc) == (CODE + 4, CODE + 4)
    assert c.ask(b"S05") == b"T05thread:01;" and v0.pc == CODE             # the signal is ignored
    c.send(b"k")
    d.finish()


def test_continue_of_one_thread_holds_the_others_and_ctrl_c_stops_them(session):
    m = _two_looping_vcpus()
    d = session(m)
    c = d.client
    v0, v1 = m.vcpus
    c.send(b"vCont;c:2")                                                 # scheduler-locking: only thread 2
    _interrupt(c)
    x1 = [v.uc.reg_read(UC_ARM64_REG_X1) for v in (v0, v1)]
    assert x1[0] == 0 and x1[1] > 0                                      # thread 1 was held
    c.send(b"c")
    _interrupt(c)
    assert v0.uc.reg_read(UC_ARM64_REG_X1) > 0 and v1.uc.reg_read(UC_ARM64_REG_X1) > x1[1]
    c.send(b"k")
    assert d.finish().kind is Kind.KILLED


def test_time_stopped_in_the_debugger_does_not_count_against_the_timeout(session):
    d = session(machine(LOOP), timeout=1.0)
    c = d.client
    c.send(b"c")
    time.sleep(0.25)
    c.send_raw(b"\x03")
    assert c.read_packet() == b"T02thread:01;"
    time.sleep(1.5)                                  # stopped for longer than the whole budget
    resumed = time.monotonic()
    c.send(b"c")
    assert c.read_packet() == b"W7c"                 # 124: the budget ran out, but only after the rest of it
    assert time.monotonic() - resumed >= 0.5
    assert d.finish().kind is Kind.TIMEOUT


def test_only_held_vcpus_could_run_the_machine_waits_for_ctrl_c(session):
    m = machine(LOOP, ncpus=2)                                           # vCPU 1 stays off
    d = session(m)
    c = d.client
    c.send(b"vCont;c:2")
    time.sleep(0.3)
    x1 = m.vcpus[0].uc.reg_read
    assert d.thread.is_alive() and m.outcome is None and x1(UC_ARM64_REG_X1) == 0
    c.send_raw(b"\x03")
    assert c.read_packet() == b"T02thread:01;"
    c.send(b"c")
    _interrupt(c)
    assert x1(UC_ARM64_REG_X1) > 0
    c.send(b"k")
    d.finish()


# -- the end of the run and of the session ---------------------------------------------------------------------

def test_the_guest_exit_ends_the_session_with_its_status(session):
    d = session(machine(sys_exit(42)))
    c = d.client
    c.send(b"c")
    assert c.read_packet() == b"W2a" and c.closed()
    assert d.finish().exit_code == 42


def test_a_death_stops_with_its_signal_then_ends_with_x(session):
    m = machine(words(ADD_X1, UDF))
    d = session(m)
    c = d.client
    c.send(b"c")
    assert c.read_packet() == b"T04thread:01;"                           # SIGILL, the dead guest inspectable
    assert reg(c, 0x20) == CODE + 4 and reg(c, 1) == 1 and c.ask(b"?") == b"T04thread:01;"
    assert c.ask(b"s") == b"X04" and c.closed()
    assert d.finish().kind is Kind.UNDEF and d.outcome.exit_code == 132


def test_detach_removes_breakpoints_and_the_guest_runs_on(session):
    m = machine()
    d = session(m)
    c = d.client
    assert c.ask(b"Z0,%x,4" % (CODE + 8)) == b"OK" and c.ask(b"Z2,%x,8" % DATA) == b"OK"
    assert c.ask(b"D") == b"OK"
    assert d.finish().exit_code == 6
    assert all(v.debug.hooks == 0 for v in m.vcpus) and not m.vcpus[0].debug.breakpoints


def test_a_debugger_that_disconnects_while_stopped_leaves_the_machine_stopped(session):
    d = session()
    d.client.ask(b"Z0,%x,4" % (CODE + 8))
    d.client.close()                                                      # no detach, no kill
    time.sleep(0.3)
    assert d.thread.is_alive() and d.machine.vcpus[0].pc == CODE         # QEMU: it stays stopped
    c = d.connect()
    assert c.ask(b"?") == b"T05thread:01;"                                # '?' removes breakpoints
    c.send(b"c")
    assert c.read_packet() == b"W06"
    assert d.finish().exit_code == 6


def test_a_debugger_that_disconnects_while_running_leaves_it_running(session):
    d = session(machine(LOOP), max_insns=2_000_000)
    d.client.send(b"c")
    d.client.close()
    assert d.finish().kind is Kind.BUDGET


def test_a_debugger_connecting_to_a_running_machine_stops_it(session):
    m = machine(LOOP)
    d = Debugged(m, connect=False, wait=False)
    time.sleep(0.2)
    assert m.vcpus[0].retired == 0 and m.vcpus[0].slices > 0               # running (uncounted slices)
    c = d.connect()
    assert c.ask(b"?") == b"T05thread:01;"
    pc1 = reg(c, 0x20)
    time.sleep(0.2)
    assert reg(c, 0x20) == pc1                                            # stopped
    c.send(b"k")
    d.finish()


# -- acknowledgments and bad packets -----------------------------------------------------------------------------

def test_acks_naks_and_no_ack_mode(session):
    d = session()
    c = d.client
    c.send_raw(b"$g#00")                                                  # bad checksum
    assert c.read_ack() == b"-"
    r1 = c.ask(b"m%x,4" % CODE)
    c.buf = b""
    c.send_raw(b"-")                                                      # "send it again"
    assert c.read_packet() == r1
    assert c.ask(b"QStartNoAckMode") == b"OK"
    c.noack = True
    n = len(c.acks)
    assert c.ask(b"m%x,4" % CODE) == r1 and len(c.acks) == n and not c.buf
    c.send(b"k")
    d.finish()


BAD = [
    (b"mzz,4", b"E22"), (b"m4000", b"E22"), (b"m0,%x" % (MAX_PACKET), b"E22"), (b"m 1,4", b"E22"),
    (b"mffffffffffffffff,4", b"E14"), (b"m10000000000000000,4", b"E22"), (b"p44", b"E14"), (b"pzz", b"E22"),
    (b"P1=zz", b"E22"), (b"P1=0 0", b"E22"), (b"P44=00", b"E14"), (b"P1", b"E22"), (b"P1=" + b"00" * 9, b"E14"),
    (b"G0", b"E22"), (b"M%x,4:00" % DATA, b"E22"), (b"M%x,4" % DATA, b"E22"), (b"X%x,2:a" % DATA, b"E22"),
    (b"Z9,0,0", b""), (b"Z2,%x,0" % DATA, b"E22"), (b"Z2,%x,%x" % (DATA, 1 << 24), b"E22"),
    (b"Z2,ffffffffffffffff,2", b"E22"), (b"Z0,1", b"E22"), (b"z0,1234,4", b"E22"), (b"z7,0,0", b""),
    (b"Hx1", b"E22"), (b"Hg99", b"E22"), (b"Hgzz", b"E22"), (b"T99", b"E22"), (b"Tp", b"E22"),
    (b"qXfer:features:read:target.xml:zz,10", b"E22"), (b"qThreadExtraInfo,9", b"E22"),
    (b"vCont;x", b""), (b"vCont;c:zz", b"E22"), (b"vCont;c:9", b"E22"), (b"vCont;cc", b"E22"), (b"vCont;", b""),
    (b"vFoo", b""), (b"vAttach;7", b"E22"), (b"Y", b""), (b"qNope", b""), (b"QNope", b""), (b"D;zz", b"E22"),
    (b"Dx", b"E22"), (b"C", b"E22"), (b"Czz", b"E22"), (b"cfoo", b"E22"), (b"\xff\xfe", b""), (b"", b""),
]


def test_bad_packets_get_error_or_empty_replies(session):
    m = machine()
    d = session(m)
    c = d.client
    got = [(p, c.ask(p)) for p, _ in BAD]
    assert got == BAD
    c.send(b"m" * (MAX_PACKET + 10))                                      # longer than PacketSize
    assert c.read_ack() == b"+" and c.read_packet() == b"E22"
    c.send_raw(b"$" + b"m" * (8 * MAX_PACKET) + b"#00")                   # never buffered whole
    assert c.read_ack() == b"+" and c.read_packet() == b"E22"
    assert m.outcome is None and m.vcpus[0].pc == CODE and m.vcpus[0].retired == 0   # nothing ran
    c.send(b"c")
    assert c.read_packet() == b"W06"
    d.finish()


# the heads of every packet the stub does not resume on, and fragments of their arguments
_FUZZ_HEADS = b"?gGpPmMXZzHTqQirAbBdeEfFhjJlLnNoOtuUVwWxyY!"
_FUZZ_PIECES = (b"", b",", b":", b";", b"-1", b"0", b"1", b"4", b"8", b"p1.1", b"p-1.-1", b"p2.1", b"ff" * 9,
                b"40080000", b"40200000", b"Supported", b"Xfer:features:read:target.xml:0,fff",
                b"Xfer:features:read:", b"fThreadInfo", b"sThreadInfo", b"ThreadExtraInfo,", b"C", b"Attached",
                b"Rcmd,", b"\x00", b"\xff", b"zz", b"-", b"1,1,1", b"}", b"*")
_FUZZ_REPLY = re.compile(rb"(|OK|E[0-9a-f]{2}|[0-9a-fx]*|[lm].*|T05thread:\w+\.?\w*;|QC.*|1|PacketSize=.*)",
                         re.S)


def test_random_packets_get_replies_and_never_end_the_session():
    """1500 packets from a fixed seed, made of the commands that do not resume and fragments of their
    arguments: each gets an answer of a documented form, the run is not disturbed (no traceback ends it)."""
    rng = random.Random(12)
    m = machine(ncpus=2)
    d = Debugged(m)
    try:
        c = d.client
        for _ in range(1500):
            body = bytes([rng.choice(_FUZZ_HEADS)]) + b"".join(rng.choice(_FUZZ_PIECES)
                                                                for _ in range(rng.randrange(5)))
            if body.startswith(b"QStartNoAckMode"):
                continue
            reply = c.ask(body)
            assert _FUZZ_REPLY.fullmatch(reply), (body, reply)
        assert c.ask(b"?") == b"T05thread:01;" and d.thread.is_alive() and d.error is None
        assert m.outcome is None and m.vcpus[0].retired == 0                      # nothing ran
    finally:
        d.abort()


def test_a_client_that_sends_garbage_and_vanishes_does_not_stop_the_run(session):
    d = session(machine(LOOP), max_insns=1_000_000)
    c = d.client
    c.send_raw(b"\x00\xff}}}$#$#}")
    c.send(b"c")
    c.sock.shutdown(socket.SHUT_RDWR)
    assert d.finish().kind is Kind.BUDGET


# -- the CLI's address rules -------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,port", [("tcp::1234", 1234), ("tcp:1234", 1234), ("tcp:127.0.0.1:9", 9),
                                       ("tcp:localhost:0", 0), ("none", None)])
def test_gdb_device(spec, port):
    assert parse_gdb_device(spec) == port


@pytest.mark.parametrize("spec,why", [
    ("tcp:0.0.0.0:1234", "refusing to listen on 0.0.0.0"), ("tcp:10.1.2.3:1", "refusing to listen on 10.1.2.3"),
    ("tcp:[::]:1234", "refusing to listen on ::"), ("tcp::1234,server=on", "chardev options"),
    ("unix:/tmp/s", "only tcp::PORT"), ("tcp::99999", "not a TCP port"), ("tcp::x", "not a TCP port"),
    ("1234", "only tcp::PORT"),
])
def test_gdb_device_refusals(spec, why):
    with pytest.raises(ValueError, match=why):
        parse_gdb_device(spec)


def test_the_stub_listens_on_loopback_only_and_reports_a_busy_port():
    m = machine()
    stub = GdbStub(m, 0)
    port = stub.listen()
    try:
        assert stub.listener.getsockname() == ("127.0.0.1", port)
        other = GdbStub(m, port)
        with pytest.raises(Exception, match=f"cannot listen on 127.0.0.1:{port}"):
            other.listen()
    finally:
        stub.close()


# -- a debugger that only continues changes nothing -----------------------------------------------------------

def _traced_run(guest: str, debug: str | None, alone_slice_insns: int = 0):
    """`guest` on two vCPUs traced in full, under a debugger that only continues ("continue"), that interrupts
    it again and again and continues ("interrupt"), or none; (outcome, records, machine, interrupts)."""
    sink = ListSink()
    m = Machine(tracer=Tracer("*", sinks=[sink]), console=lambda vm, d, s: None, tcg_buffer_size=8 << 20)
    vm = m.add_vm(ncpus=2)
    vm.load(str(guest_elf(guest)))
    m.add_plugin(TlbiTrap(m.interconnect, m.tracer))
    m.scheduler.alone_slice_insns = alone_slice_insns
    if debug is None:
        return m.run(timeout=60), sink.records, m, 0
    d = Debugged(m)
    c = d.client
    stops = 0
    while True:
        # with the continue, in one segment: the stub sees the Ctrl-C at the first slice end after resuming
        c.send_raw(b"$c#63" + (b"\x03" if debug == "interrupt" else b""))
        r = c.read_packet()
        if not r.startswith(b"T02"):
            break
        stops += 1
    assert r == b"W00"
    return d.finish(), sink.records, m, stops


@pytest.mark.parametrize("guest", ["timer_wfi_smp", "smp_remap_local"])
def test_a_debugger_that_continues_or_interrupts_changes_nothing_the_guest_does(guest):
    """timer_wfi_smp: counted slices, a timer deadline, WFI; smp_remap_local: TLBIs broadcast between vCPUs."""
    base, records, m0, _ = _traced_run(guest, None)
    assert base.exit_code == 0 and len(records) > 100
    for how in ("continue", "interrupt"):
        out, got, m, stops = _traced_run(guest, how)
        assert out.exit_code == 0 and m.clock.now() == m0.clock.now()
        assert [(r.event, r.ts, r.fields) for r in got] == [(r.event, r.ts, r.fields) for r in records], how
        assert how == "continue" or stops >= 2


@pytest.mark.parametrize("guest", ["timer_wfi_smp", "smp_remap_local"])
def test_a_vcpu_alone_cut_every_few_instructions_does_the_same(guest):
    """The stub's bound on a vCPU running alone (`Scheduler.alone_slice_insns`, here 997 instructions, so it cuts
    its console output too) stops it at instruction boundaries and leaves the clock alone: the same trace.
    A wall-clock bound (Unicorn's emu_start timeout) printed some PL011 characters twice."""
    base, records, m0, _ = _traced_run(guest, None)
    out, got, m, _ = _traced_run(guest, None, alone_slice_insns=997)
    assert out.exit_code == base.exit_code == 0 and m.clock.now() == m0.clock.now()
    assert [(r.event, r.ts, r.fields) for r in got] == [(r.event, r.ts, r.fields) for r in records]
    assert m.vcpus[0].slices > m0.vcpus[0].slices + 50                        # it was cut
