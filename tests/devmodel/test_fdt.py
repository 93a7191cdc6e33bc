"""Flattened device tree (devmodel/fdt.py) against the Devicetree Specification v0.4 chapter 5, with dtc
(Debian device-tree-compiler) as the oracle where installed, and hostile blobs that must end in FdtError."""
import shutil
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devmodel.fdt import (EMPTY, FDT_MAGIC, MAX_DEPTH, Fdt, FdtError, Node, cells, parse, string, strings,
                          to_string, to_strings, to_u32s, to_u64s, u32, u64)

DTC = shutil.which("dtc")
needs_dtc = pytest.mark.skipif(DTC is None, reason="dtc not installed (Debian: apt-get install device-tree-compiler)")

FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9


def sample() -> Fdt:
    root = Node("", {"#address-cells": u32(2), "#size-cells": u32(2), "compatible": string("test,board")})
    root.add(Node("memory@40000000", {"device_type": string("memory"), "reg": cells((0x4000_0000, 2), (1 << 27, 2))}))
    intc = root.add(Node("intc@8000000", {"phandle": u32(1), "interrupt-controller": EMPTY,
                                          "#interrupt-cells": u32(3), "#address-cells": u32(2),
                                          "#size-cells": u32(2), "ranges": EMPTY,
                                          "reg": cells((0x800_0000, 2), (0x1_0000, 2))}))
    intc.add(Node("its@8080000", {"msi-controller": EMPTY, "compatible": strings("arm,gic-v3-its"),
                                  "reg": cells((0x808_0000, 2), (0x2_0000, 2))}))
    root.add(Node("uart@9000000", {"compatible": strings("arm,pl011", "arm,primecell"), "interrupt-parent": u32(1),
                                   "interrupts": u32(0, 1, 4), "reg": cells((0x900_0000, 2), (0x1000, 2))}))
    root.add(Node("chosen", {"bootargs": string("a b c"), "stdout-path": string("/uart@9000000")}))
    return Fdt(root, reserved=[(0x4800_0000, 0x1000)], boot_cpuid_phys=0)


def header(blob: bytes) -> dict:
    names = ("magic", "totalsize", "off_dt_struct", "off_dt_strings", "off_mem_rsvmap", "version",
             "last_comp_version", "boot_cpuid_phys", "size_dt_strings", "size_dt_struct")
    return dict(zip(names, struct.unpack_from(">10I", blob)))


# -- encoders ---------------------------------------------------------------------------------------------
def test_property_encoders_and_decoders():
    assert u32(1, 0xFFFF_FFFF) == b"\0\0\0\1\xff\xff\xff\xff" and to_u32s(u32(7, 8)) == (7, 8)
    assert u64(0x1_0000_0002) == b"\0\0\0\1\0\0\0\2" and to_u64s(u64(5, 6)) == (5, 6)
    assert cells((0x4000_0000, 2), (0x1000, 1)) == b"\0\0\0\0\x40\0\0\0\0\0\x10\0"
    assert strings("arm,pl011", "arm,primecell") == b"arm,pl011\0arm,primecell\0"
    assert to_strings(strings("a", "bc")) == ("a", "bc") and to_string(string("x")) == "x"
    with pytest.raises(FdtError, match="does not fit"):
        cells((1 << 32, 1))
    with pytest.raises(FdtError):
        u32(-1)
    with pytest.raises(FdtError):
        to_u32s(b"\0\0\0")
    with pytest.raises(FdtError):
        to_string(strings("a", "b"))
    with pytest.raises(FdtError):
        to_strings(b"no nul")


