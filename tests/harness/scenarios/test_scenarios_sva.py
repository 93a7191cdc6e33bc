"""The guest-SVA scenarios (sva-iopf, sva-ats, sva-dirty): outcomes per policy and mode, from guests running in
Unicorn on the whole host stack. The expectations are fixed here; the scenarios compute their results from
what the guests saw. The guests' own checks are shown to catch what they claim to (a device that loses or
repeats a write), by changing the DMA test device's bus under them."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("unicorn")

from harness.cli import main  # noqa: E402
from harness.scenarios import POLICY_NAMES, run_scenario  # noqa: E402
from harness.scenarios.platform import RECOVERABLE_FEATURES  # noqa: E402
from harness.scenarios.sva_btm import SvaRun  # noqa: E402
from harness.scenarios.sva_iopf import _decode  # noqa: E402

PINNED = ("split", "restricted", "shared")
FAST = ("private", "shared")                     # one policy with BTM advertised, one without
SLOW = tuple(p for p in POLICY_NAMES if p not in FAST)


# ---- sva-iopf -----------------------------------------------------------------------------------------------
def _iopf(policy, mode, bits=16, **kw):
    r = run_scenario("sva-iopf", policy, bits, mode=mode, **kw)
    assert r.ok, r.text()
    return r, r.metrics


@pytest.mark.parametrize("policy", FAST)
def test_sva_iopf_both_modes_complete_without_loss(policy):
    r, m = _iopf(policy, "both")
    pages, rounds = 4, 3
    assert m["stall_faults"] == m["stall_groups"] == 2 * pages * rounds      # every source and destination page
    assert m["pri_faults"] == 2 * pages * rounds and m["pri_groups"] == 2 * rounds   # one group per direction
    for mode in ("stall", "pri"):
        assert m[f"{mode}_lost"] == m[f"{mode}_twice"] == m[f"{mode}_failed_copies"] == 0
        assert m[f"{mode}_good_rounds"] == rounds and m[f"{mode}_vm_exits_per_fault"] > 0
        assert m[f"{mode}_btm_advertised"] == int(policy in PINNED)
    assert r.options == {"mode": "both"} and m["pinned_vmid_changes"] == 0


def test_sva_iopf_without_btm_costs_a_forwarded_tlbi_per_fault():
    _, shared = _iopf("shared", "stall")
    _, private = _iopf("private", "stall")
    # the same faults; without BTM each mapping also costs TLBI_NH_VA + CMD_SYNC: one more exit and host call
    assert private["stall_faults"] == shared["stall_faults"]
    assert private["stall_host_calls_per_fault"] == pytest.approx(shared["stall_host_calls_per_fault"] + 1)
    assert private["stall_vm_exits_per_fault"] > shared["stall_vm_exits_per_fault"]


def test_sva_iopf_pri_groups_amortise_the_cost():
    _, one = _iopf("shared", "pri", pages=1)
    _, eight = _iopf("shared", "pri", pages=8)
    assert eight["pri_host_calls_per_fault"] < one["pri_host_calls_per_fault"]
    assert one["pri_groups"] == eight["pri_groups"]                  # a group per direction whatever its size


@pytest.mark.slow
@pytest.mark.parametrize("policy", SLOW)
@pytest.mark.parametrize("bits", [8, 16])
def test_sva_iopf_every_policy(policy, bits):
    _, m = _iopf(policy, "both", bits)
    assert m["stall_btm_advertised"] == int(policy in PINNED)


def _guest_run(mode, bus_filter):
    """sva-iopf's guest with the device's bus replaced by `bus_filter(bus, plat)` (a device that misbehaves)."""
    run = SvaRun("shared", 16, 1, rounds=2, stack="vsmmu", program="sva_iopf", params=[2, mode, 4],
                 features=RECOVERABLE_FEATURES, vmm_kw=dict(ats=True, iopf=True))
    dma = run.plat.devices["sva"].dma
    dma.bus = bus_filter(dma.bus, run.plat)
    run.plat.run(timeout=60.0)
    return [_decode(r["value"]) + (r["outcome"],) for r in run.plat.reports_of("sva") if r["index"] > 0]


class _Bus:
    """A device's view of the bus that forwards everything (subclasses change writes)."""

    def __init__(self, bus, plat):
        self.bus, self.plat = bus, plat

    def __getattr__(self, name):
        return getattr(self.bus, name)


class _DropsAWrite(_Bus):
    """A device that loses its second page write (the second destination page of the first copy: the device's
    only whole-page writes are its destination pages)."""
    pages_written = 0

    def write_bytes(self, pa, data):
        if len(data) == 4096:
            self.pages_written += 1
            if self.pages_written == 2:
                return None
        return self.bus.write_bytes(pa, data)


class _RepeatsAWrite(_Bus):
    """A device that, after each fault it waited on, writes its previous page again (redone work)."""

    def write_bytes(self, pa, data):
        prev = getattr(self, "prev", None)
        if prev is not None and len(data) == 4096:
            self.bus.write_bytes(*prev)                               # the earlier piece once more
        self.prev = (pa, bytes(data)) if len(data) == 4096 else prev
        return self.bus.write_bytes(pa, data)


@pytest.mark.parametrize("mode", [0, 1])
def test_the_guest_detects_a_lost_page(mode):
    first, second = _guest_run(mode, _DropsAWrite)
    assert first[2] == 1 and first[3] == 0 and first[4] == "other"    # lost 1, twice 0: not ok
    assert second[2:] == (0, 0, "fresh")


