"""PSCI state machine (devmodel/psci.py) against DEN0022 function IDs and return codes."""
import pytest

from devmodel.psci import (CpuOff, CpuOn, PowerState, Psci, PsciFn, PsciRet, Standby, SystemOff, SystemReset)

MPIDRS = [0x8000_0000, 0x8000_0001, 0x8000_0002]


def test_function_ids_match_den0022():
    assert PsciFn.PSCI_VERSION == 0x8400_0000 and PsciFn.CPU_ON == 0x8400_0003
    assert PsciFn.AFFINITY_INFO == 0x8400_0004 and PsciFn.SYSTEM_OFF == 0x8400_0008
    assert PsciFn.SYSTEM_RESET == 0x8400_0009 and PsciFn.PSCI_FEATURES == 0x8400_000A
    assert PsciRet.ALREADY_ON == -4 and PsciRet.INVALID_ADDRESS == -9


def test_version_and_features():
    p = Psci(MPIDRS)
    assert p.call(0, 0x8400_0000).ret == 0x10001
    assert p.call(0, 0x8400_000A, 0xC400_0003).ret == 0            # CPU_ON64 supported
    assert p.call(0, 0x8400_000A, 0xC400_0008).ret == PsciRet.NOT_SUPPORTED   # no SYSTEM_OFF64
    assert p.call(0, 0x8400_000A, 0x8400_0012).ret == PsciRet.NOT_SUPPORTED   # SYSTEM_RESET2


def test_secondaries_start_off_and_cpu_on_starts_them():
    p = Psci(MPIDRS)
    assert p.state == [PowerState.ON, PowerState.OFF, PowerState.OFF]
    assert p.call(0, 0xC400_0004, 0x1, 0).ret == PowerState.OFF
    r = p.call(0, 0xC400_0003, 0x8000_0001, 0x4008_0000, 77)
    assert r.ret == 0 and r.action == CpuOn(1, 0x4008_0000, 77)
    assert p.call(0, 0xC400_0004, 0x1, 0).ret == PowerState.ON
    assert p.call(0, 0xC400_0003, 0x1, 0x4008_0000, 0).ret == PsciRet.ALREADY_ON


def test_cpu_on_errors():
    p = Psci(MPIDRS, entry_ok=lambda a: 0x4000_0000 <= a < 0x4800_0000)
    assert p.call(0, 0xC400_0003, 0x7, 0x4008_0000, 0).ret == PsciRet.INVALID_PARAMETERS
    assert p.call(0, 0xC400_0003, 0x2, 0x10, 0).ret == PsciRet.INVALID_ADDRESS
    assert p.state[2] is PowerState.OFF


def test_smc32_truncates_arguments():
    p = Psci(MPIDRS)
    r = p.call(0, 0x8400_0003, 0xFFFF_FFFF_0000_0002, 0x1_4008_0000, 0xAB_0000_0001)
    assert r.action == CpuOn(2, 0x4008_0000, 1)


def test_cpu_off_system_off_reset_and_suspend():
    p = Psci(MPIDRS)
    p.call(0, 0xC400_0003, 1, 0x4008_0000, 0)
    r = p.call(1, 0x8400_0002)
    assert r.ret is None and r.action == CpuOff(1) and p.state[1] is PowerState.OFF
    assert p.call(0, 0x8400_0008).action == SystemOff() and p.call(0, 0x8400_0008).ret is None
    assert p.call(0, 0x8400_0009).action == SystemReset()
    r = p.call(0, 0xC400_0001, 0, 0, 0)
    assert r.ret == 0 and r.action == Standby(0)


def test_affinity_info_levels_and_unknown_functions():
    log = []
    p = Psci(MPIDRS, log=lambda c, m: log.append(c))
    assert p.call(0, 0xC400_0004, 0, 1).ret == PsciRet.INVALID_PARAMETERS
    assert p.call(0, 0x8400_0012).ret == PsciRet.NOT_SUPPORTED
    assert p.call(0, 0xC400_0002).ret == PsciRet.NOT_SUPPORTED       # CPU_OFF has no SMC64 form
    assert p.call(0, 0x1234).ret == PsciRet.NOT_SUPPORTED
    assert log == ["unimp"] * 3


def test_duplicate_mpidrs_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        Psci([0x8000_0000, 0x0])


def test_psci_call_event_carries_the_function_name():
    # the event has a field called `name`, which Tracer.emit must accept (its own parameter is positional-only)
    from devmodel.trace import ListSink, Tracer
    sink = ListSink()
    p = Psci(MPIDRS, tracer=Tracer(sinks=[sink], events="psci_call"))
    p.call(0, 0x8400_0000)
    assert [(r["fid"], r["name"], r["ret"]) for r in sink.records] == [(0x8400_0000, "PSCI_VERSION", 0x10001)]


def test_ret_text_is_what_the_guest_reads():
    from devmodel.psci import PsciResult
    assert PsciResult(None).ret_text == "no return"
    assert PsciResult(0x10001).ret_text == "0x10001"
    assert PsciResult(0).ret_text == "0x0"
    assert PsciResult(-2).ret_text == "-2 INVALID_PARAMETERS"
    assert PsciResult(-99).ret_text == "-99"