def test_node_editing_keeps_libfdt_insertion_order():
    n = Node("x", {"a": u32(1), "b": u32(2)})
    n.set("c", u32(3), first=True)               # libfdt's fdt_setprop puts a new property first
    n.set("a", u32(9), first=True)               # an existing one keeps its place
    assert list(n.props) == ["c", "a", "b"] and n.u32s("a") == (9,)
    n.add(Node("k1"))
    n.add(Node("k0"), first=True)                # fdt_add_subnode: before the other subnodes
    assert [c.name for c in n.children] == ["k0", "k1"]
    with pytest.raises(FdtError, match="duplicate"):
        n.add(Node("k1"))
    for bad in ("", "a/b", "nul\0"):
        with pytest.raises(FdtError):
            n.add(Node(bad))
    with pytest.raises(FdtError):
        n.set("", b"")
    with pytest.raises(FdtError):
        n.set("bad\ud800", b"")
    assert [p for p, _ in Node("", children=[n]).walk()] == ["/", "/x", "/x/k0", "/x/k1"]


def test_names_and_strings_are_utf8_and_byte_transparent():
    t = Fdt(Node("", {"model": string("caf\u00e9 \u20ac")}, [Node("n\u00e9@1")]))
    assert parse(t.to_bytes()).root == t.root
    assert parse(t.to_bytes()).root.string("model") == "caf\u00e9 \u20ac"
    raw = Fdt(Node("", {"x": b"\xff\xfe\0"})).to_bytes()
    back = parse(raw)
    assert back.to_bytes() == raw and back.root.string("x") == "\udcff\udcfe"


# -- flattener --------------------------------------------------------------------------------------------
def test_layout_follows_the_specification():
    blob = sample().to_bytes()
    h = header(blob)
    assert h["magic"] == FDT_MAGIC and h["version"] == 17 and h["last_comp_version"] == 16
    assert h["totalsize"] == len(blob)
    assert h["off_mem_rsvmap"] == 40 and h["off_mem_rsvmap"] % 8 == 0           # 5.3: 8-byte aligned
    assert struct.unpack_from(">4Q", blob, 40) == (0x4800_0000, 0x1000, 0, 0)    # entry + terminator
    assert h["off_dt_struct"] == 40 + 32 and h["off_dt_struct"] % 4 == 0         # 5.4: 4-byte aligned
    assert h["off_dt_strings"] == h["off_dt_struct"] + h["size_dt_struct"]
    assert h["off_dt_strings"] + h["size_dt_strings"] == len(blob)
    tokens = blob[h["off_dt_struct"]:h["off_dt_strings"]]
    assert struct.unpack_from(">I", tokens)[0] == FDT_BEGIN_NODE and tokens[-4:] == struct.pack(">I", FDT_END)
    table = blob[h["off_dt_strings"]:].split(b"\0")[:-1]
    assert len(table) == len(set(table)), "each property name is stored once"
    assert set(table) == {k.encode() for _, n in sample().root.walk() for k in n.props}


def test_padding_to_min_size_is_recorded_in_totalsize():
    blob = sample().to_bytes(min_size=0x10_0000)
    assert len(blob) == 0x10_0000 == header(blob)["totalsize"]
    assert parse(blob).root == sample().root


def test_round_trip_keeps_everything():
    t = sample()
    back = parse(t.to_bytes())
    assert back.root == t.root and back.reserved == t.reserved and back.boot_cpuid_phys == 0
    assert list(back.find("/chosen").props) == ["bootargs", "stdout-path"]
    assert back.find("/intc@8000000/its@8080000").strings("compatible") == ("arm,gic-v3-its",)
    assert back.find("/nope") is None and back.find("/") is back.root


names = st.text("abcdefghijklmnopqrstuvwxyz0123456789,._+-", min_size=1, max_size=12)
values = st.binary(max_size=24)


@st.composite
def trees(draw, depth=0):
    # "x-" keeps clear of the names dtc gives a meaning (name, reg, phandle, ...), which it checks or drops
    props = draw(st.dictionaries(names.map(lambda s: "x-" + s + ("#" if len(s) % 5 == 0 else "")), values,
                                 max_size=4))
    kids = draw(st.lists(names, max_size=0 if depth >= 3 else 3, unique=True))
    return Node("" if depth == 0 else draw(names), props,
                [_named(draw(trees(depth + 1)), k) for k in kids])


