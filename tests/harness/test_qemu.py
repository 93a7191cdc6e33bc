"""The same guest binaries under qemu-system-aarch64 -M virt -semihosting: same console output, same status.

`test_catalogue_entry_under_qemu` runs every test of guest_fw/tests/unittests.cfg (new ones included: it reads
the catalogue) under QEMU with the entry's options and asserts its `qemu =` verdict (harness/catalogue.py
`QemuVerdict`), by default the harness's own status and output. Skipped, saying why, when QEMU is not installed
(Debian package qemu-system-arm)."""
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from guestbin import ROOT, guest_elf, run_cli
from harness.build import build_guest
from harness.catalogue import parse_catalogue
from harness.exits import EXIT_BUDGET
from harness.unittests import machine_config, run_entry

QEMU = shutil.which("qemu-system-aarch64")

pytestmark = [pytest.mark.qemu,
              pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed "
                                                      "(Debian: apt-get install qemu-system-arm)")]


def qemu(elf, cpus=1, el=1):
    machine = "virt,virtualization=on" if el == 2 else "virt"
    cmd = [QEMU, "-M", machine, "-cpu", "max", "-smp", str(cpus), "-m", "128M", "-semihosting", "-nographic",
           "-no-reboot", "-monitor", "none", "-serial", "stdio", "-kernel", str(elf)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("guest,cpus,el,status", [
    ("hello", 1, 1, 0), ("report_fail", 1, 1, 1), ("exit7", 1, 1, 7), ("smp", 2, 1, 0), ("mmu", 1, 1, 0),
    ("hello", 1, 2, 0), ("mmu", 1, 2, 0), ("smp", 2, 2, 0),
    ("undef_catch", 1, 1, 0), ("undef_catch", 1, 2, 0),          # the guest's own exception handlers
    ("exc_entry", 1, 2, 0),                                       # its own vectors, EL2 traps of EL1
    ("sve", 1, 1, 0), ("sve", 1, 2, 0), ("pauth", 1, 1, 0), ("pauth", 1, 2, 0),   # features of -cpu max
])
def test_same_binary_same_result_under_qemu(guest, cpus, el, status):
    elf = guest_elf(guest)
    q = qemu(elf, cpus, el)
    h = run_cli("run", elf, "--cpus", str(cpus), "--el", str(el))
    assert q.returncode == h.returncode == status, (q.stdout, q.stderr)
    # QEMU prints the PL011 on stdout and semihosting console output on stderr; smmu-harness both on stdout
    assert (q.stdout + q.stderr).replace("\r\n", "\n") == h.stdout


def test_unhandled_undefined_instruction_status_matches():
    q = qemu(guest_elf("undef"))
    assert q.returncode == 132 and "unhandled exception: Synchronous" in q.stdout
    assert run_cli("run", guest_elf("undef")).returncode == 132


def check_exc_entry(q, h):
    """One line differs: QEMU 7.2 reports the trapped MSR DAIFSet (EL0, SCTLR_EL1.UMA = 0) with Op1 and Op2
    swapped in the ISS (target/arm/op_helper.c daif_check passes them in the wrong order); the harness gives
    the instruction's own Op1 = 3, Op2 = 6 (Arm ARM D17.2.37, ISS for EC 0x18)."""
    diff = [(a, b) for a, b in zip(q, h) if a != b]
    assert len(q) == len(h) and len(diff) == 1, diff
    (qa, ha), = diff
    qesr, hesr = (int(x.split("esr=")[1].split()[0], 16) for x in (qa, ha))
    op1, op2 = (hesr >> 14) & 7, (hesr >> 17) & 7
    assert (op1, op2) == (3, 6) and qesr == (hesr & ~(0x3F << 14)) | op2 << 14 | op1 << 17


def _sections(lines):
    out, title = {}, None
    for line in lines:
        if line.startswith("  "):
            out[title].append(line)
        else:
            title = line.split(":")[0] if ":" in line else line
            out.setdefault(title, [])
            out[title].append(line)
    return out


def check_debug_regs(q, h):
    """Two differences, both QEMU 7.2's: it takes breakpoints while the OS lock is set (Arm ARM
    AArch64.GenerateDebugExceptionsFrom returns FALSE when OSLSR_EL1.OSLK = 1), and it takes a software step
    exception after a stepped MSR DAIFSet that masked debug exceptions (the step check before the next
    instruction, AArch64.CheckSoftwareStep, needs debug exceptions enabled). Everything else is the same."""
    q, h = _sections(q), _sections(h)
    assert q.keys() == h.keys()
    assert h["breakpoints, OS lock set"] == ["breakpoints, OS lock set: 0"]
    assert q["breakpoints, OS lock set"][1:] == h["breakpoints"][1:]         # QEMU: the same 3 as unlocked
    for title in ("single step", "single step over SVC"):
        qs, hs = q.pop(title), h.pop(title)
        assert len(qs) == len(hs) + 1 and [x.split(" far ")[0] for x in qs[1:-1]] == \
            [x.split(" far ")[0] for x in hs[1:]]
        assert qs[-1].split()[3] == f"{int(hs[-1].split()[3], 16) + 4:x}"  # after the MSR DAIFSet
        assert int(qs[-1].split()[7], 16) & (1 << 9)                          # ... with PSTATE.D set
    del q["breakpoints, OS lock set"], h["breakpoints, OS lock set"]
    assert q == h


# -- every catalogue entry ------------------------------------------------------------------------------------
CATALOGUE = ROOT / "guest_fw" / "tests" / "unittests.cfg"
ENTRIES = {e.name: e for e in parse_catalogue(CATALOGUE)}
#: `qemu = output` entries: the check that says which lines differ (QEMU output lines, harness output lines)
OUTPUT_CHECKS = {"exc_entry": check_exc_entry, "debug_regs": check_debug_regs}
#: seconds QEMU gets for a guest expected never to finish (status 124): it is not timing that decides
HANG_SECONDS = 3.0
#: the runtime's report of an exception nobody handles (guest_fw/lib/exceptions.c), printed under QEMU where
#: the harness ends the run with its own death line instead
UNHANDLED = re.compile(r"unhandled exception: .* at pc 0x([0-9a-f]+): EC 0x[0-9a-f]+ ESR 0x([0-9a-f]+) "
                       r"FAR 0x([0-9a-f]+)$")
_POOL = ThreadPoolExecutor(max_workers=2)       # QEMU runs beside the harness's run of the same entry


def qemu_entry(entry, expect_status):
    """(status, console lines) of `entry` under QEMU with its options: -smp, -m, virtualization=on for el = 2,
    -append; PL011 and semihosting console on one muxed stdio, so their order is kept. A run still going at
    the timeout (HANG_SECONDS when 124 is expected, else the entry's) is status 124, as timeout(1) gives."""
    cfg = machine_config(entry)
    elf = build_guest([entry.source], name=entry.source.stem).path
    machine = f"virt,gic-version={cfg.gic_version}" + (",virtualization=on" if cfg.start_el == 2 else "") + \
        (",mte=on" if cfg.mte else "")
    cmd = [QEMU, "-M", machine, "-cpu", "max", "-smp", str(cfg.cpus), "-m", f"{cfg.ram_mib}M", "-display", "none",
           "-no-reboot", "-monitor", "none", "-chardev", "stdio,id=con,mux=on", "-serial", "chardev:con",
           "-semihosting-config", "enable=on,target=native,chardev=con", "-kernel", str(elf)]
    if entry.test_args is not None:
        cmd += ["-append", entry.test_args]
    try:
        p = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL,
                           timeout=HANG_SECONDS if expect_status == EXIT_BUDGET else entry.timeout)
        status, out = p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        status, out = EXIT_BUDGET, e.stdout or b""
    return status, out.decode("utf-8", "replace").replace("\r\n", "\n").splitlines()


