"""How a run ends: outcome records and the process exit statuses of `smmu-harness run`.

Statuses follow what QEMU and a native process give: the guest's own status 0-123 is passed
through; 124 the instruction or time budget ran out (timeout(1)); 125 the harness could not run the guest
(usage error, bad input); 132 the guest died on an undefined instruction it does not handle (128 + SIGILL);
134 the guest made a semihosting call QEMU does not implement, on which QEMU abort()s (128 + SIGABRT);
139 the guest died on an abort it does not handle (128 + SIGSEGV). A guest status outside 0-123 is reported
as 1 (and said so), so it can never be mistaken for one of the harness's own statuses.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["EXIT_BUDGET", "EXIT_BAD_INPUT", "EXIT_UNDEF", "EXIT_FATAL", "EXIT_ABORT", "MAX_GUEST_STATUS", "Kind", "Outcome",
           "HarnessInputError", "esr_value", "EC_UNKNOWN", "EC_SVC64", "EC_HVC64", "EC_SMC64",
           "EC_IABT_LOW", "EC_IABT_CUR", "EC_DABT_LOW", "EC_DABT_CUR", "EC_BRK64", "EC_NAMES"]

EXIT_BUDGET = 124
EXIT_BAD_INPUT = 125
EXIT_UNDEF = 132
EXIT_FATAL = 134              # 128 + SIGABRT: QEMU's abort() on an unsupported semihosting operation
EXIT_ABORT = 139
MAX_GUEST_STATUS = 123

# Exception classes, Arm ARM D17.2.37 ESR_EL1 (EC field, bits [31:26]).
EC_UNKNOWN = 0x00
EC_SVC64 = 0x15
EC_HVC64 = 0x16
EC_SMC64 = 0x17
EC_IABT_LOW = 0x20
EC_IABT_CUR = 0x21
EC_DABT_LOW = 0x24
EC_DABT_CUR = 0x25
EC_BRK64 = 0x3C
EC_NAMES = {EC_UNKNOWN: "unknown reason (undefined instruction)", EC_SVC64: "SVC", EC_HVC64: "HVC",
            EC_SMC64: "SMC", EC_IABT_LOW: "instruction abort, lower EL", EC_IABT_CUR: "instruction abort, same EL",
            EC_DABT_LOW: "data abort, lower EL", EC_DABT_CUR: "data abort, same EL",
            EC_BRK64: "BRK"}
FSC_SYNC_EXTERNAL = 0x10      # DFSC/IFSC 0b010000: synchronous external abort, not on a table walk


def esr_value(ec: int, iss: int = 0, il: bool = True) -> int:
    """ESR_ELx = EC[31:26] | IL[25] | ISS[24:0]."""
    return (ec << 26) | (int(il) << 25) | (iss & 0x1FF_FFFF)


class Kind(str, Enum):
    EXIT = "exit"            # guest exited (semihosting, PSCI SYSTEM_OFF/RESET)
    BUDGET = "budget"        # --max-insns exhausted
    TIMEOUT = "timeout"      # --timeout exhausted
    IDLE = "idle"            # every vCPU is off: nothing can ever run again
    UNDEF = "undef"          # unhandled undefined instruction / unhandled synchronous exception
    ABORT = "abort"          # unhandled data/instruction abort
    FATAL = "fatal"          # the emulator gives up as QEMU does (unsupported semihosting operation)


class HarnessInputError(Exception):
    """Bad input the harness cannot run (exit status 125); the message is one line."""


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    message: str                      # one line, for the user
    status: int = 0                   # guest status for EXIT
    vcpu: str | None = None           # dvm_name of the vCPU that caused it
    pc: int | None = None
    esr: int | None = None
    far: int | None = None

    @property
    def exit_code(self) -> int:
        if self.kind is Kind.EXIT:
            return self.status if 0 <= self.status <= MAX_GUEST_STATUS else 1
        if self.kind in (Kind.BUDGET, Kind.TIMEOUT, Kind.IDLE):
            return EXIT_BUDGET
        if self.kind is Kind.UNDEF:
            return EXIT_UNDEF
        if self.kind is Kind.FATAL:
            return EXIT_FATAL
        return EXIT_ABORT

    @property
    def is_death(self) -> bool:
        return self.kind in (Kind.UNDEF, Kind.ABORT, Kind.FATAL)