def _named(node: Node, name: str) -> Node:
    node.name = name
    return node


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees(), st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(1, 2**64 - 1)), max_size=3))
def test_random_trees_round_trip(root, reserved):
    t = Fdt(root, reserved)
    back = parse(t.to_bytes())
    assert back.root == root and back.reserved == reserved


# -- dtc as the oracle ------------------------------------------------------------------------------------
@needs_dtc
def test_dtc_decompiles_our_blob_without_warnings_and_recompiles_it_identically(tmp_path):
    ours = tmp_path / "ours.dtb"
    ours.write_bytes(sample().to_bytes())
    p = subprocess.run([DTC, "-I", "dtb", "-O", "dts", str(ours)], capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == ""
    assert 'bootargs = "a b c";' in p.stdout and "/memreserve/\t0x0000000048000000 0x0000000000001000;" in p.stdout
    again = subprocess.run([DTC, "-I", "dtb", "-O", "dtb", str(ours)], capture_output=True)
    assert again.returncode == 0
    assert parse(again.stdout).root == sample().root


@needs_dtc
def test_we_parse_what_dtc_writes_including_shared_string_tails(tmp_path):
    src = tmp_path / "t.dts"
    src.write_text('/dts-v1/;\n/memreserve/ 0x1000 0x2000;\n/ {\n #address-cells = <1>; #size-cells = <1>;\n'
                   ' n@10 { reg = <0x10 0x4>; cells = <1 2 3>; size-cells = <5>; names = "x", "yz";\n'
                   '  l: leaf { empty; }; };\n ref { p = <&l>; };\n};\n')
    p = subprocess.run([DTC, "-I", "dts", "-O", "dtb", "-q", str(src)], capture_output=True)
    assert p.returncode == 0, p.stderr
    t = parse(p.stdout)
    n = t.find("/n@10")
    assert n.u32s("reg") == (0x10, 4) and n.u32s("cells") == (1, 2, 3) and n.u32s("size-cells") == (5,)
    assert n.strings("names") == ("x", "yz") and t.find("/n@10/leaf").get("empty") == b""
    assert t.find("/ref").u32s("p") == t.find("/n@10/leaf").u32s("phandle")
    assert t.reserved == [(0x1000, 0x2000)]


@needs_dtc
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees())
def test_dtc_reads_random_trees(tmp_path_factory, root):
    f = tmp_path_factory.mktemp("r") / "r.dtb"
    f.write_bytes(Fdt(root).to_bytes())
    p = subprocess.run([DTC, "-I", "dtb", "-O", "dtb", str(f)], capture_output=True)
    assert p.returncode == 0, p.stderr
    assert parse(p.stdout).root == root


# -- hostile blobs ----------------------------------------------------------------------------------------
def _blob(tokens: bytes, strtab: bytes = b"a\0", version: int = 17, last: int = 16, rsv_off: int = 40,
          total: int | None = None) -> bytes:
    rsv = bytes(16)
    off_struct = rsv_off + len(rsv)
    off_str = off_struct + len(tokens)
    size = off_str + len(strtab) if total is None else total
    hdr = struct.pack(">10I", FDT_MAGIC, size, off_struct, off_str, rsv_off, version, last, 0, len(strtab),
                      len(tokens))
    return (hdr + bytes(rsv_off - 40) + rsv + tokens + strtab).ljust(size, b"\0")


def T(*words: int) -> bytes:
    return struct.pack(f">{len(words)}I", *words)


ROOT = T(FDT_BEGIN_NODE, 0)                      # the root's empty name + padding in one word
PROP_A = T(FDT_PROP, 4, 0) + T(7)


