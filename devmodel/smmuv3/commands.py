"""Command queue entries (IHI 0070 chapter 4): one layout per opcode, `decode(16 bytes) -> Command`,
`encode(name, **fields) -> bytes`, and `check(cmd, features) -> cerror | 0` (CERROR_ILL rules).

Field positions checked against Linux `arm-smmu-v3.h` (CMDQ_*) and QEMU `smmuv3-common.h`.
Command addresses: TLBI_*_VA/VAA/EL2_VA/EL3_VA and ATC_INV carry Address[63:12] (the full VA, so no
extension is needed, unlike a CPU TLBI's Xt which carries VA[55:12]); TLBI_S2_IPA carries IPA[51:12].
`Command.addr` is the byte address. CFGI_STE_RANGE's Range field is `span`: the command covers
2^(span+1) StreamIDs from StreamID aligned down to that size; span=31 is CFGI_ALL.

ATC_INV, PRI_RESP, RESUME and STALL_TERM are CERROR_ILL when the SMMU lacks ATS, PRI, or stalls
(IDR0.STALL_MODEL=0b01); their effects are the device's (`device.py`, `pcie.py`, `stall.py`, `ats.py`).

Not modelled: Secure-only commands (TLBI_S_*, CFGI on the Secure queue: CERROR_ILL on this Non-secure queue),
DPT/VMS commands.
"""
from __future__ import annotations

from ..fields import Field, Layout, record_decoder, record_type
from .regs import SmmuFeatures

__all__ = ["OPCODES", "NAMES", "LAYOUTS", "Command", "decode", "encode", "check", "CMD_SIZE",
           "CERROR_NONE", "CERROR_ILL", "CERROR_ABT", "CERROR_ATC_INV_SYNC", "CS_NONE", "CS_IRQ", "CS_SEV",
           "CFGI_ALL_SPAN", "ste_range", "encode_command"]

CMD_SIZE = 16
CERROR_NONE, CERROR_ILL, CERROR_ABT, CERROR_ATC_INV_SYNC = 0, 1, 2, 3
CS_NONE, CS_IRQ, CS_SEV = 0, 1, 2
CFGI_ALL_SPAN = 31

OPCODES: dict[str, int] = {
    "PREFETCH_CONFIG": 0x01, "PREFETCH_ADDR": 0x02, "CFGI_STE": 0x03, "CFGI_STE_RANGE": 0x04,
    "CFGI_CD": 0x05, "CFGI_CD_ALL": 0x06,
    "TLBI_NH_ALL": 0x10, "TLBI_NH_ASID": 0x11, "TLBI_NH_VA": 0x12, "TLBI_NH_VAA": 0x13,
    "TLBI_EL3_ALL": 0x18, "TLBI_EL3_VA": 0x1A,
    "TLBI_EL2_ALL": 0x20, "TLBI_EL2_ASID": 0x21, "TLBI_EL2_VA": 0x22, "TLBI_EL2_VAA": 0x23,
    "TLBI_S12_VMALL": 0x28, "TLBI_S2_IPA": 0x2A, "TLBI_NSNH_ALL": 0x30,
    "ATC_INV": 0x40, "PRI_RESP": 0x41, "RESUME": 0x44, "STALL_TERM": 0x45, "CMD_SYNC": 0x46,
}
NAMES: dict[int, str] = {v: k for k, v in OPCODES.items()}

_OP = Field("OPCODE", 0, 8)
_SSEC = Field("SSEC", 10, 1)
_SSV = Field("SSV", 11, 1)
_SSID = Field("SSID", 12, 20)
_SID = Field("SID", 32, 32)
_NUM = Field("NUM", 12, 5)
_SCALE = Field("SCALE", 20, 5)
_VMID = Field("VMID", 32, 16)
_ASID = Field("ASID", 48, 16)
_LEAF = Field("LEAF", 64, 1)
_TTL = Field("TTL", 72, 2)
_TG = Field("TG", 74, 2)
_VA = Field("ADDR", 76, 52, shift=12, doc="VA[63:12]")
_IPA = Field("ADDR", 76, 40, shift=12, doc="IPA[51:12]")
_RANGE_VA = (_NUM, _SCALE, _LEAF, _TTL, _TG, _VA)


