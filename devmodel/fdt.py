"""Flattened device tree (DTB): a node/property tree, a flattener and a parser, pure Python.

Format: Devicetree Specification v0.4, chapter 5 "Flattened Devicetree (DTB) Format":

* 5.2 header: ten big-endian u32 (magic 0xd00dfeed, totalsize, off_dt_struct, off_dt_strings, off_mem_rsvmap,
  version, last_comp_version, boot_cpuid_phys, size_dt_strings, size_dt_struct). We write version 17 with
  last_comp_version 16, as dtc and libfdt do.
* 5.3 memory reservation block: (u64 address, u64 size) pairs ended by (0, 0), 8-byte aligned.
* 5.4 structure block: FDT_BEGIN_NODE (name, NUL, padded to 4), FDT_PROP (u32 len, u32 nameoff, value padded
  to 4), FDT_END_NODE, FDT_NOP, FDT_END; 4-byte aligned. A node's properties precede its subnodes.
* 5.5 strings block: the NUL-terminated property names; we store each name once (first-use order). The parser
  also accepts the tail-shared names libfdt and dtc produce (a name offset may point into a longer name).

The layout written is dtc's: header, reservation block at 0x28, structure block, strings block, then zero
padding up to `min_size` (QEMU hands guests a tree padded to a fixed size, see harness/devicetree.py).

Values are raw bytes; `u32`, `u64`, `cells`, `string`, `strings` encode them and `Node.u32s`, `Node.string`,
... decode them. Names and strings are UTF-8, byte-transparent (surrogate escapes) so any well-formed tree
survives parse -> flatten.

Every problem with an input blob raises `FdtError` with a one-line message (never struct.error or IndexError):
bad magic, unsupported version, blocks outside totalsize or misaligned, truncated tokens, names without NUL,
property offsets outside the strings block, properties after subnodes, duplicate names, unbalanced nodes,
nesting deeper than MAX_DEPTH, data after FDT_END's root. The builder raises `FdtError` for names the format
cannot carry (empty, containing NUL or '/').
"""
from __future__ import annotations

import struct
from typing import Iterator

__all__ = ["FdtError", "Node", "Fdt", "parse", "flatten", "FDT_MAGIC", "FDT_VERSION", "FDT_LAST_COMP_VERSION", "MAX_DEPTH",
           "u32", "u64", "cells", "string", "strings", "EMPTY",
           "to_u32s", "to_u64s", "to_string", "to_strings"]

FDT_MAGIC = 0xD00DFEED
FDT_VERSION = 17
FDT_LAST_COMP_VERSION = 16
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9
HEADER_SIZE = 40                    # version 17 header (5.2)
MAX_DEPTH = 256                     # nesting limit for hostile blobs (real trees are < 10 deep)
_HDR = struct.Struct(">10I")
_RSV = struct.Struct(">QQ")
EMPTY = b""


class FdtError(ValueError):
    """A blob that is not a valid flattened device tree, or a tree the format cannot carry (one line)."""


# -- property value encoders / decoders ------------------------------------------------------------------
def u32(*values: int) -> bytes:
    """<v0 v1 ...>: one 32-bit cell per value (phandles, interrupt specifiers, #xxx-cells)."""
    try:
        return struct.pack(f">{len(values)}I", *values)
    except struct.error:
        raise FdtError(f"cell value out of range in {values!r}") from None


def u64(*values: int) -> bytes:
    """/bits/ 64 <...>: two cells per value, most significant first."""
    try:
        return struct.pack(f">{len(values)}Q", *values)
    except struct.error:
        raise FdtError(f"64-bit value out of range in {values!r}") from None


def cells(*pairs: tuple[int, int]) -> bytes:
    """Values in a given number of cells each: cells((addr, 2), (size, 2)) is a `reg` entry for
    #address-cells = #size-cells = 2. A value that does not fit its cells is an error."""
    out = bytearray()
    for value, n in pairs:
        if n < 0 or value < 0 or value >> (32 * n):
            raise FdtError(f"value {value:#x} does not fit in {n} cell(s)")
        out += value.to_bytes(4 * n, "big")
    return bytes(out)


def _enc(s: str) -> bytes:
    """Names and strings are UTF-8; bytes that are not (from a parsed blob) survive as surrogate escapes."""
    try:
        return s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise FdtError(f"{s!r} cannot be encoded") from None


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def string(s: str) -> bytes:
    return _enc(s) + b"\0"


