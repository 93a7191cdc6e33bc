"""Every semihosting operation through the pure handler: results, errno values and the console, as
"Semihosting for AArch32 and AArch64" (2020Q4) specifies and QEMU 7.2 answers (test_semihosting_qemu.py runs
the same calls under the real QEMU)."""
from __future__ import annotations

import errno
import struct

import pytest

from devmodel.semihosting import (FEATURES, SH_EXT_EXIT_EXTENDED, SH_EXT_STDOUT_STDERR, UNSUPPORTED_STATUS,
                                  HeapInfo, Semihosting, SysOp, heapinfo_for_layout, qemu_cmdline)
from devmodel.trace import ListSink, Tracer

from semihosting_env import RAM, RAM_SIZE, UNMAPPED, Env, Input

DEAD = 0xDEADBEEF


def test_operation_numbers_are_the_specs():
    assert {op.name: op.value for op in SysOp} == {
        "SYS_OPEN": 0x01, "SYS_CLOSE": 0x02, "SYS_WRITEC": 0x03, "SYS_WRITE0": 0x04, "SYS_WRITE": 0x05,
        "SYS_READ": 0x06, "SYS_READC": 0x07, "SYS_ISERROR": 0x08, "SYS_ISTTY": 0x09, "SYS_SEEK": 0x0A,
        "SYS_FLEN": 0x0C, "SYS_TMPNAM": 0x0D, "SYS_REMOVE": 0x0E, "SYS_RENAME": 0x0F, "SYS_CLOCK": 0x10,
        "SYS_TIME": 0x11, "SYS_SYSTEM": 0x12, "SYS_ERRNO": 0x13, "SYS_GET_CMDLINE": 0x15, "SYS_HEAPINFO": 0x16,
        "SYS_EXIT": 0x18, "SYS_SYNCCACHE": 0x19, "SYS_EXIT_EXTENDED": 0x20, "SYS_ELAPSED": 0x30,
        "SYS_TICKFREQ": 0x31}
    assert FEATURES == b"SHFB\x03" and SH_EXT_EXIT_EXTENDED == 1 and SH_EXT_STDOUT_STDERR == 2


# -- console --------------------------------------------------------------------------------------------
def test_writec_write0_go_to_stdout_and_corrupt_x0():
    env = Env()
    assert env.call(0x03, param=env.string("Q")).ret == DEAD
    assert env.call(0x04, param=env.string("hello")).ret == DEAD
    assert env.call(0x04, param=env.string("")).ret == DEAD            # nothing to print
    assert env.out == [(1, b"Q"), (1, b"hello")]


def test_write0_reads_only_the_pages_the_string_occupies():
    env = Env()
    end = RAM + RAM_SIZE
    env.bus.write_bytes(end - 3, b"ab\0")                                # NUL in the last bytes of RAM
    assert env.call(0x04, param=end - 3).ret == DEAD and env.out == [(1, b"ab")]
    env.bus.write_bytes(end - 2, b"xy")                                  # runs off the end of RAM
    errno_before = env.errno
    assert env.call(0x04, param=end - 2).ret == DEAD
    assert env.out == [(1, b"ab")] and env.errno == errno_before        # nothing printed, errno untouched
    assert env.log[-1][0] == "guest_errors"


def test_write0_of_a_huge_string_streams_in_bounded_pieces():
    env = Env()
    env.bus.write_bytes(RAM, b"A" * (RAM_SIZE - 1) + b"\0")              # a 1 MiB - 1 string
    assert env.call(0x04, param=RAM).ret == DEAD
    assert env.stream(1) == b"A" * (RAM_SIZE - 1)
    env.out.clear()
    env.bus.write_bytes(RAM + RAM_SIZE - 1, b"A")                        # no NUL before the end of RAM
    assert env.call(0x04, param=RAM).ret == DEAD
    assert all(len(d) <= 1 << 20 for _, d in env.out)                    # at most what the model holds


def test_tt_opens_stdin_stdout_stderr_by_mode_and_handles_are_lowest_free():
    env = Env(stdin=Input(b"xyz"))
    handles = [env.open(":tt", mode) for mode in (0, 4, 8, 3, 7, 11)]
    assert handles == [1, 2, 3, 4, 5, 6]
    assert env.write(2, b"out") == 0 and env.write(3, b"err") == 0 and env.write(6, b"e2") == 0
    assert env.stream(1) == b"out" and env.stream(2) == b"erre2"
    assert env.write(1, b"no") == 2 and env.errno == errno.EBADF         # stdin is not writable
    assert env.readh(2, 4)[0] == 4 and env.errno == errno.EBADF          # nor stdout readable
    assert env.ret(0x02, 2) == 0 and env.open(":tt", 4) == 2             # closed slot reused
    assert env.ret(0x02, 2) == 0 and env.ret(0x02, 2) == -1 and env.errno == errno.EBADF


