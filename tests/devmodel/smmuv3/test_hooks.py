"""The SMMUv3 model's extension points (`hooks.py`): command handler table, translation backend (present,
absent, built by a factory, and a broken one surfacing), observers of configuration changes and queue events."""
from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest

from devmodel.smmuv3 import commands as C
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.device import SMMUv3
from devmodel.smmuv3.fault import EventType, Fault
from devmodel.smmuv3.hooks import ALL_STREAMS
from devmodel.smmuv3.regs import SmmuFeatures
from devmodel.smmuv3.translate import TranslationCore

from .bench import CMDQ_CONS, CR0, EVTQ_PROD, GBPA, GERROR, MSI, S2_OK, Bench

ROOT = Path(__file__).resolve().parents[3]


def test_every_opcode_has_a_default_handler_and_set_handler_wraps() -> None:
    b = Bench().setup()
    assert all(callable(b.smmu.handler(n)) for n in C.OPCODES)
    seen: list[str] = []
    model = b.smmu.handler("CMD_SYNC")

    def wrapped(cmd: C.Command) -> int:
        seen.append(cmd.name)
        return model(cmd)
    assert b.smmu.set_handler("CMD_SYNC", wrapped) is model
    b.cmd("CMD_SYNC", cs=1, msiaddr=MSI, msidata=5)
    assert seen == ["CMD_SYNC"] and b.bus.read32(MSI) == 5 and b.smmu.handler("CMD_SYNC") is wrapped
    with pytest.raises(KeyError):
        b.smmu.set_handler("TLBI_NOPE", wrapped)


def test_a_handler_error_stops_the_queue_at_that_command() -> None:
    b = Bench().setup()
    b.smmu.set_handler("PREFETCH_CONFIG", lambda cmd: C.CERROR_ABT)
    b.submit(C.encode("CMD_SYNC"), C.encode("PREFETCH_CONFIG", sid=1), C.encode("CMD_SYNC"))
    assert b.cons() == 1 and (b.r32(CMDQ_CONS) >> 24) & 0x7F == C.CERROR_ABT and b.r32(GERROR) & 1
    assert b.sink.of("smmuv3_cmdq_consume_error")[-1]["cmd_name"] == "PREFETCH_CONFIG"


def test_handlers_see_only_commands_that_pass_check() -> None:
    b = Bench(SmmuFeatures(pri=False)).setup()
    called: list[str] = []
    b.smmu.set_handler("PRI_RESP", lambda cmd: called.append(cmd.name) or 0)
    b.cmd("PRI_RESP", sid=1)
    assert called == [] and (b.r32(CMDQ_CONS) >> 24) & 0x7F == C.CERROR_ILL


def test_configuration_hooks() -> None:
    b = Bench()
    b.setup(enable=False)
    got: list[tuple] = []
    h = b.smmu.hooks
    h.smmuen.append(lambda on: got.append(("smmuen", on)))
    h.gbpa.append(lambda old, new: got.append(("gbpa", new & 1 << 20)))
    h.ste_invalidated.append(lambda first, last: got.append(("ste", first, last)))
    h.cd_invalidated.append(lambda sid, ssid: got.append(("cd", sid, ssid)))
    h.cmdq_pass_end.append(lambda: got.append(("pass",)))
    b.w32(GBPA, 1 << 20)                                      # no Update: ignored, no hook
    b.w32(GBPA, (1 << 31) | (1 << 20))                        # Update + ABORT
    b.w32(CR0, 0b1100)
    b.w32(CR0, 0b1101)
    got.clear()
    b.submit(C.encode("CFGI_STE", sid=7), C.encode("CFGI_STE_RANGE", sid=0x13, span=1),
             C.encode("CFGI_STE_RANGE", span=31), C.encode("CFGI_CD", sid=3, ssid=2),
             C.encode("CFGI_CD_ALL", sid=4))
    assert got == [("ste", 7, 7), ("ste", 0x10, 0x13), ("ste", *ALL_STREAMS), ("cd", 3, 2), ("cd", 4, None),
                   ("pass",)]
    got.clear()
    b.w32(CR0, 0b1100)
    assert got == [("pass",), ("smmuen", False)]


def test_gbpa_and_smmuen_hooks_fire_on_real_changes_only() -> None:
    b = Bench()
    b.setup(enable=False)
    got: list[tuple] = []
    b.smmu.hooks.gbpa.append(lambda old, new: got.append(("gbpa", old, new)))
    b.smmu.hooks.smmuen.append(lambda on: got.append(("smmuen", on)))
    b.w32(GBPA, 1 << 20)
    b.w32(CR0, 0b1100)
    assert got == []
    b.w32(GBPA, (1 << 31) | (1 << 20))
    assert got == [("gbpa", b.smmu.regs.regs["GBPA"].reset, b.smmu.regs["GBPA"])]
    assert not b.smmu.regs["GBPA"] >> 31                     # the update completed


def test_evtq_prod_read_hook_may_write_events_first() -> None:
    b = Bench().setup()
    rec = b.smmu.record_fault(Fault(EventType.C_BAD_STE, sid=9))
    assert rec is not None and b.r32(EVTQ_PROD) & 0xF == 1
    b.smmu.hooks.evtq_prod_read.append(lambda: b.smmu.write_event(rec))
    assert b.r32(EVTQ_PROD) & 0xF == 2 and b.smmu.events == [rec, rec]
    assert b.smmu.record_fault(Fault(EventType.C_BAD_STE, sid=9, record=False)) is None


def test_device_without_a_backend_translates_nothing() -> None:
    b = Bench()
    b.smmu = smmu = SMMUv3(b.bus, tracer=b.tracer, irq=b.irqs.append, core=None)   # MMIO through b.smmu
    assert smmu.core is None
    b.setup()
    b.put_ste(5, S.Ste(**S2_OK))
    f = smmu.translate(5, None, 0x1000)
    assert isinstance(f, Fault) and f.type == EventType.F_TRANSLATION and not f.record
    assert "no translation backend" in f.reason and smmu.events == []
    b.cmd("TLBI_NH_ALL", vmid=1)
    assert smmu.stats["invalidate_without_core"] == 1 and not smmu.btm_active


def test_backend_factory_gets_read_tracer_features() -> None:
    b = Bench()
    feats = SmmuFeatures(ril=False)
    smmu = SMMUv3(b.bus, feats, tracer=b.tracer, core=functools.partial(TranslationCore, tlb_size=8))
    assert isinstance(smmu.core, TranslationCore) and smmu.core.iotlb.capacity == 8
    assert smmu.core.features is feats and smmu.core.tracer is b.tracer and smmu.core.ril is False

    def broken(read, tracer, features, **kw):
        raise RuntimeError("backend bug")
    with pytest.raises(RuntimeError, match="backend bug"):
        SMMUv3(b.bus, core=broken)


def test_a_broken_translation_module_surfaces_at_import() -> None:
    """No `except ImportError`: if translate.py cannot be imported, neither can the device (before, the SMMU
    silently translated nothing)."""
    code = ("import sys, types\n"      # a translate module that lost its class stands for a broken file
            "sys.modules['devmodel.smmuv3.translate'] = types.ModuleType('devmodel.smmuv3.translate')\n"
            "import devmodel.smmuv3.device\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "ImportError: cannot import name 'TranslationCore'" in r.stderr, r.stderr
