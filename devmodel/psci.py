"""PSCI 1.1 over SMCCC: the power state of a VM's CPUs as a pure state machine.

Function IDs and return codes follow the Arm Power State Coordination Interface, DEN0022 (sections 5.1
"Function prototypes" and 5.2.2 "Return error codes"); the calling convention is SMCCC (DEN0028): W0 holds
the function ID, X1-X3 the arguments, X0 the result. SMC32 function IDs (0x84xx_xxxx) take 32-bit
arguments; SMC64 IDs (0xC4xx_xxxx) take 64-bit ones.

The model decides; the caller (the harness glue) carries out the returned `action` (start a vCPU, stop one,
end the run). CPU indices are positions in `mpidrs`; targets are named by MPIDR affinity (Aff3..Aff0).
Secondaries start powered off, as on QEMU `virt` with PSCI enabled.

Model choices: CPU_ON takes effect at once (the target is ON when the call returns, so AFFINITY_INFO never
reports ON_PENDING); CPU_SUSPEND is a standby state: the caller waits for a wake-up event as in WFI (QEMU's
CPU_SUSPEND executes a WFI, target/arm/psci.c); AFFINITY_INFO supports affinity level 0 only. Not modelled: MIGRATE, SYSTEM_SUSPEND, SYSTEM_RESET2,
CPU_FREEZE, OS-initiated mode, MEM_PROTECT, residency statistics (all return NOT_SUPPORTED).
"""
from __future__ import annotations

from enum import IntEnum
from typing import Callable, Sequence

from .record import Frozen, assign
from .trace import NULL_TRACER, Tracer, define

__all__ = ["PsciFn", "PsciRet", "PowerState", "Psci", "PsciResult", "CpuOn", "CpuOff", "SystemOff",
           "SystemReset", "Standby", "MPIDR_AFF_MASK", "PSCI_VERSION_1_1", "SMCCC_VERSION_1_1"]

define("psci_call", ("cpu", "fid", "name", "args", "ret"), "a PSCI/SMCCC call and its result")

MPIDR_AFF_MASK = 0xFF_00FF_FFFF          # Aff3[39:32], Aff2[23:16], Aff1[15:8], Aff0[7:0]
PSCI_VERSION_1_1 = (1 << 16) | 1          # major[31:16], minor[15:0]
SMCCC_VERSION_1_1 = (1 << 16) | 1
_SMC64 = 1 << 30


class PsciFn(IntEnum):
    """SMC32 function IDs (DEN0022 section 5.1); OR bit 30 (SMC64) for the 64-bit variants."""
    SMCCC_VERSION = 0x8000_0000          # DEN0028 section 7.2
    SMCCC_ARCH_FEATURES = 0x8000_0001
    PSCI_VERSION = 0x8400_0000
    CPU_SUSPEND = 0x8400_0001
    CPU_OFF = 0x8400_0002
    CPU_ON = 0x8400_0003
    AFFINITY_INFO = 0x8400_0004
    MIGRATE = 0x8400_0005
    MIGRATE_INFO_TYPE = 0x8400_0006
    MIGRATE_INFO_UP_CPU = 0x8400_0007
    SYSTEM_OFF = 0x8400_0008
    SYSTEM_RESET = 0x8400_0009
    PSCI_FEATURES = 0x8400_000A


class PsciRet(IntEnum):
    """DEN0022 section 5.2.2."""
    SUCCESS = 0
    NOT_SUPPORTED = -1
    INVALID_PARAMETERS = -2
    DENIED = -3
    ALREADY_ON = -4
    ON_PENDING = -5
    INTERNAL_FAILURE = -6
    NOT_PRESENT = -7
    DISABLED = -8
    INVALID_ADDRESS = -9


class PowerState(IntEnum):
    """AFFINITY_INFO return values (DEN0022 section 5.7)."""
    ON = 0
    OFF = 1
    ON_PENDING = 2