def test_tt_matches_the_c_string_whatever_the_length_field():
    env = Env()
    assert env.ret(0x01, env.string(":tt"), 4, 0) == 1
    assert env.ret(0x01, env.string(":tt"), 4, 99) == 2


def test_console_read_is_one_read_of_what_there_is():
    src = Input(b"abcdefgh")
    env = Env(stdin=src)
    h = env.open(":tt", 0)
    assert env.readh(h, 4) == (0, b"abcd")
    assert env.readh(h, 10) == (6, b"efgh")                              # partial: 4 of 10
    assert env.readh(h, 10) == (10, b"")                                 # end of input: nothing read
    assert max(src.asked) <= 64 << 10


def test_tt_is_a_terminal_unless_told_and_not_seekable():
    env = Env()
    h = env.open(":tt", 4)
    assert env.ret(0x09, h) == 1
    env = Env(isatty=lambda stream: stream != 1)
    out, err = env.open(":tt", 4), env.open(":tt", 8)
    assert env.ret(0x09, out) == 0 and env.errno == errno.ENOTTY
    assert env.ret(0x09, err) == 1
    assert env.ret(0x0A, out, 0) == -1 and env.errno == errno.ESPIPE
    assert env.ret(0x0C, out) == 0


def test_readc_returns_input_bytes_then_blocks_like_qemu():
    env = Env(stdin=Input(b"\xffA"))
    assert env.call(0x07, param=0).ret == 0xFF
    assert env.call(0x07, param=0).ret == ord("A")
    r = env.call(0x07, param=0)
    assert r.blocked and r.ret is None and r.exit_status is None and r.name == "SYS_READC"
    assert Env(stdin=Input(), readc_eof=-1).call(0x07, param=0).ret == -1


def test_input_not_there_yet_blocks_without_consuming_anything():
    pending = [None, None, b"xy", None, b"z", b""]          # a non-blocking source: None = nothing yet

    def stdin(n):
        head = pending[0]
        if head is None or len(head) <= n:
            return pending.pop(0)
        pending[0] = head[n:]
        return head[:n]
    env = Env(stdin=stdin, readc_eof=-1)
    r = env.call(0x07, param=0)
    assert r.blocked and r.ret is None and r.name == "SYS_READC"     # not the EOF value: input may come
    h = env.open(":tt", 0)
    buf = env.alloc(8)
    r = env.call(0x06, h, buf, 8)
    assert r.blocked and r.name == "SYS_READ" and env.read(buf, 8) == bytes(8) and env.errno == 0
    assert env.call(0x07, param=0).ret == ord("x")
    assert env.readh(h, 8) == (7, b"y")                       # what there is, as read(2) on a pipe
    assert env.call(0x06, h, buf, 8).blocked
    assert env.readh(h, 8) == (7, b"z")
    assert env.call(0x07, param=0).ret == -1                  # now the end: readc_eof


def test_readc_and_read_share_the_input():
    env = Env(stdin=Input(b"abc"))
    assert env.call(0x07, param=0).ret == ord("a")
    assert env.readh(env.open(":tt", 0), 8) == (6, b"bc")


def test_console_input_is_not_lost_when_the_buffer_faults():
    env = Env(stdin=Input(b"keep"))
    h = env.open(":tt", 0)
    assert env.ret(0x06, h, UNMAPPED, 4) == 4 and env.errno == errno.EFAULT
    assert env.readh(h, 4) == (0, b"keep")


# -- the features file ------------------------------------------------------------------------------------
def test_semihosting_features_file():
    env = Env()
    h = env.open(":semihosting-features", 0)
    assert env.ret(0x0C, h) == 5
    assert env.readh(h, 8) == (3, FEATURES)
    assert env.ret(0x0A, h, 4) == 0 and env.readh(h, 1) == (0, b"\x03")
    assert env.ret(0x0A, h, 5) == 0 and env.readh(h, 1) == (1, b"")
    assert env.ret(0x0A, h, 6) == -1 and env.errno == errno.EINVAL
    assert env.ret(0x09, h) == 0 and env.errno == errno.ENOTTY
    assert env.write(h, b"x") == 1 and env.errno == errno.EBADF
    h2 = env.open(":semihosting-features", 1)                            # several opens at once
    assert h2 != h and env.readh(h2, 5) == (0, FEATURES)
    for mode in range(2, 12):
        assert env.open(":semihosting-features", mode) == -1 and env.errno == errno.EACCES