def harness_entry(entry):
    """(status, console lines, outcome) of `entry` here: the catalogue's own path (harness.unittests)."""
    rec = run_entry(entry)
    return rec.outcome.exit_code, rec.output.decode("utf-8", "replace").splitlines(), rec.outcome


def _without_death_line(lines, outcome):
    """QEMU's lines less the runtime's last "unhandled exception" line, which must give the facts of the
    harness's death (pc = ELR, ESR, FAR where the harness has one) when the harness run died."""
    m = UNHANDLED.search(lines[-1]) if lines else None
    if outcome is not None and outcome.is_death:
        assert m is not None, f"QEMU printed no unhandled exception; harness: {outcome.message}"
        pc, esr, far = (int(x, 16) for x in m.groups())
        assert (pc, esr) == (outcome.pc, outcome.esr) and outcome.far in (None, far), (lines[-1], outcome.message)
    return lines[:-1] if m else lines


@pytest.mark.parametrize("name", list(ENTRIES))
def test_catalogue_entry_under_qemu(name):
    entry = ENTRIES[name]
    if machine_config(entry).unsupported:
        pytest.skip(f"qemu_params without an equivalent here: {machine_config(entry).unsupported}")
    verdict = entry.qemu
    like = ENTRIES[verdict.entry] if verdict is not None and verdict.kind == "as" else entry
    qstatus = verdict.status if verdict is not None and verdict.kind == "status" else like.exit
    qemu_run = _POOL.submit(qemu_entry, entry, qstatus)
    hstatus, hlines, outcome = harness_entry(like)
    status, qlines = qemu_run.result()
    why = verdict.reason if verdict is not None else "no qemu = key: the harness's status and output"
    if verdict is not None and verdict.kind == "status":
        assert status == verdict.status != hstatus, (why, status, hstatus, qlines)
        qlines = _without_death_line(qlines, None)
        assert qlines == hlines[:len(qlines)], (why, qlines, hlines)
        return
    assert status == hstatus, (why, status, hstatus, qlines, hlines)
    qlines = _without_death_line(qlines, outcome)
    if verdict is not None and verdict.kind == "output":
        assert name in OUTPUT_CHECKS, f"[{name}]: qemu = output needs a check in OUTPUT_CHECKS"
        assert qlines != hlines, f"[{name}]: QEMU prints what the harness does now: drop its qemu = key"
        OUTPUT_CHECKS[name](qlines, hlines)
    else:
        assert qlines == hlines, why
