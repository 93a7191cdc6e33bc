"""How a run ends: outcome records and the process exit statuses of `smmu-harness run`.

Statuses follow what QEMU and a native process give: the guest's own status 0-123 is passed
through; 124 the instruction or time budget ran out (timeout(1)); 125 the harness could not run the guest
(usage error, bad input); 132 the guest died on an exception it does not handle other than an abort: an
undefined instruction (128 + SIGILL), SVC, BRK, a trap; 139 on an abort or alignment fault it does not handle
(EC 0x20-0x27, 128 + SIGSEGV); 134 the guest made a semihosting call QEMU does not implement, on which QEMU
abort()s (128 + SIGABRT); 137 the debugger killed the run (gdb's `kill` through the gdb stub, 128 + SIGKILL,
what a shell reports for a process gdb kills). A guest status outside 0-123 is reported as 1 (and said so), so it can never be mistaken for one of the harness's own statuses.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# Exception classes and ESR_ELx (Arm ARM D17.2.37) for the death lines, defined in harness/syndrome.py
from .syndrome import (EC_BRK64, EC_DABT_CUR, EC_DABT_LOW, EC_HVC64, EC_IABT_CUR, EC_IABT_LOW, EC_NAMES, EC_SMC64,
                       EC_SVC64, EC_UNKNOWN, FSC_SYNC_EXTERNAL)
from .syndrome import esr as esr_value

__all__ = ["EXIT_BUDGET", "EXIT_BAD_INPUT", "EXIT_UNDEF", "EXIT_FATAL", "EXIT_KILLED", "EXIT_ABORT", "MAX_GUEST_STATUS", "Kind", "Outcome",
           "HarnessInputError", "esr_value", "EC_UNKNOWN", "EC_SVC64", "EC_HVC64", "EC_SMC64",
           "EC_IABT_LOW", "EC_IABT_CUR", "EC_DABT_LOW", "EC_DABT_CUR", "EC_BRK64", "EC_NAMES"]

EXIT_BUDGET = 124
EXIT_BAD_INPUT = 125
EXIT_UNDEF = 132
EXIT_FATAL = 134              # 128 + SIGABRT: QEMU's abort() on an unsupported semihosting operation
EXIT_KILLED = 137             # 128 + SIGKILL: killed from the debugger (harness/gdbstub.py)
EXIT_ABORT = 139
MAX_GUEST_STATUS = 123

class Kind(str, Enum):
    EXIT = "exit"            # guest exited (semihosting, PSCI SYSTEM_OFF/RESET)
    BUDGET = "budget"        # --max-insns exhausted
    TIMEOUT = "timeout"      # --timeout exhausted
    IDLE = "idle"            # every vCPU is off: nothing can ever run again
    UNDEF = "undef"          # unhandled undefined instruction / unhandled synchronous exception
    ABORT = "abort"          # unhandled data/instruction abort
    FATAL = "fatal"          # the emulator gives up as QEMU does (unsupported semihosting operation)
    KILLED = "killed"        # the debugger ended the run (gdb `kill`)


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
        if self.kind is Kind.KILLED:
            return EXIT_KILLED
        return EXIT_ABORT

    @property
    def is_death(self) -> bool:
        return self.kind in (Kind.UNDEF, Kind.ABORT, Kind.FATAL)