# Actions the harness carries out after the call.
class CpuOn(Frozen):
    __slots__ = ("target", "entry", "context_id")
    target: int          # CPU index
    entry: int
    context_id: int

    def __init__(self, target: int, entry: int, context_id: int) -> None:
        assign(self, "target", target)
        assign(self, "entry", entry)
        assign(self, "context_id", context_id)


class CpuOff(Frozen):
    __slots__ = ("cpu",)
    cpu: int

    def __init__(self, cpu: int) -> None:
        assign(self, "cpu", cpu)


class SystemOff(Frozen):
    __slots__ = ()


class SystemReset(Frozen):
    __slots__ = ()


class Standby(Frozen):
    """CPU_SUSPEND: the caller waits for a wake-up event, as in WFI (the scheduler sleeps it)."""
    __slots__ = ("cpu",)
    cpu: int

    def __init__(self, cpu: int) -> None:
        assign(self, "cpu", cpu)


Action = CpuOn | CpuOff | SystemOff | SystemReset | Standby


class PsciResult(Frozen):
    __slots__ = ("ret", "action", "name")
    ret: int | None                  # value for X0; None when the call does not return (CPU_OFF, SYSTEM_OFF)
    action: Action | None
    name: str

    def __init__(self, ret: int | None, action: Action | None = None, name: str = "") -> None:
        assign(self, "ret", ret)
        assign(self, "action", action)
        assign(self, "name", name)

    @property
    def ret_text(self) -> str:
        """X0 as the guest reads it, for logs: an error code by value and name (`-2 INVALID_PARAMETERS`,
        DEN0022 5.2.2), anything else in hex (`0x10001` from PSCI_VERSION); `no return` for a call that does not
        return to the caller (CPU_OFF, SYSTEM_OFF)."""
        if self.ret is None:
            return "no return"
        if self.ret < 0:
            try:
                return f"{self.ret} {PsciRet(self.ret).name}"
            except ValueError:
                return str(self.ret)
        return hex(self.ret)


# Functions that also exist in an SMC64 form (DEN0022 section 5.1).
_HAS_SMC64 = {PsciFn.CPU_SUSPEND, PsciFn.CPU_ON, PsciFn.AFFINITY_INFO, PsciFn.MIGRATE,
              PsciFn.MIGRATE_INFO_UP_CPU}
_IMPLEMENTED = {PsciFn.PSCI_VERSION, PsciFn.CPU_SUSPEND, PsciFn.CPU_OFF, PsciFn.CPU_ON, PsciFn.AFFINITY_INFO,
                PsciFn.MIGRATE_INFO_TYPE, PsciFn.SYSTEM_OFF, PsciFn.SYSTEM_RESET, PsciFn.PSCI_FEATURES,
                PsciFn.SMCCC_VERSION}