def _layout(name: str, *fields: Field) -> Layout:
    return Layout(f"CMD_{name}", 128, (_OP, *fields))


LAYOUTS: dict[str, Layout] = {
    "PREFETCH_CONFIG": _layout("PREFETCH_CONFIG", _SSEC, _SSV, _SSID, _SID),
    "PREFETCH_ADDR": _layout("PREFETCH_ADDR", _SSEC, _SSV, _SSID, _SID, Field("SIZE", 64, 5), _VA),
    "CFGI_STE": _layout("CFGI_STE", _SSEC, _SID, _LEAF),
    "CFGI_STE_RANGE": _layout("CFGI_STE_RANGE", _SSEC, _SID, Field("SPAN", 64, 5, doc="spec: Range")),
    "CFGI_CD": _layout("CFGI_CD", _SSEC, _SSID, _SID, _LEAF),
    "CFGI_CD_ALL": _layout("CFGI_CD_ALL", _SSEC, _SID),
    "TLBI_NH_ALL": _layout("TLBI_NH_ALL", _VMID),
    "TLBI_NH_ASID": _layout("TLBI_NH_ASID", _VMID, _ASID),
    "TLBI_NH_VA": _layout("TLBI_NH_VA", _VMID, _ASID, *_RANGE_VA),
    "TLBI_NH_VAA": _layout("TLBI_NH_VAA", _VMID, *_RANGE_VA),
    "TLBI_EL3_ALL": _layout("TLBI_EL3_ALL"),
    "TLBI_EL3_VA": _layout("TLBI_EL3_VA", *_RANGE_VA),
    "TLBI_EL2_ALL": _layout("TLBI_EL2_ALL"),
    "TLBI_EL2_ASID": _layout("TLBI_EL2_ASID", _ASID),
    "TLBI_EL2_VA": _layout("TLBI_EL2_VA", _ASID, *_RANGE_VA),
    "TLBI_EL2_VAA": _layout("TLBI_EL2_VAA", *_RANGE_VA),
    "TLBI_S12_VMALL": _layout("TLBI_S12_VMALL", _VMID),
    "TLBI_S2_IPA": _layout("TLBI_S2_IPA", _NUM, _SCALE, _VMID, _LEAF, _TTL, _TG, _IPA),
    "TLBI_NSNH_ALL": _layout("TLBI_NSNH_ALL"),
    "ATC_INV": _layout("ATC_INV", Field("GLOBAL", 9, 1), _SSV, _SSID, _SID, Field("SIZE", 64, 6), _VA),
    "PRI_RESP": _layout("PRI_RESP", _SSV, _SSID, _SID, Field("GRPID", 64, 9), Field("RESP", 76, 2)),
    "RESUME": _layout("RESUME", Field("RESP", 12, 2), _SID, Field("STAG", 64, 16)),
    "STALL_TERM": _layout("STALL_TERM", _SID),
    "CMD_SYNC": _layout("CMD_SYNC", Field("CS", 12, 2), Field("MSH", 22, 2), Field("MSIATTR", 24, 4),
                        Field("MSIDATA", 32, 32), Field("MSIADDR", 66, 50, shift=2, doc="[51:2]")),
}
_UNKNOWN = _layout("UNKNOWN")


def _encode_fields(cmd: "Command") -> int:
    """The bits of a constructed command: its opcode's layout over its attributes (others are dropped)."""
    return LAYOUTS.get(NAMES.get(cmd.opcode, ""), _UNKNOWN).pack_record(cmd)