# -- errors, status ---------------------------------------------------------------------------------------
def test_open_mode_and_length_validation():
    env = Env()
    assert env.open("x", 12) == -1 and env.errno == errno.EINVAL
    name = env.string("data.txt")
    assert env.ret(0x01, name, 0, 3) == -1 and env.errno == errno.EINVAL     # no NUL at [3]
    assert env.ret(0x01, name, 0, 1 << 40) == -1 and env.errno == errno.ENAMETOOLONG
    assert env.ret(0x01, name, 0, 8) == -1 and env.errno == errno.ENOENT     # valid, but no root


def test_handles_are_ints_as_in_qemu():
    env = Env()
    h = env.open(":tt", 4)
    assert env.ret(0x02, (1 << 32) + h) == 0                             # the high half is dropped
    for bad in (0, -1, 77, 1 << 31):
        assert env.ret(0x02, bad) == -1 and env.errno == errno.EBADF
        assert env.ret(0x0C, bad) == -1 and env.errno == errno.EBADF
        assert env.ret(0x09, bad) == -1 and env.errno == errno.EBADF
        assert env.ret(0x0A, bad, 0) == -1 and env.errno == errno.EBADF
        assert env.write(bad, b"abc") == 3 and env.errno == errno.EBADF
        assert env.readh(bad, 3)[0] == 3 and env.errno == errno.EBADF


def test_too_many_handles_is_emfile():
    env = Env()
    got = [env.open(":tt", 4) for _ in range(1024)]
    assert got == list(range(1, 1025))
    assert env.open(":tt", 4) == -1 and env.errno == errno.EMFILE


def test_iserror_errno_and_errno_persists():
    env = Env()
    assert env.ret(0x08, -1) == 1 and env.ret(0x08, 1 << 63) == 1 and env.ret(0x08, 5) == 0
    assert env.ret(0x08, 0) == 0
    env.ret(0x02, 9)
    assert env.errno == errno.EBADF
    assert env.open(":tt", 0) == 1 and env.errno == errno.EBADF         # success leaves errno alone


def test_exit_statuses():
    env = Env()
    for op, name in ((0x18, "SYS_EXIT"), (0x20, "SYS_EXIT_EXTENDED")):
        r = env.call(op, 0x20026, 7)
        assert (r.ret, r.exit_status, r.name) == (None, 7, name)
        assert env.call(op, 0x20026, 0x1_0000_012C).exit_status == 0x2C  # exit(3) keeps the low byte
        assert env.call(op, 0x20023, 0).exit_status == 1                 # not ApplicationExit
    assert env.call(0x18, param=UNMAPPED).ret == -1 and env.errno == errno.EFAULT


def test_unsupported_operation_ends_the_run_as_qemu_abort():
    env = Env()
    for op in (0x00, 0x0B, 0x14, 0x17, 0x21, 0x32, 0x100, 0xFFFF_FFFF):
        r = env.call(op, param=0)
        assert r.exit_status == UNSUPPORTED_STATUS == 134 and r.ret is None
        assert r.fatal == f"Unsupported SemiHosting SWI {op:#04x}"
    assert env.log[-1][0] == "unimp"
    # only W0 is the operation number (spec: "must not assume that the top 32 bits of X0 are 0")
    assert env.sh.call((0xABCD << 32) | 0x10, 0, env.bus).ret == 0


def test_synccache_answers_zero_as_qemu():
    assert Env().ret(0x19, 0, 0) == 0


# -- time -------------------------------------------------------------------------------------------------
def test_time_is_virtual_by_default():
    ticks = [0]
    env = Env(clock=lambda: ticks[0], tick_freq=1000, epoch=1_700_000_000)
    assert env.call(0x10, param=0).ret == 0 and env.call(0x11, param=0).ret == 1_700_000_000
    ticks[0] = 12_345                                                    # 12.345 s
    assert env.call(0x10, param=0).ret == 1234                           # centiseconds
    assert env.call(0x11, param=0).ret == 1_700_000_012
    assert env.call(0x31, param=0).ret == 1000
    slot = env.alloc(8)
    assert env.call(0x30, param=slot).ret == 0 and env.bus.read64(slot) == 12_345
    assert env.call(0x30, param=UNMAPPED).ret == -1 and env.errno == errno.EFAULT
    assert Env(time=lambda: 42).call(0x11, param=0).ret == 42           # host time when asked


def test_default_tick_frequency_is_qemus():
    assert Env().call(0x31, param=0).ret == 1_000_000_000


# -- command line, heap, tmpnam ---------------------------------------------------------------------------
def test_get_cmdline_buffer_rules():
    env = Env(cmdline=qemu_cmdline("guest.elf", "  a b   c "))
    assert qemu_cmdline("guest.elf", "  a b   c ") == "guest.elf a b c" and qemu_cmdline("k") == "k"
    buf = env.alloc(64)
    blk = env.block(buf, 16)                                             # exactly len + NUL
    assert env.ret(0x15, param=blk) == 0
    assert env.read(buf, 16) == b"guest.elf a b c\0" and env.bus.read64(blk + 8) == 15
    blk = env.block(buf, 15)
    assert env.ret(0x15, param=blk) == -1 and env.errno == errno.E2BIG
    assert env.bus.read64(blk + 8) == 15                                 # untouched
    assert env.ret(0x15, UNMAPPED, 64) == -1 and env.errno == errno.EFAULT
    empty = Env()
    b2 = empty.alloc(4)
    assert empty.ret(0x15, b2, 1) == 0 and empty.read(b2, 1) == b"\0"