def strings(*items: str) -> bytes:
    """A string list ("a\\0b\\0"), e.g. compatible = "arm,pl011", "arm,primecell"."""
    return b"".join(string(s) for s in items)


def to_u32s(value: bytes) -> tuple[int, ...]:
    if len(value) % 4:
        raise FdtError(f"property of {len(value)} bytes is not a list of 32-bit cells")
    return struct.unpack(f">{len(value) // 4}I", value)


def to_u64s(value: bytes) -> tuple[int, ...]:
    if len(value) % 8:
        raise FdtError(f"property of {len(value)} bytes is not a list of 64-bit values")
    return struct.unpack(f">{len(value) // 8}Q", value)


def to_strings(value: bytes) -> tuple[str, ...]:
    if not value or value[-1:] != b"\0":
        raise FdtError("property is not a NUL-terminated string list")
    return tuple(_dec(s) for s in value[:-1].split(b"\0"))


def to_string(value: bytes) -> str:
    items = to_strings(value)
    if len(items) != 1:
        raise FdtError(f"property holds {len(items)} strings, not one")
    return items[0]


# -- the tree ----------------------------------------------------------------------------------------------
def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not name or "\0" in name or (what == "node" and "/" in name):
        raise FdtError(f"invalid {what} name {name!r}")
    _enc(name)


class Node:
    """A device tree node: `name` ("" for the root, "unit@addr" otherwise), `props` (name -> raw bytes, in
    order) and `children` (in order). Sibling names and a node's property names are unique."""

    __slots__ = ("name", "props", "children")

    def __init__(self, name: str = "", props: dict[str, bytes] | None = None,
                 children: list["Node"] | None = None):
        self.name = name
        self.props: dict[str, bytes] = {}
        self.children: list[Node] = []
        for k, v in (props or {}).items():
            self.set(k, v)
        for c in children or ():
            self.add(c)

    # properties
    def set(self, name: str, value: bytes, *, first: bool = False) -> "Node":
        """Set property `name`. An existing one keeps its place; a new one goes last, or first with
        `first=True` (where libfdt's fdt_setprop puts a new property)."""
        _check_name(name, "property")
        value = bytes(value)
        if name in self.props or not first:
            self.props[name] = value
        else:
            self.props = {name: value, **self.props}
        return self

    def get(self, name: str) -> bytes | None:
        return self.props.get(name)

    def delete(self, name: str) -> None:
        self.props.pop(name, None)

    def u32s(self, name: str) -> tuple[int, ...] | None:
        v = self.props.get(name)
        return None if v is None else to_u32s(v)

    def string(self, name: str) -> str | None:
        v = self.props.get(name)
        return None if v is None else to_string(v)

    def strings(self, name: str) -> tuple[str, ...] | None:
        v = self.props.get(name)
        return None if v is None else to_strings(v)

    # children
    def add(self, child: "Node", *, first: bool = False) -> "Node":
        """Append `child` (or insert it before the other subnodes, as libfdt's fdt_add_subnode does);
        returns it."""
        _check_name(child.name, "node")
        if self.child(child.name) is not None:
            raise FdtError(f"duplicate node name {child.name!r} under {self.name or '/'!r}")
        if first:
            self.children.insert(0, child)
        else:
            self.children.append(child)
        return child

    def child(self, name: str) -> "Node | None":
        for c in self.children:
            if c.name == name:
                return c
        return None

    def remove_child(self, name: str) -> None:
        self.children = [c for c in self.children if c.name != name]

    def find(self, path: str) -> "Node | None":
        """The node at `path` ("/", "/cpus/cpu@0") below this one, or None."""
        node: Node | None = self
        for part in (p for p in path.split("/") if p):
            node = node.child(part) if node is not None else None
        return node

    def walk(self, path: str = "/") -> Iterator[tuple[str, "Node"]]:
        """(path, node) for this node and every descendant, depth first, in tree order."""
        stack = [(path, self)]
        while stack:
            p, n = stack.pop()
            yield p, n
            base = p.rstrip("/")
            stack.extend((f"{base}/{c.name}", c) for c in reversed(n.children))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Node):
            return NotImplemented
        return (self.name == other.name and list(self.props.items()) == list(other.props.items())
                and self.children == other.children)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Node {self.name or '/'} props={len(self.props)} children={len(self.children)}>"