class Psci:
    """PSCI state of one VM. `entry_ok(addr)` says whether a CPU_ON entry point is valid memory."""

    def __init__(self, mpidrs: Sequence[int], *, entry_ok: Callable[[int], bool] = lambda a: True,
                 tracer: Tracer = NULL_TRACER, log: Callable[[str, str], None] | None = None):
        self.mpidrs = [m & MPIDR_AFF_MASK for m in mpidrs]
        if len(set(self.mpidrs)) != len(self.mpidrs):
            raise ValueError(f"duplicate MPIDR affinities {[hex(m) for m in mpidrs]}")
        self.state = [PowerState.ON] + [PowerState.OFF] * (len(mpidrs) - 1)
        self.entry_ok = entry_ok
        self.tracer = tracer
        self.log = log

    def cpu_of(self, mpidr: int) -> int | None:
        try:
            return self.mpidrs.index(mpidr & MPIDR_AFF_MASK)
        except ValueError:
            return None

    @staticmethod
    def name_of(fid: int) -> str:
        fid &= 0xFFFF_FFFF
        try:
            base = PsciFn(fid & ~_SMC64)
        except ValueError:
            return f"{fid:#x}"
        return base.name + ("64" if fid & _SMC64 else "")

    def call(self, cpu: int, fid: int, x1: int = 0, x2: int = 0, x3: int = 0) -> PsciResult:
        """Handle one call from CPU index `cpu` (W0 = fid, X1..X3 = arguments)."""
        fid &= 0xFFFF_FFFF
        smc64 = bool(fid & _SMC64)
        try:
            fn = PsciFn(fid & ~_SMC64)
        except ValueError:
            fn = None
        if fn is not None and smc64 and fn not in _HAS_SMC64:
            fn = None
        if not smc64:                       # SMC32: only the low 32 bits of each argument are meaningful
            x1, x2, x3 = x1 & 0xFFFF_FFFF, x2 & 0xFFFF_FFFF, x3 & 0xFFFF_FFFF
        name = self.name_of(fid)
        if fn is None or fn not in _IMPLEMENTED:
            if self.log:
                self.log("unimp", f"PSCI/SMCCC function {name} not supported (cpu{cpu})")
            res = PsciResult(PsciRet.NOT_SUPPORTED, None, name)
        else:
            res = getattr(self, "_" + fn.name.lower())(cpu, x1, x2, x3)
            res = PsciResult(res.ret, res.action, name)
        if "psci_call" in self.tracer.enabled:
            self.tracer.emit("psci_call", cpu=cpu, fid=fid, name=name, args=(x1, x2, x3), ret=res.ret)
        return res

    # -- functions (DEN0022 chapter 5) --------------------------------------------------------------
    def _smccc_version(self, cpu: int, *_: int) -> PsciResult:
        return PsciResult(SMCCC_VERSION_1_1)

    def _psci_version(self, cpu: int, *_: int) -> PsciResult:
        return PsciResult(PSCI_VERSION_1_1)

    def _psci_features(self, cpu: int, fid: int, *_: int) -> PsciResult:
        # 5.15: 0 for a supported function (no feature flags), NOT_SUPPORTED otherwise.
        fid &= 0xFFFF_FFFF
        try:
            fn = PsciFn(fid & ~_SMC64)
        except ValueError:
            return PsciResult(PsciRet.NOT_SUPPORTED)
        if fn not in _IMPLEMENTED or fn is PsciFn.SMCCC_VERSION or (fid & _SMC64 and fn not in _HAS_SMC64):
            return PsciResult(PsciRet.NOT_SUPPORTED)
        return PsciResult(0)

    def _cpu_suspend(self, cpu: int, power_state: int, *_: int) -> PsciResult:
        return PsciResult(PsciRet.SUCCESS, Standby(cpu))

    def _cpu_off(self, cpu: int, *_: int) -> PsciResult:
        self.state[cpu] = PowerState.OFF
        return PsciResult(None, CpuOff(cpu))

    def _cpu_on(self, cpu: int, target_mpidr: int, entry: int, context_id: int) -> PsciResult:
        target = self.cpu_of(target_mpidr)
        if target is None:
            return PsciResult(PsciRet.INVALID_PARAMETERS)
        if self.state[target] is PowerState.ON:
            return PsciResult(PsciRet.ALREADY_ON)
        if self.state[target] is PowerState.ON_PENDING:
            return PsciResult(PsciRet.ON_PENDING)
        if not self.entry_ok(entry):
            return PsciResult(PsciRet.INVALID_ADDRESS)
        self.state[target] = PowerState.ON
        return PsciResult(PsciRet.SUCCESS, CpuOn(target, entry, context_id))

    def _affinity_info(self, cpu: int, target_affinity: int, lowest_level: int, *_: int) -> PsciResult:
        if lowest_level != 0:
            return PsciResult(PsciRet.INVALID_PARAMETERS)
        target = self.cpu_of(target_affinity)
        if target is None:
            return PsciResult(PsciRet.INVALID_PARAMETERS)
        return PsciResult(int(self.state[target]))

    def _migrate_info_type(self, cpu: int, *_: int) -> PsciResult:
        return PsciResult(2)      # 5.10: "Trusted OS is not present or does not require migration"

    def _system_off(self, cpu: int, *_: int) -> PsciResult:
        return PsciResult(None, SystemOff())

    def _system_reset(self, cpu: int, *_: int) -> PsciResult:
        return PsciResult(None, SystemReset())