def test_heapinfo_writes_through_the_pointer():
    info = HeapInfo(0x4010_0000, 0x4800_0000, 0x4800_0000, 0x4010_0000)
    env = Env(heap=info)
    block = env.alloc(32)
    assert env.ret(0x16, block) == 0
    assert struct.unpack("<4Q", env.read(block, 32)) == info
    assert env.ret(0x16, UNMAPPED) == -1 and env.errno == errno.EFAULT
    block = env.alloc(32)
    assert Env().sh.call(0x16, env.block(block), env.bus).ret == 0       # no layout given: zeros
    assert env.read(block, 32) == bytes(32)


def test_heapinfo_layout_is_the_largest_gap():
    ram, size = 0x4000_0000, 128 << 20
    segs = [(0x4008_0000, 0x43A8), (0x4008_43B0, 0x368), (0x4008_5000, 0x6_3000)]
    assert heapinfo_for_layout(ram, size, segs) == HeapInfo(0x400E_8000, 0x4800_0000, 0x4800_0000, 0x400E_8000)
    # a blob near the top: the gap below the image wins; equal gaps: the first
    assert heapinfo_for_layout(ram, size, [(0x4000_1000, 0x1000), (0x4700_0000, 0x100_0000)]) == \
        HeapInfo(0x4000_2000, 0x4700_0000, 0x4700_0000, 0x4000_2000)
    assert heapinfo_for_layout(0, 0x100, [(0x40, 0x40), (0xC0, 0x40)]).heap_base == 0
    assert heapinfo_for_layout(ram, size, []) == HeapInfo(ram, ram + size, ram + size, ram)
    assert heapinfo_for_layout(ram, size, [(ram, size)]) == HeapInfo(0, 0, 0, 0)
    assert heapinfo_for_layout(ram, 0, segs) == HeapInfo(0, 0, 0, 0)
    # blobs outside RAM, of size 0, or straddling its ends are clipped or ignored
    assert heapinfo_for_layout(ram, size, [(0, 0x1000), (ram + 0x1000, 0), (ram - 0x10, 0x20),
                                           (ram + size - 0x10, 0x100)]) == \
        HeapInfo(ram + 0x10, ram + size - 0x10, ram + size - 0x10, ram + 0x10)


def test_tmpnam_format_and_buffer_length():
    env = Env(tmpnam_pid=0x1234)
    buf = env.alloc(64)
    assert env.ret(0x0D, buf, 0x142, 64) == 0                            # the identifier's low byte
    assert env.read(buf, 18) == b"/tmp/qemu-123442\0\0"[:18]
    name = b"/tmp/qemu-123407\0"
    env.ret(0x02, 99)                                                    # errno = EBADF
    assert env.ret(0x0D, buf, 7, len(name) - 1) == -1 and env.errno == errno.EBADF   # errno untouched
    assert env.ret(0x0D, buf, 7, len(name)) == 0 and env.read(buf, len(name)) == name
    assert env.ret(0x0D, UNMAPPED, 7, 64) == -1 and env.errno == errno.EFAULT


# -- tracing ----------------------------------------------------------------------------------------------
def test_semihosting_call_event_when_enabled_only():
    sink = ListSink()
    tracer = Tracer(sinks=[sink], events="semihosting_call")
    env = Env(tracer=tracer)
    env.call(0x03, param=env.string("x"))
    env.call(0x42, param=7)
    recs = [r for r in sink.records if r.event == "semihosting_call"]
    assert [(r["op"], r["name"], r["ret"]) for r in recs] == [(3, "SYS_WRITEC", DEAD), (0x42, "0x42", None)]
    assert recs[1]["param"] == 7 and recs[0]["cpu"] == 0


def test_close_releases_everything():
    env = Env()
    env.open(":tt", 4)
    env.sh.close()
    assert env.sh.handles == {}


@pytest.mark.parametrize("op", sorted(int(o) for o in SysOp if o not in (SysOp.SYS_EXIT,
                                                                          SysOp.SYS_EXIT_EXTENDED)))
def test_every_operation_with_an_unmapped_block_returns(op):
    env = Env(stdin=Input(b""), readc_eof=-1)
    r = env.sh.call(op, UNMAPPED, env.bus)
    assert r.exit_status is None and r.ret is not None