class Fdt:
    """A whole tree: the root node, the memory reservation entries and the header's boot_cpuid_phys."""

    root: Node
    reserved: list[tuple[int, int]]
    boot_cpuid_phys: int

    def __init__(self, root: Node | None = None, reserved: list[tuple[int, int]] | None = None,
                 boot_cpuid_phys: int = 0) -> None:
        self.root = Node() if root is None else root
        self.reserved = [] if reserved is None else reserved
        self.boot_cpuid_phys = boot_cpuid_phys

    def find(self, path: str) -> Node | None:
        return self.root.find(path)

    def to_bytes(self, *, min_size: int = 0) -> bytes:
        return flatten(self, min_size=min_size)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Fdt":
        return parse(data)


# -- flattener --------------------------------------------------------------------------------------------
def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def flatten(fdt: Fdt, *, min_size: int = 0) -> bytes:
    """The DTB of `fdt` (version 17), zero-padded to at least `min_size` bytes (header totalsize says so)."""
    if fdt.root.name:
        raise FdtError(f"the root node's name must be empty, not {fdt.root.name!r}")
    names: dict[str, int] = {}
    strtab = bytearray()
    dt = bytearray()

    def nameoff(name: str) -> int:
        off = names.get(name)
        if off is None:
            off = names[name] = len(strtab)
            strtab.extend(_enc(name) + b"\0")
        return off

    # iterative depth-first walk; a None marks "close the node"
    stack: list[Node | None] = [fdt.root]
    while stack:
        node = stack.pop()
        if node is None:
            dt += struct.pack(">I", FDT_END_NODE)
            continue
        raw = _enc(node.name) + b"\0"
        dt += struct.pack(">I", FDT_BEGIN_NODE) + raw + bytes(_pad4(len(raw)))
        for k, v in node.props.items():
            dt += struct.pack(">III", FDT_PROP, len(v), nameoff(k)) + v + bytes(_pad4(len(v)))
        stack.append(None)
        stack.extend(reversed(node.children))
    dt += struct.pack(">I", FDT_END)

    rsv = bytearray()
    for addr, size in fdt.reserved:
        try:
            rsv += _RSV.pack(addr, size)
        except struct.error:
            raise FdtError(f"reservation ({addr!r}, {size!r}) does not fit 64 bits") from None
    rsv += _RSV.pack(0, 0)
    off_rsv = HEADER_SIZE                     # 40: already 8-byte aligned (5.6)
    off_struct = off_rsv + len(rsv)           # multiple of 8, so 4-byte aligned
    off_strings = off_struct + len(dt)
    total = off_strings + len(strtab)
    size = max(total, min_size)
    header = _HDR.pack(FDT_MAGIC, size, off_struct, off_strings, off_rsv, FDT_VERSION, FDT_LAST_COMP_VERSION,
                       fdt.boot_cpuid_phys, len(strtab), len(dt))
    return header + bytes(rsv) + bytes(dt) + bytes(strtab) + bytes(size - total)


# -- parser -----------------------------------------------------------------------------------------------
class _Reader:
    """Bounds-checked reads inside [lo, hi) of the blob; every failure is an FdtError naming `what`."""

    def __init__(self, data: bytes, lo: int, hi: int, what: str):
        self.data, self.lo, self.hi, self.what = data, lo, hi, what

    def u32(self, off: int) -> int:
        if off < self.lo or off + 4 > self.hi:
            raise FdtError(f"truncated {self.what} at offset {off:#x}")
        return int.from_bytes(self.data[off:off + 4], "big")

    def cstr(self, off: int) -> tuple[str, int]:
        """NUL-terminated string at `off`; returns it and the offset after the NUL."""
        if off < self.lo or off >= self.hi:
            raise FdtError(f"{self.what}: string offset {off:#x} outside the block")
        end = self.data.find(b"\0", off, self.hi)
        if end < 0:
            raise FdtError(f"{self.what}: string at offset {off:#x} has no terminating NUL")
        return _dec(self.data[off:end]), end + 1

    def bytes(self, off: int, n: int) -> bytes:
        if off < self.lo or off + n > self.hi:
            raise FdtError(f"truncated {self.what}: {n} bytes at offset {off:#x} run past its end")
        return self.data[off:off + n]