def test_the_guest_detects_a_page_written_twice():
    rounds = _guest_run(0, _RepeatsAWrite)                            # stall: a fault before every page
    assert any(tw >= 1 for _f, _g, _lo, tw, _o in rounds) and all(o == "other" for *_x, o in rounds)


# ---- sva-ats ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", FAST)
def test_sva_ats_atc_inv_keeps_dma_fresh(policy):
    r = run_scenario("sva-ats", policy, 16)
    m = r.metrics
    assert r.ok and m["stale_dma"] == 0 and m["atc_invalidations"] == m["rounds"] + 1   # + the one at enable
    assert m["ats_requests"] == 2 * m["rounds"] and m["btm_advertised"] == int(policy in PINNED)


@pytest.mark.parametrize("policy", FAST)
def test_sva_ats_trusting_the_tlb_invalidation_alone_is_stale_through_the_atc(policy):
    r = run_scenario("sva-ats", policy, 16, atc_inv="no")
    m = r.metrics
    assert not r.ok and m["stale_dma"] == m["rounds"] == 4
    assert m["atc_hits"] == m["rounds"] and m["atc_invalidations"] == 1        # only the host's at enable
    assert "ATC" in r.verdict


@pytest.mark.slow
@pytest.mark.parametrize("policy", SLOW)
@pytest.mark.parametrize("atc_inv", ["yes", "no"])
def test_sva_ats_every_policy(policy, atc_inv):
    r = run_scenario("sva-ats", policy, 8, atc_inv=atc_inv)
    assert r.ok == (atc_inv == "yes") and (r.metrics["stale_dma"] > 0) == (atc_inv == "no")


# ---- sva-dirty ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_sva_dirty_relying_on_btm(policy):
    r = run_scenario("sva-dirty", policy, 16)
    m = r.metrics
    assert m["pages_written"] == 30 and m["spurious_dirty"] == 0 and m["dma_faults"] == 0
    assert m["httu_updates"] == m["dirty_found"]                      # every dirty page was marked by the SMMU
    if policy in PINNED:                                              # the broadcasts carry the STE's VMID
        assert r.ok and m["missed_dirty"] == 0 and m["dirty_found"] == 30
    else:                                                             # stale writable-dirty TLB entries
        assert not r.ok and m["missed_dirty"] > 0 and m["dirty_found"] == 30 - m["missed_dirty"]
        assert "not found dirty" in r.verdict


@pytest.mark.parametrize("policy", FAST)
def test_sva_dirty_on_the_vsmmu_forwards_where_btm_is_not_safe(policy):
    r = run_scenario("sva-dirty", policy, 16, stack="vsmmu")
    m = r.metrics
    assert r.ok and m["missed_dirty"] == 0 and m["dirty_found"] == 30
    assert (m["vm_exits_per_invalidation"] > 0) == (policy not in PINNED)     # forwarded TLBI_NH_VA


# ---- CLI -----------------------------------------------------------------------------------------------------
def test_cli_runs_a_mode_and_reports_it(capsys):
    assert main(["scenario", "run", "sva-iopf", "--mode", "pri", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["options"] == {"mode": "pri"} and d["ok"] and "pri_faults" in d["metrics"]
    assert "stall_faults" not in d["metrics"]
    assert main(["scenario", "run", "sva-ats", "--atc-inv", "no"]) == 1
    assert "NOT OK: stale DMA through the device's ATC" in capsys.readouterr().out


@pytest.mark.parametrize("argv, msg", [
    (["sva-btm", "--atc-inv", "no"], "--atc-inv is an option of sva-ats, not sva-btm"),
    (["sva-iopf", "--mode", "dma"], "--mode 'dma': sva-iopf takes stall, pri, both"),
    (["sva-dirty", "--stack", "vsmmu2"], "--stack 'vsmmu2': sva-dirty takes port, vsmmu"),
])
def test_cli_refuses_options_of_other_scenarios(capsys, argv, msg):
    assert main(["scenario", "run", *argv]) == 125
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


# ---- the report -----------------------------------------------------------------------------------------------
def test_report_runs_the_iopf_sweep_and_the_variants_and_plots_them(tmp_path):
    """What the report does with the guest-SVA scenarios (a fake runner: only the arrangement is tested)."""
    import io
    import xml.etree.ElementTree as ET

    from harness.scenarios.report import IOPF_PAGES, Matrix, ProgressBar, run_report

    from .fake_sva import FakeSvaRunner
    runner = FakeSvaRunner()
    m = Matrix(["sva-iopf", "sva-ats"], ["private", "shared"], [8])
    files = run_report(tmp_path, m, runner, ProgressBar(1, io.StringIO()))
    assert [c for c in runner.calls if c[0] == "sva-iopf" and c[2]] == \
        [("sva-iopf", "shared", (("pages", n),)) for n in IOPF_PAGES]
    assert [c for c in runner.calls if c[0] == "sva-ats" and c[2]] == \
        [("sva-ats", p, (("atc_inv", "no"),)) for p in ("private", "shared")]
    md = files["report.md"].read_text()
    assert "| private | 8 | atc_inv=no | **no** |" in md and "| 8 | 3.12 | 2.00 | 2.12 | 0.25 | 6 |" in md
    root = ET.fromstring(files["iopf_cost.svg"].read_text())
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert {ln.get("data-names") for ln in lines} == {"stall exits", "stall host calls", "pri exits",
                                                       "pri host calls"}
    data = json.loads(files["results.json"].read_text())
    assert [r["options"] for r in data["iopf_sweep"]] == [{"pages": n} for n in IOPF_PAGES]
