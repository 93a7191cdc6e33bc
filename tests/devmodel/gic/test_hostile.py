"""Hostile guests: random streams of MMIO accesses (any offset, size, value), ICC_* accesses, input line changes,
ITS commands and MSIs never raise, and the engine's cached state always equals what the interrupts' own state
implies (check_consistent). The ITS reads only the address space it was given."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devmodel.bus import Bus
from devmodel.gic import ICC_BY_NAME, GicV2, GicV3
from devmodel.gic.its import Its
from devmodel.gic.its_cmd import LAYOUTS, OPCODE_OF
from devmodel.gic.lpi import LPI_BASE

from .helpers import check_consistent

RAM, RAM_SIZE = 0x4000_0000, 0x4_0000
u64 = st.integers(0, (1 << 64) - 1)
size = st.sampled_from([1, 2, 4, 8, 3])
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def interesting_offset(limit):
    """Mostly register offsets (aligned), sometimes anything."""
    return st.one_of(st.integers(0, limit // 4 - 1).map(lambda n: 4 * n), st.integers(0, limit + 0x100))


def mask(value, sz):
    return value & ((1 << (8 * min(sz, 8))) - 1)


v2_ops = st.lists(st.one_of(
    st.tuples(st.just("dist"), st.integers(0, 1), interesting_offset(0x1000), size, u64, st.booleans()),
    st.tuples(st.just("cpu"), st.integers(0, 1), interesting_offset(0x1004), size, u64, st.booleans()),
    st.tuples(st.just("spi"), st.integers(32, 287), st.booleans()),
    st.tuples(st.just("ppi"), st.integers(0, 1), st.integers(16, 31), st.booleans()),
), max_size=80)


@SETTINGS
@given(v2_ops)
def test_gicv2_random_mmio_and_lines(ops):
    g = GicV2(2, 288)
    for op in ops:
        if op[0] in ("dist", "cpu"):
            _, cpu, off, sz, value, is_write = op
            dev = g.distributor_for(cpu) if op[0] == "dist" else g.cpu_interface_for(cpu)
            if is_write:
                dev.write(off, mask(value, sz), sz)
            else:
                assert 0 <= dev.read(off, sz) < 1 << (8 * sz)
        elif op[0] == "spi":
            g.set_spi(op[1], op[2])
        else:
            g.set_ppi(op[1], op[2], op[3])
        check_consistent(g)
    assert isinstance(g.state(), dict)


def its_command():
    def build(name, values):
        fields = {f.name.lower(): (v % (1 << f.width)) << f.shift
                  for f, v in zip(LAYOUTS[name].fields[1:], values)}
        return name, fields
    names = st.sampled_from(sorted(OPCODE_OF))
    small = st.one_of(st.integers(0, 8), st.integers(0, (1 << 36) - 1), st.sampled_from([8192, 8193, 8200, 40000]))
    return st.tuples(names, st.lists(small, min_size=4, max_size=4)).map(lambda t: build(*t))


ICC_NAMES = sorted(ICC_BY_NAME)
v3_ops = st.lists(st.one_of(
    st.tuples(st.just("dist"), interesting_offset(0x10000), size, u64, st.booleans()),
    st.tuples(st.just("redist"), interesting_offset(0x40000), size, u64, st.booleans()),
    st.tuples(st.just("its"), interesting_offset(0x20000), size, u64, st.booleans()),
    st.tuples(st.just("icc"), st.integers(0, 1), st.sampled_from(ICC_NAMES), u64, st.booleans()),
    st.tuples(st.just("ram"), st.integers(0, RAM_SIZE // 8 - 1), u64),
    st.tuples(st.just("cmd"), its_command()),
    st.tuples(st.just("msi"), st.integers(0, 1 << 32), st.integers(0, 1 << 32)),
    st.tuples(st.just("spi"), st.integers(32, 255), st.booleans()),
    st.tuples(st.just("ppi"), st.integers(0, 1), st.integers(16, 31), st.booleans()),
), max_size=60)


def setup_v3():
    bus = Bus()
    bus.add_ram(RAM, RAM_SIZE)
    g = GicV3(2, dma=bus)
    its = Its(g)
    # a plausible starting point, so random streams reach the LPI and ITS paths
    g.distributor.write(0, 3, 4)
    for c in range(2):
        g.cpu_interface(c).write_sysreg("ICC_PMR_EL1", 0xFF)
        g.cpu_interface(c).write_sysreg("ICC_IGRPEN1_EL1", 1)
        g.redistributors.write(c * 0x20000 + 0x70, RAM + 0x1000 | 13, 8)
        g.redistributors.write(c * 0x20000 + 0x78, RAM + 0x10000 + c * 0x4000, 8)
        g.redistributors.write(c * 0x20000, 1, 4)
    its.write(0x100, 1 << 63 | 0 << 8 | RAM + 0x20000, 8)            # 4 KiB pages
    its.write(0x108, 1 << 63 | 0 << 8 | RAM + 0x21000, 8)
    its.write(0x80, 1 << 63 | RAM + 0x22000, 8)
    its.write(0, 1, 4)
    return bus, g, its


@SETTINGS
@given(v3_ops)
def test_gicv3_its_random_streams(ops):
    bus, g, its = setup_v3()
    slot = 0
    for op in ops:
        kind = op[0]
        if kind in ("dist", "redist", "its"):
            _, off, sz, value, is_write = op
            dev = {"dist": g.distributor, "redist": g.redistributors, "its": its}[kind]
            if is_write:
                dev.write(off, mask(value, sz), sz)
            else:
                assert 0 <= dev.read(off, sz) < 1 << (8 * sz)
        elif kind == "icc":
            _, cpu, name, value, is_write = op
            icc = g.cpu_interface(cpu)
            if is_write:
                icc.write_sysreg(name, value)
            else:
                assert 0 <= icc.read_sysreg(name) < 1 << 64
        elif kind == "ram":
            bus.write(RAM + 8 * op[1], op[2], 8)
        elif kind == "cmd":
            from devmodel.gic.its_cmd import encode
            name, fields = op[1]
            bus.write_bytes(RAM + 0x22000 + 32 * slot, encode(name, **fields))
            slot = (slot + 1) % 128
            its.write(0x88, 32 * slot, 8)
        elif kind == "msi":
            assert its.msi(op[1], op[2]) in (True, False)
        elif kind == "spi":
            g.set_spi(op[1], op[2])
        else:
            g.set_ppi(op[1], op[2], op[3])
        check_consistent(g)
        for rd in g.redists:                                          # the pending mirror is what memory says
            if rd.enabled_lpis and rd.lpis:
                base = rd.rd_regs.get_field("GICR_PENDBASER", "PA")
                for intid in rd.lpis:
                    assert LPI_BASE <= intid < rd.lpi_end
                    if RAM <= base + intid // 8 < RAM + RAM_SIZE:
                        assert bus.read(base + intid // 8, 1) >> (intid % 8) & 1
    st_ = its.state()
    assert st_["creadr"] % 32 == 0 and len(st_["errors"]) <= 256


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_any_32_bytes_in_the_queue_are_executed_or_refused(raw):
    bus, g, its = setup_v3()
    bus.write_bytes(RAM + 0x22000, raw)
    its.write(0x88, 32, 8)
    assert its.read(0x90, 8) in (32, 1)                               # executed (or refused), or stalled
    check_consistent(g)