def _header(data: bytes) -> tuple[int, ...]:
    if len(data) < 4:
        raise FdtError(f"not a device tree blob: {len(data)} bytes")
    magic = int.from_bytes(data[:4], "big")
    if magic != FDT_MAGIC:
        raise FdtError(f"not a device tree blob (magic {magic:#010x}, expected {FDT_MAGIC:#010x})")
    if len(data) < HEADER_SIZE:
        raise FdtError(f"truncated device tree header ({len(data)} bytes)")
    h = _HDR.unpack_from(data)
    _, total, off_struct, off_strings, off_rsv, version, last_comp, _, size_strings, size_struct = h
    if version < 16 or last_comp > FDT_VERSION:
        raise FdtError(f"unsupported device tree version {version} (last compatible {last_comp}); "
                       "versions 16 and 17 are supported")
    if total > len(data):
        raise FdtError(f"truncated device tree: header totalsize {total:#x}, blob {len(data):#x} bytes")
    if total < HEADER_SIZE:
        raise FdtError(f"device tree totalsize {total:#x} is smaller than its header")
    if off_rsv % 8 or off_struct % 4:
        raise FdtError("misaligned device tree blocks (reservation block must be 8-byte aligned, "
                       "structure block 4-byte aligned)")
    for name, off, size in (("structure block", off_struct, size_struct if version >= 17 else 0),
                            ("strings block", off_strings, size_strings), ("reservation block", off_rsv, 0)):
        if off < HEADER_SIZE or off + size > total:
            raise FdtError(f"{name} [{off:#x}, +{size:#x}) lies outside the blob (totalsize {total:#x})")
    return h


def parse(data: bytes) -> Fdt:
    """Parse a DTB. Raises FdtError (one line) for anything malformed. Bytes after totalsize are ignored."""
    data = bytes(data)
    (_, total, off_struct, off_strings, off_rsv, version, _, boot_cpu, size_strings, size_struct) = _header(data)
    struct_end = off_struct + size_struct if version >= 17 else total
    reserved: list[tuple[int, int]] = []
    off = off_rsv
    while True:
        if off + 16 > total:
            raise FdtError("memory reservation block is not terminated by a (0, 0) entry")
        entry = _RSV.unpack_from(data, off)
        off += 16
        if entry == (0, 0):
            break
        reserved.append(entry)
    rd = _Reader(data, off_struct, struct_end, "structure block")
    strs = _Reader(data, off_strings, off_strings + size_strings, "strings block")
    root = _parse_struct(rd, strs)
    return Fdt(root, reserved, boot_cpu)


def _parse_struct(rd: _Reader, strs: _Reader) -> Node:
    off = rd.lo
    stack: list[Node] = []
    root: Node | None = None
    while True:
        tok = rd.u32(off)
        off += 4
        if tok == FDT_NOP:
            continue
        if tok == FDT_BEGIN_NODE:
            name, end = rd.cstr(off)
            off = end + _pad4(end - rd.lo)
            if root is not None and not stack:
                raise FdtError("structure block has a second top-level node")
            if len(stack) >= MAX_DEPTH:
                raise FdtError(f"device tree nested deeper than {MAX_DEPTH} levels")
            node = Node(name)
            if stack:
                parent = stack[-1]
                if not name or "/" in name:
                    raise FdtError(f"invalid node name {name!r} under {parent.name or '/'!r}")
                if parent.child(name) is not None:
                    raise FdtError(f"duplicate node {name!r} under {parent.name or '/'!r}")
                parent.children.append(node)
            else:
                if name:
                    raise FdtError(f"the root node's name must be empty, not {name!r}")
                root = node
            stack.append(node)
        elif tok == FDT_PROP:
            if not stack:
                raise FdtError(f"property outside any node at offset {off - 4:#x}")
            length, nameoff = rd.u32(off), rd.u32(off + 4)
            value = rd.bytes(off + 8, length)
            off += 8 + length + _pad4(length)
            if nameoff >= strs.hi - strs.lo:
                raise FdtError(f"property name offset {nameoff:#x} outside the strings block")
            name, _ = strs.cstr(strs.lo + nameoff)
            node = stack[-1]
            if node.children:
                raise FdtError(f"property {name!r} of {node.name or '/'!r} follows a subnode")
            if not name:
                raise FdtError(f"empty property name in {node.name or '/'!r}")
            if name in node.props:
                raise FdtError(f"duplicate property {name!r} in {node.name or '/'!r}")
            node.props[name] = value
        elif tok == FDT_END_NODE:
            if not stack:
                raise FdtError(f"unbalanced FDT_END_NODE at offset {off - 4:#x}")
            stack.pop()
        elif tok == FDT_END:
            if stack or root is None:
                raise FdtError("structure block ends inside a node" if stack else "structure block has no root")
            return root
        else:
            raise FdtError(f"bad structure block token {tok:#x} at offset {off - 4:#x}")
