"""End to end through `smmu-harness run`: the JSON Lines fields of `tlbi_trap` with their
types (range ops included), every trace format complete and valid after a crash and after an instruction or
wall-clock budget runs out, `--hcr-fb 0` reaching the decoder, and `pytest guest_fw/ -n 2`."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from devmodel.tlbi import BY_NAME
from harness.build import GUEST_FW, build_guest, build_test_guest
from harness.cli import main

SHARE = {"NSH", "ISH", "OSH"}
# Arm ARM (TLBI instructions): range Xt = ASID[63:48] TG[47:46] SCALE[45:44] NUM[43:39] TTL[38:37] BaseADDR[36:0]
GRANULE = {1: 4096, 2: 16384, 3: 65536}


def _int_or_none(v) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def test_jsonl_tlbi_trap_fields_and_types(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    elf = str(build_test_guest("tlbi_el1_forms"))
    assert main(["run", elf, "--trace", str(out), "--trace-events", "tlbi_trap"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 30 and all(r["event"] == "tlbi_trap" for r in recs)
    seqs = [r["seq"] for r in recs]
    assert all(_is_int(s) for s in seqs) and seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    ranges = 0
    for r in recs:
        op = r["op"]
        assert isinstance(op, str) and op == op.upper() and op in BY_NAME, r
        assert r["cpu"] == 0 and _is_int(r["pc"]) and isinstance(r["sym"], str) and r["sym"].startswith("main+")
        # capstone text of the trapped instruction, e.g. "tlbi vae1is, x8"
        assert isinstance(r["insn"], str) and r["insn"].startswith(f"tlbi {op.lower()}"), r
        assert r["shareability"] in SHARE and r["shareability"] == BY_NAME[op].share.value
        assert r["broadcast"] is True                                # FB=1 (KVM's setting): all EL1 ops
        assert isinstance(r["leaf"], bool) and _is_int(r["ttl"])
        for k in ("xt", "vmid", "asid", "addr"):
            assert k in r and _int_or_none(r[k]), (k, r)
        assert r["vmid"] == 1
        has_xt = op not in ("VMALLE1", "VMALLE1IS", "VMALLE1OS")
        assert (r["xt"] is not None) == has_xt
        assert (r["asid"] is None) == (op.startswith(("VMALL", "VAA", "VAAL", "RVAA")))
        if op.startswith("R"):
            ranges += 1
            for k in ("tg", "scale", "num", "range_bytes"):
                assert _is_int(r[k]), (k, r)
            xt = r["xt"]
            assert (r["tg"], r["scale"], r["num"]) == ((xt >> 46) & 3, (xt >> 44) & 3, (xt >> 39) & 31)
            assert r["range_bytes"] == (r["num"] + 1) * 2 ** (5 * r["scale"] + 1) * GRANULE[r["tg"]]
            assert (r["tg"], r["num"], r["range_bytes"], r["addr"]) == (1, 1, 4 * 4096, 0x4012_3000)
        else:
            assert not {"tg", "scale", "num", "range_bytes"} & r.keys(), r
    assert ranges == 12


LOOP_SRC = r"""#include "guest.h"
int main(void)
{
	unsigned long va = (42UL << 48) | (0x40080000UL >> 12);
	unsigned long rng = (1UL << 46) | (1UL << 39) | (0x40080000UL >> 12);
	printf("looping\n");
	for (;;) {
		asm volatile("tlbi vae1is, %0\n\tdsb ish" :: "r"(va) : "memory");
		asm volatile("tlbi rvae1is, %0\n\tdsb ish" :: "r"(rng) : "memory");
	}
	return 0;
}
"""

CRASH_SRC = r"""#include "guest.h"
int main(void)
{
	unsigned long va = (42UL << 48) | (0x40080000UL >> 12);
	asm volatile("tlbi vae1is, %0\n\tdsb ish" :: "r"(va) : "memory");
	writel(1, 0x08012000);            /* nothing there: data abort, the guest dies (139) */
	return 0;
}
"""


@pytest.fixture(scope="module")
def guests(tmp_path_factory):
    d = tmp_path_factory.mktemp("guests")
    out = {}
    for name, src in (("tlbi_loop", LOOP_SRC), ("tlbi_crash", CRASH_SRC)):
        p = d / f"{name}.c"
        p.write_text(src)
        out[name] = str(build_guest([p], name=name).path)
    return out


def _check_trace(path, fmt):
    text = path.read_text()
    if fmt == "jsonl":
        assert text.endswith("\n")
        recs = [json.loads(x) for x in text.splitlines()]         # every line complete
        assert recs and {r["event"] for r in recs} >= {"tlbi_trap", "dvm_sync"}
        return len([r for r in recs if r["event"] == "tlbi_trap"])
    if fmt == "chrome":
        evs = json.loads(text)                                       # the whole file, closing bracket included
        assert isinstance(evs, list)
        assert {e["id"] for e in evs if e["ph"] == "s"} == {e["id"] for e in evs if e["ph"] == "f"}
        return len([e for e in evs if e["ph"] == "X" and e["name"] == "tlbi_trap"])
    lines = text.splitlines()
    assert text.endswith("\n") and all(x.split(" ", 1)[0] in ("tlbi_trap", "dvm_tlbi", "dvm_sync", "tlbi_dsb")
                                       for x in lines)
    return len([x for x in lines if x.startswith("tlbi_trap ")])


@pytest.mark.parametrize("fmt", ["jsonl", "chrome", "text"])
@pytest.mark.parametrize("how,args,status", [
    ("insn budget", ["--max-insns", "300000"], 124),
    ("time budget", ["--timeout", "0.4"], 124),
])
def test_trace_file_valid_when_the_budget_runs_out(tmp_path, guests, capsys, fmt, how, args, status):
    out = tmp_path / "trace.out"
    code = main(["run", guests["tlbi_loop"], "--cpus", "2", "--trace", str(out), "--trace-format", fmt, *args])
    assert code == status, how
    assert "budget" in capsys.readouterr().err
    assert _check_trace(out, fmt) >= 2


@pytest.mark.parametrize("fmt", ["jsonl", "chrome", "text"])
def test_trace_file_valid_when_the_guest_dies(tmp_path, guests, capsys, fmt):
    out = tmp_path / "trace.out"
    assert main(["run", guests["tlbi_crash"], "--cpus", "2", "--trace", str(out), "--trace-format", fmt]) == 139
    assert "data abort" in capsys.readouterr().err
    assert _check_trace(out, fmt) == 1


def test_cli_hcr_fb_0_keeps_local_tlbis_local(tmp_path, capsys):
    """`--hcr-fb 0` reaches the decoder: the same guest matches the FB=0 golden, and not the FB=1 one."""
    elf = str(build_test_guest("tlbi_fb"))
    fb0, fb1 = GUEST_FW / "tests" / "tlbi_fb0.jsonl", GUEST_FW / "tests" / "tlbi_fb1.jsonl"
    assert main(["run", elf, "--cpus", "2", "--hcr-fb", "0", "--expect-trace", str(fb0)]) == 0
    assert main(["run", elf, "--cpus", "2", "--expect-trace", str(fb1)]) == 0            # default: FB=1
    capsys.readouterr()
    assert main(["run", elf, "--cpus", "2", "--hcr-fb", "0", "--expect-trace", str(fb1)]) == 1
    assert "broadcast: expected true, got false" in capsys.readouterr().err
    out = tmp_path / "t.jsonl"
    assert main(["run", elf, "--cpus", "2", "--hcr-fb", "0", "--trace", str(out)]) == 0
    traps = [json.loads(x) for x in out.read_text().splitlines()]
    local = [r for r in traps if r["event"] == "tlbi_trap" and r["shareability"] == "NSH"]
    assert local and all(r["broadcast"] is False for r in local)


def test_guest_suite_runs_under_xdist():
    """`pytest guest_fw/ -n 2` (pytest-xdist) runs the catalogue items on two workers."""
    pytest.importorskip("xdist")
    r = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-n", "2",
                        "-k", "tlbi_fb or tlbi_nxs or tlbi_operands", str(GUEST_FW)],
                       capture_output=True, text=True, cwd=GUEST_FW.parent, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 passed" in r.stdout and "2 workers" in r.stdout, r.stdout
    passed = [x for x in r.stdout.splitlines() if " PASSED guest_fw/tests/unittests.cfg::" in x]
    assert len(passed) == 4 and {x.split("]")[0] for x in passed} <= {"[gw0", "[gw1"}, r.stdout
