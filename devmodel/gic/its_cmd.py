"""ITS commands (IHI 0069 5.13 "ITS commands"): 32-byte records in the command queue, one `Layout` per
command (field positions as Linux `drivers/irqchip/irq-gic-v3-its.c` encodes them: DeviceID DW0[63:32],
EventID DW1[31:0], pINTID DW1[63:32], Size DW1[4:0], ICID DW2[15:0], ITT_addr DW2[51:8], RDbase DW2[51:16],
V DW2[63], RDbase2 DW3[51:16]), and the command error encodings.

Error codes: 0x01 << 16 | command << 8 | reason, with the values of IHI 0069's command error table as Linux's
`include/linux/irqchip/arm-gic-v3.h` lists them (E_ITS_MAPD_DEVICE_OOR 0x010801, E_ITS_INT_UNMAPPED_INTERRUPT
0x010307, E_ITS_CLEAR_UNMAPPED_INTERRUPT 0x010507, ...). The command byte is the opcode except for CLEAR
(opcode 0x04, errors 0x0105xx). Reasons: 0x01 DeviceID (MOVALL: RDbase) out of range, 0x02 ITT size /
processor number out of range, 0x03 collection out of range, 0x04 unmapped device, 0x05 EventID out of range,
0x06 physical INTID out of range, 0x07 unmapped interrupt, 0x09 unmapped collection; checks Linux does not
list (e.g. INT of a DeviceID out of range) use the same reasons. Commands this GICv3 ITS does not implement
(GICv4 VMAPP, VMAPTI, ... and unknown opcodes) are errors with code None.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from ..fields import Field, Layout

__all__ = ["CMD_SIZE", "OPCODES", "LAYOUTS", "ItsCommand", "Reason", "decode", "encode", "error_code"]

CMD_SIZE = 32

OPCODES = {0x01: "MOVI", 0x03: "INT", 0x04: "CLEAR", 0x05: "SYNC", 0x08: "MAPD", 0x09: "MAPC", 0x0A: "MAPTI",
           0x0B: "MAPI", 0x0C: "INV", 0x0D: "INVALL", 0x0E: "MOVALL", 0x0F: "DISCARD"}
OPCODE_OF = {name: op for op, name in OPCODES.items()}

_OP = Field("Opcode", 0, 8)
_DEV = Field("DeviceID", 32, 32)
_EV = Field("EventID", 64, 32)
_ICID = Field("ICID", 128, 16)
_RD = Field("RDbase", 144, 36, shift=16)


def _layout(name: str, *fields: Field) -> Layout:
    return Layout(f"ITS_{name}", 8 * CMD_SIZE, (_OP, *fields))


LAYOUTS: dict[str, Layout] = {
    "MAPD": _layout("MAPD", _DEV, Field("Size", 64, 5), Field("ITT_addr", 136, 44, shift=8), Field("V", 191, 1)),
    "MAPC": _layout("MAPC", _ICID, _RD, Field("V", 191, 1)),
    "MAPTI": _layout("MAPTI", _DEV, _EV, Field("pINTID", 96, 32), _ICID),
    "MAPI": _layout("MAPI", _DEV, _EV, _ICID),
    "MOVI": _layout("MOVI", _DEV, _EV, _ICID),
    "DISCARD": _layout("DISCARD", _DEV, _EV),
    "INT": _layout("INT", _DEV, _EV),
    "CLEAR": _layout("CLEAR", _DEV, _EV),
    "INV": _layout("INV", _DEV, _EV),
    "INVALL": _layout("INVALL", _ICID),
    "SYNC": _layout("SYNC", _RD),
    "MOVALL": _layout("MOVALL", _RD, Field("RDbase2", 208, 36, shift=16)),
}


class Reason(IntEnum):
    DEVICE_OOR = 0x01
    SIZE_OOR = 0x02          # MAPD: ITT size; MAPC: processor number
    COLLECTION_OOR = 0x03
    UNMAPPED_DEVICE = 0x04
    ID_OOR = 0x05
    PHYSICALID_OOR = 0x06
    UNMAPPED_INTERRUPT = 0x07
    UNMAPPED_COLLECTION = 0x09


_ERROR_COMMAND_BYTE = {0x04: 0x05}      # CLEAR


def error_code(opcode: int, reason: Reason) -> int:
    return 0x01_0000 | _ERROR_COMMAND_BYTE.get(opcode, opcode & 0xFF) << 8 | int(reason)


@dataclass(frozen=True)
class ItsCommand:
    opcode: int
    name: str                 # "MAPD", ... or "UNKNOWN"
    fields: dict[str, int]    # lower-case field names

    def __getitem__(self, key: str) -> int:
        return self.fields[key]


def decode(raw: bytes) -> ItsCommand:
    """Decode one 32-byte command (any bytes: unknown opcodes decode to name "UNKNOWN")."""
    value = int.from_bytes(raw, "little")
    opcode = value & 0xFF
    name = OPCODES.get(opcode)
    if name is None:
        return ItsCommand(opcode, "UNKNOWN", {})
    return ItsCommand(opcode, name, LAYOUTS[name].unpack(value))


def encode(name: str, **fields: int) -> bytes:
    """A command's 32 bytes (what a driver writes to the queue; used by tests and host-side drivers)."""
    layout = LAYOUTS[name]
    return layout.to_bytes(layout.pack(fields, opcode=OPCODE_OF[name]))