class Command(record_type("Command", tuple(LAYOUTS.values()), leading=(("opcode", int), ("name", str)),
                          encoder=_encode_fields, module=__name__)):
    """A decoded command: `opcode`, `name` ("TLBI_NH_VA", or "UNKNOWN_0xNN"), the union of every opcode's
    fields (those the opcode lacks are 0; `addr` is a byte address, `tg` the raw TG encoding: 0 = not a
    range, 1 4KB, 2 16KB, 3 64KB) and `raw`, the 128 bits as read."""
    __slots__ = ()

    @property
    def known(self) -> bool:
        return self.opcode in NAMES

    def to_bytes(self) -> bytes:
        return self.raw.to_bytes(CMD_SIZE, "little")


_DECODERS = tuple(record_decoder(Command, LAYOUTS.get(NAMES.get(op, ""), _UNKNOWN),
                                 name=NAMES.get(op) or f"UNKNOWN_{op:#04x}") for op in range(256))
_M128 = (1 << 128) - 1


def decode(data: bytes | int) -> Command:
    raw = int.from_bytes(data, "little") if isinstance(data, (bytes, bytearray, memoryview)) else data
    raw &= _M128
    return _DECODERS[raw & 0xFF](raw)


def encode(name: str, **fields: int) -> bytes:
    """Encode a command by name: `encode("TLBI_NH_VA", vmid=1, asid=2, addr=0x1000, leaf=1)`.
    Fields the opcode does not have raise KeyError; values that do not fit raise ValueError."""
    if name not in LAYOUTS:
        raise KeyError(f"unknown SMMUv3 command {name!r}")
    layout = LAYOUTS[name]
    raw = layout.pack({k: int(v) for k, v in fields.items()}, OPCODE=OPCODES[name])
    return layout.to_bytes(raw)


def encode_command(cmd: Command) -> bytes:
    """Re-encode a decoded `Command` from its fields (fields the opcode lacks, and undefined bits, dropped)."""
    layout = LAYOUTS.get(cmd.name)
    if layout is None:
        return cmd.to_bytes()
    return layout.to_bytes(cmd.raw & layout.defined_mask)


def ste_range(cmd: Command) -> tuple[int, int] | None:
    """[first, last] StreamIDs a CFGI_STE_RANGE covers, or None for CFGI_ALL (span 31)."""
    if cmd.span >= CFGI_ALL_SPAN:
        return None
    n = 1 << (cmd.span + 1)
    first = cmd.sid & ~(n - 1)
    return first, first + n - 1


def check(cmd: Command, f: SmmuFeatures) -> int:
    """CERROR for a command on the Non-secure queue (IHI 0070 4.1.3 / per-command 'ILLEGAL' notes)."""
    n = cmd.name
    if not cmd.known:
        return CERROR_ILL
    if cmd.ssec:                                  # SSec=1 is only legal on the Secure command queue
        return CERROR_ILL
    if n.startswith("TLBI_EL3"):
        return CERROR_ILL
    if n.startswith("TLBI_EL2") and not f.hyp:
        return CERROR_ILL
    if n in ("TLBI_NH_ASID", "TLBI_NH_VA", "TLBI_NH_VAA") and not f.s1p:
        return CERROR_ILL
    if n in ("TLBI_S12_VMALL", "TLBI_S2_IPA") and not f.s2p:
        return CERROR_ILL
    if n in ("ATC_INV",) and not f.ats:
        return CERROR_ILL
    if n == "PRI_RESP" and (not f.pri or cmd.resp == 0b11):     # Resp 0b11 is reserved
        return CERROR_ILL
    if n in ("RESUME", "STALL_TERM") and f.stall_model == 1:
        return CERROR_ILL
    if n == "CMD_SYNC" and cmd.cs == 3:
        return CERROR_ILL
    if n in ("CFGI_CD", "ATC_INV", "PREFETCH_CONFIG", "PREFETCH_ADDR", "PRI_RESP") \
            and (cmd.ssv or n == "CFGI_CD") and cmd.ssid >> f.ssidsize:
        return CERROR_ILL
    return CERROR_NONE
