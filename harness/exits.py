"""How a run ends: outcome records and the process exit statuses of `smmu-harness run`.

Statuses follow what QEMU and a native process give: the guest's own status 0-123 is passed
through; 124 the instruction or time budget ran out (timeout(1)); 125 the harness could not run the guest
(usage error, bad input); 132 the guest died on an exception it does not handle other than an abort: an
undefined instruction (128 + SIGILL), SVC, BRK, a trap; 139 on an abort or alignment fault it does not handle
(EC 0x20-0x27, 128 + SIGSEGV); 134 the guest made a semihosting call QEMU does not implement, on which QEMU
abort()s (128 + SIGABRT); 137 the debugger killed the run (gdb's `kill` through the gdb stub, 128 + SIGKILL,
what a shell reports for a process gdb kills). A guest status outside 0-123 is reported as 1 (and said so), so it can never be mistaken for one of the harness's own statuses.

kvm-unit-tests guests end through their own protocol, and `run` reports the status kvm-unit-tests' `arm/run`
gives for them (scripts/arch-run.bash `run_test`/`run_test_status`, scripts/vmm.bash `qemu_fixup_return_code`):
* chr-testdev (`<code>q` on the virtio console, harness/virtio.py): QEMU exits with `(code << 1) | 1`
  (`qemu_exit_status`); arm/run turns 1 into 0: `kut_status` -> 0 pass, 77 skip (code 38, what
  `report_summary` returns when every test skipped), 3 fail (code 1), `(code << 1) | 1` otherwise.
* no testdev (`run --no-chr-testdev`): the guest prints `EXIT: STATUS=<(code << 1) | 1>` and powers off with
  PSCI SYSTEM_OFF; as `run_test_status` does, the first console line starting with `EXIT: ` gives the status
  (`exit_line_status`: 1 -> 0, else the number), instead of SYSTEM_OFF's 0.
The suite runner (harness/unittests.py) turns a status into run_tests.sh's verdict: 0 PASS, 77 SKIP, 124 FAIL
(timeout), above 127 FAIL (terminated on a signal: 132 SIGILL, 139 SIGSEGV), anything else FAIL.
"""
from __future__ import annotations

import re
from enum import Enum

from devmodel.record import Frozen, assign

# Exception classes and ESR_ELx (Arm ARM D17.2.37) for the death lines, defined in harness/syndrome.py
from .syndrome import (EC_BRK64, EC_DABT_CUR, EC_DABT_LOW, EC_HVC64, EC_IABT_CUR, EC_IABT_LOW, EC_NAMES, EC_SMC64,
                       EC_SVC64, EC_UNKNOWN, FSC_SYNC_EXTERNAL)
from .syndrome import esr as esr_value

__all__ = ["EXIT_BUDGET", "EXIT_BAD_INPUT", "EXIT_UNDEF", "EXIT_FATAL", "EXIT_KILLED", "EXIT_ABORT", "MAX_GUEST_STATUS", "Kind", "Outcome",
           "HarnessInputError", "esr_value", "kut_status", "exit_line_status", "EXIT_SKIP", "EC_UNKNOWN",
           "EC_SVC64", "EC_HVC64", "EC_SMC64",
           "EC_IABT_LOW", "EC_IABT_CUR", "EC_DABT_LOW", "EC_DABT_CUR", "EC_BRK64", "EC_NAMES"]

EXIT_BUDGET = 124
EXIT_BAD_INPUT = 125
EXIT_UNDEF = 132
EXIT_FATAL = 134              # 128 + SIGABRT: QEMU's abort() on an unsupported semihosting operation
EXIT_KILLED = 137             # 128 + SIGKILL: killed from the debugger (harness/gdbstub.py)
EXIT_ABORT = 139
MAX_GUEST_STATUS = 123
EXIT_SKIP = 77                # kvm-unit-tests: every test skipped (run_tests.sh prints SKIP)

_EXIT_LINE = rb"^EXIT: .*STATUS=([0-9]+)"       # compiled at its first use (re's cache): not at start-up


def kut_status(qemu_status: int) -> int:
    """arm/run's status for QEMU's exit status when QEMU printed nothing on stderr (scripts/vmm.bash
    `qemu_fixup_return_code`): 1 (the testdev's code 0) -> 0; 0 (QEMU ended without the testdev) -> 1, an
    error; anything else unchanged."""
    if qemu_status == 1:
        return 0
    if qemu_status == 0:
        return 1
    return qemu_status


def exit_line_status(output: bytes) -> int | None:
    """The status `run_test_status` reads from the console: the first line starting with `EXIT: ` (its last
    `STATUS=N`), 1 -> 0; None without such a line."""
    for line in output.split(b"\n"):
        if line.startswith(b"EXIT: "):
            m = re.match(_EXIT_LINE, line, re.M)
            if m is None:
                return None
            n = int(m.group(1))
            return 0 if n == 1 else n
    return None


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


class Outcome(Frozen):
    __slots__ = ("kind", "message", "status", "vcpu", "pc", "esr", "far")
    kind: Kind
    message: str                      # one line, for the user
    status: int                       # guest status for EXIT
    vcpu: str | None                  # dvm_name of the vCPU that caused it
    pc: int | None
    esr: int | None
    far: int | None

    def __init__(self, kind: Kind, message: str, status: int = 0, vcpu: str | None = None, pc: int | None = None,
                 esr: int | None = None, far: int | None = None) -> None:
        assign(self, "kind", kind)
        assign(self, "message", message)
        assign(self, "status", status)
        assign(self, "vcpu", vcpu)
        assign(self, "pc", pc)
        assign(self, "esr", esr)
        assign(self, "far", far)

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