@pytest.mark.parametrize("blob,message", [
    (b"", "not a device tree"),
    (b"\xd0\x0d\xfe\xed\0\0", "truncated device tree header"),
    (b"\0" * 64, "not a device tree blob"),
    (_blob(ROOT + T(FDT_END_NODE, FDT_END), version=15, last=15), "unsupported device tree version"),
    (_blob(ROOT + T(FDT_END_NODE, FDT_END), last=18), "unsupported"),
    (_blob(ROOT + T(FDT_END_NODE, FDT_END))[:-3], "truncated device tree: header totalsize"),
    (_blob(ROOT + T(FDT_END_NODE, FDT_END), rsv_off=44), "misaligned"),
    (_blob(ROOT + T(FDT_END_NODE)), "truncated structure block"),
    (_blob(ROOT + T(FDT_PROP, 4, 9) + T(0) + T(FDT_END_NODE, FDT_END)), "name offset"),
    (_blob(ROOT + T(FDT_PROP, 400, 0) + T(FDT_END_NODE, FDT_END)), "run past its end"),
    (_blob(ROOT + PROP_A + T(FDT_END_NODE, FDT_END), strtab=b"abc"), "no terminating NUL"),
    (_blob(ROOT + PROP_A + PROP_A + T(FDT_END_NODE, FDT_END)), "duplicate property"),
    (_blob(ROOT + T(FDT_BEGIN_NODE) + b"k\0\0\0" + T(FDT_END_NODE) + PROP_A + T(FDT_END_NODE, FDT_END)),
     "follows a subnode"),
    (_blob(ROOT + (T(FDT_BEGIN_NODE) + b"k\0\0\0" + T(FDT_END_NODE)) * 2 + T(FDT_END_NODE, FDT_END)),
     "duplicate node"),
    (_blob(ROOT + T(FDT_END_NODE, FDT_END_NODE, FDT_END)), "unbalanced"),
    (_blob(ROOT + T(FDT_END)), "ends inside a node"),
    (_blob(T(FDT_END)), "no root"),
    (_blob(ROOT + T(FDT_END_NODE) + ROOT + T(FDT_END_NODE, FDT_END)), "second top-level node"),
    (_blob(T(FDT_BEGIN_NODE) + b"r\0\0\0" + T(FDT_END_NODE, FDT_END)), "root node's name must be empty"),
    (_blob(ROOT + T(7) + T(FDT_END_NODE, FDT_END)), "bad structure block token 0x7"),
    (_blob(PROP_A + T(FDT_END)), "property outside any node"),
    (_blob(ROOT + T(FDT_BEGIN_NODE) + b"a/b\0" + T(FDT_END_NODE, FDT_END_NODE, FDT_END)), "invalid node name"),
    (_blob(ROOT + T(FDT_BEGIN_NODE) + b"unterminated"), "no terminating NUL"),
    (_blob(ROOT + (T(FDT_BEGIN_NODE) + b"k\0\0\0") * (MAX_DEPTH + 1)), "nested deeper"),
])
def test_corrupt_blobs_raise_one_clear_error(blob, message):
    with pytest.raises(FdtError, match=message) as e:
        parse(blob)
    assert "\n" not in str(e.value)


def test_nops_are_skipped_and_trailing_bytes_after_totalsize_ignored():
    blob = _blob(T(FDT_NOP) + ROOT + T(FDT_NOP) + PROP_A + T(FDT_END_NODE, FDT_NOP, FDT_END)) + b"junk"
    assert parse(blob).root.u32s("a") == (7,)


def test_version_16_blob_without_struct_size():
    blob = bytearray(_blob(ROOT + PROP_A + T(FDT_END_NODE, FDT_END), version=16))
    struct.pack_into(">I", blob, 36, 0)           # size_dt_struct is a v17 field
    assert parse(bytes(blob)).root.u32s("a") == (7,)


GOOD = sample().to_bytes()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, len(GOOD)))
def test_mutated_or_truncated_blobs_parse_or_raise_fdterror(edits, cut):
    blob = bytearray(GOOD)
    for at, value in edits:
        blob[at] = value
    for candidate in (bytes(blob), bytes(blob[:cut]), GOOD[:cut]):
        try:
            parse(candidate)
        except FdtError as e:
            assert "\n" not in str(e)
