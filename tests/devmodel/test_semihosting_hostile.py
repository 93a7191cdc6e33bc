"""Hostile guests: random operations with random parameter blocks (pointers into mapped memory, across its
ends, or anywhere), random names (escapes included) and random console input never raise, always give an
architectural answer (a value, an exit, or a blocked SYS_READC), never read the secret next to the root nor
change anything outside it. The default suite runs a bounded number of examples; `-m slow` runs more."""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devmodel.bus import Bus, BusError
from devmodel.semihosting import Semihosting, SysOp

RAM, RAM_SIZE = 0x4000_0000, 0x1_0000
SMALL, SMALL_SIZE = 0x8000_0000, 0x1000          # a second, small region: blocks straddle its end
SECRET = b"TOP SECRET\n"
NAMES = [b":tt", b":semihosting-features", b"f1", b"sub/f2", b"../secret.txt", b"link_out", b"dirlink/f",
         b"/abs/f", b"sub/../../secret.txt", b"", b"sub", b".", b"x" * 300, b"ok\0../secret.txt", b"/tmp/qemu-042"]
OPS = [int(o) for o in SysOp] + [0x0B, 0x42, 0x1_0000_0003, 0xFFFF_FFFF]

pointer = st.one_of(
    st.integers(RAM, RAM + RAM_SIZE + 16), st.integers(SMALL + SMALL_SIZE - 40, SMALL + SMALL_SIZE + 8),
    st.integers(0, 2**64 - 1), st.sampled_from([0, RAM, SMALL + SMALL_SIZE - 8, 2**64 - 8]))
field = st.one_of(pointer, st.integers(0, 16), st.integers(0, 2**64 - 1), st.sampled_from([2**63, 2**64 - 1]))
call = st.tuples(st.sampled_from(OPS), st.lists(field, min_size=0, max_size=4), pointer,
                 st.sampled_from(NAMES), st.booleans())
CALLS = st.lists(call, min_size=1, max_size=30)


def _world(tmp: Path) -> Path:
    root = tmp / "root"
    (root / "sub").mkdir(parents=True)
    (root / "f1").write_bytes(b"file one\n")
    (tmp / "secret.txt").write_bytes(SECRET)
    (tmp / "outside").mkdir()
    (tmp / "outside" / "f").write_bytes(SECRET)
    os.symlink("../secret.txt", root / "link_out")
    os.symlink("../outside", root / "dirlink")
    return root


def _outside(tmp: Path) -> dict:
    return {str(p.relative_to(tmp)): p.read_bytes() if p.is_file() and not p.is_symlink() else None
            for p in tmp.rglob("*") if "root" not in p.relative_to(tmp).parts}


def _run(calls, stdin_data: bytes) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sh-hostile-"))
    try:
        root = _world(tmp)
        before = _outside(tmp)
        bus = Bus()
        bus.add_ram(RAM, RAM_SIZE)
        bus.add_ram(SMALL, SMALL_SIZE)
        pending = bytearray(stdin_data)

        def stdin(n: int) -> bytes:
            out = bytes(pending[:n])
            del pending[:n]
            return out

        out: list[bytes] = []
        sh = Semihosting(lambda d, s: out.append(d), root=root, stdin=stdin, log=lambda c, m: None)
        try:
            for op, fields, where, name, name_first in calls:
                # plant a name, then the block (its first field pointing at the name when asked)
                name_at = RAM + 0x100
                bus.write_bytes(name_at, name + b"\0")
                if name_first and fields:
                    fields = [name_at, *fields[1:]]
                block = struct.pack(f"<{len(fields)}Q", *fields)
                try:
                    bus.write_bytes(where, block)
                except BusError:
                    pass                                 # a block that does not fit: the call sees junk
                r = sh.call(op, where, bus)
                assert isinstance(r.ret, int) or r.exit_status is not None or r.blocked
                assert r.ret is None or -1 <= r.ret < 2**64
                assert isinstance(sh.errno, int) and sh.errno >= 0
                assert len(sh.handles) <= 1024
            assert SECRET not in bus.read_bytes(RAM, RAM_SIZE) + bus.read_bytes(SMALL, SMALL_SIZE)
            assert all(SECRET not in d for d in out)
        finally:
            sh.close()
        assert _outside(tmp) == before
    finally:
        shutil.rmtree(tmp)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CALLS, st.binary(max_size=64))
def test_random_calls_never_raise_nor_escape(calls, stdin_data):
    _run(calls, stdin_data)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CALLS, st.binary(max_size=64))
def test_random_calls_long_campaign(calls, stdin_data):
    _run(calls, stdin_data)


class _Endless:
    """Guest memory with no NUL anywhere: the VA space wraps, so a SYS_WRITE0 there never ends by itself."""

    def read_bytes(self, addr: int, size: int) -> bytes:
        return b"A" * size

    def write_bytes(self, addr: int, data: bytes) -> None:
        raise BusError(addr, len(data), "read-only")


def test_a_string_without_end_stops_when_the_run_is_overdue():
    """SYS_WRITE0 of a string whose NUL never comes streams it 1 MiB at a time and asks `overdue()` after each
    piece: the call ends `interrupted` (no X0, the vCPU stops on its HLT) with what it streamed written."""
    out, asked = [], []
    sh = Semihosting(lambda data, stream: out.append(len(data)), overdue=lambda: asked.append(1) or len(asked) >= 3)
    res = sh.call(int(SysOp.SYS_WRITE0), 0xFFFF_FFFF_FFFF_F000, _Endless())
    assert (res.interrupted, res.ret, res.exit_status, res.blocked) == (True, None, None, False)
    assert len(asked) == 3 and out == [1 << 20] * 3
