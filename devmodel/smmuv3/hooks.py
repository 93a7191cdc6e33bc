"""Extension points of the SMMUv3 model for devices built on it (a VMM's vSMMU, a device with stalls, PRI or
ATS, an interrupt controller listening to it). Everything here is public and typed; a device built on
`device.SMMUv3` never needs the model's private members.

* **Command handlers** (`CommandHandler`): the device executes every command that passes `commands.check`
  through a table opcode name -> handler `(cmd) -> CERROR` (0 = done; else the queue stops at that command
  with CMDQ_CONS.ERR = the value and GERROR.CMDQ_ERR). The table starts with the model's own handlers (CFGI_*,
  TLBI_*, ATC_INV (the endpoint's ATC), CMD_SYNC, PREFETCH_*, PRI_RESP (the endpoint's PRG response), RESUME and
  STALL_TERM (the stalls)); `SMMUv3.set_handler(name, fn)`
  replaces an entry and returns the previous handler, so a device can wrap it.
* **Translation backend** (`TranslationBackend`, built by a `BackendFactory`): walks, TLBs, invalidation and
  broadcast TLB maintenance. `SMMUv3(..., core=TranslationCore)` by default; `core=None` gives a device that
  translates nothing (every translation is an unrecorded F_TRANSLATION, TLBI commands are counted only, and
  broadcasts are ignored).
* **Observers** (`SmmuHooks`, `SMMUv3.hooks`): lists of callables the model calls, in order, after its own
  handling of a configuration change or queue event. Hooks run inside the MMIO access or command that caused
  them; whatever they raise propagates (the model does not hide bugs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..trace import Tracer
from .config import TransCfg, TransResult
from .fault import Fault, FaultClass
from .regs import SmmuFeatures

__all__ = ["CommandHandler", "TranslationBackend", "BackendFactory", "SmmuHooks", "ALL_STREAMS"]

#: `(command) -> CERROR_*`: executes one legal command (`commands.Command`); 0 when done
CommandHandler = Callable[[Any], int]

#: the StreamID range CFGI_ALL (CFGI_STE_RANGE with Range=31) reports to `SmmuHooks.ste_invalidated`
ALL_STREAMS = (0, 0xFFFF_FFFF)


class TranslationBackend(Protocol):
    """What the device asks of its translation core (`translate.TranslationCore` implements it)."""

    def translate(self, cfg: TransCfg, addr: int, write: bool = False, exec_: bool = False,
                  priv: bool = False) -> TransResult | Fault:
        """Translate `addr` under the decoded configuration `cfg` (stage 1, stage 2 or nested)."""

    def translate_s2(self, cfg: TransCfg, ipa: int, cls: FaultClass = FaultClass.CD) -> int | Fault:
        """Stage-2 translation of a read at `ipa` (nested CD fetches)."""

    def invalidate(self, cmd: Any) -> dict[str, int]:
        """Apply one TLBI_* / ATC_INV command."""

    def dvm_tlbi(self, op: Any) -> dict[str, Any]:
        """Apply one broadcast TLBI (a `tlbi_types.TlbiOp` from another DVM participant); the result's
        "malformed" entry is non-empty (the reason) when the message applied to nothing as malformed."""

    def ats_translate(self, cfg: TransCfg, addr: int, write: bool, priv: bool,
                      split: bool = False) -> tuple[int, int, int, bool] | Fault:
        """What an ATS Translation Completion for `addr` carries: (output base, size, permissions, global)."""


class BackendFactory(Protocol):
    """Builds a backend: `read(addr) -> u64` reads table memory (BusError for unmapped addresses), `cas(addr,
    expected, new) -> found` updates a descriptor atomically (HTTU, `Bus.cas64`). `TranslationCore` itself is
    one, `functools.partial(TranslationCore, ...)` another."""

    def __call__(self, read: Callable[[int], int], tracer: Tracer, features: SmmuFeatures, *,
                 cas: Callable[[int, int, int], int]) -> TranslationBackend: ...


@dataclass(eq=False, slots=True)
class SmmuHooks:
    """Observers of one SMMUv3. Append callables to the lists; each is called after the model's own work.

    * `smmuen(enabled)`: CR0.SMMUEN changed (CR0ACK updated, commands of the same write consumed).
    * `gbpa(old, new)`: a GBPA update completed (a write with GBPA.Update=1); `new` is the register value.
    * `ste_invalidated(first, last)`: CFGI_STE (first == last), CFGI_STE_RANGE, or CFGI_ALL (`ALL_STREAMS`)
      executed: the StreamIDs whose STEs software changed.
    * `cd_invalidated(sid, ssid)`: CFGI_CD (`ssid` an int) or CFGI_CD_ALL (`ssid` None) executed.
    * `cmdq_pass_end()`: the outermost command-queue consumption pass ended (queue empty, stopped by a
      CERROR, disabled, or out of budget): where a device that batches work completes it.
    * `evtq_prod_read()`: software is reading EVTQ_PROD; a device may write event records first
      (`SMMUv3.write_event`), the read returns the register afterwards.
    * `priq_prod_read()`: the same for PRIQ_PROD (IDR0.PRI=1): page requests may go in first (`page_request`).
    """
    smmuen: list[Callable[[bool], None]] = field(default_factory=list)
    gbpa: list[Callable[[int, int], None]] = field(default_factory=list)
    ste_invalidated: list[Callable[[int, int], None]] = field(default_factory=list)
    cd_invalidated: list[Callable[[int, int | None], None]] = field(default_factory=list)
    cmdq_pass_end: list[Callable[[], None]] = field(default_factory=list)
    evtq_prod_read: list[Callable[[], None]] = field(default_factory=list)
    priq_prod_read: list[Callable[[], None]] = field(default_factory=list)
