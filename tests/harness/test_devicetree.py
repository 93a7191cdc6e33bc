"""The board's device tree (harness/devicetree.py) against QEMU 7.2's own `-M virt` tree (dumpdtb) and dtc.

QEMU and dtc are the oracles: the comparison tests skip, saying why, when qemu-system-aarch64 or dtc is absent.
"""
import shutil
import subprocess

import pytest

from devmodel.fdt import Fdt, FdtError, Node, cells, parse, string, u32
from harness.devicetree import (CPU_COMPATIBLE, DMATEST_COMPATIBLE, QEMU_FDT_SIZE, VIRT_MEM, BoardSpec,
                                BoardSpecError, DmaDeviceSpec, SmmuSpec, adjust_user_dtb, board_dtb, build_tree,
                                load_user_dtb, psci_method, virt_mpidr)

QEMU = shutil.which("qemu-system-aarch64")
DTC = shutil.which("dtc")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed "
                                                     "(Debian: apt-get install qemu-system-arm)")
needs_dtc = pytest.mark.skipif(DTC is None, reason="dtc not installed (Debian: apt-get install device-tree-compiler)")

#: QEMU virt nodes this board deliberately does not describe (docs/devicetree-and-loading.md)
NOT_MODELLED = {"/platform-bus@c000000", "/fw-cfg@9020000", "/gpio-keys", "/gpio-keys/poweroff",
                "/pl061@9030000", "/pl031@9010000", "/intc@8000000/v2m@8020000",
                "/flash@0"}
RANDOM_PROPS = {"/chosen": {"rng-seed", "kaslr-seed"}}        # random per QEMU run: left out for determinism
PCIE = "/pcie@10000000"
MiB = 1 << 20


def qemu_dtb(tmp_path, machine_opts="", *args, kernel=True) -> bytes:
    out = tmp_path / "qemu.dtb"
    extra = []
    if kernel:
        k = tmp_path / "k.bin"
        k.write_bytes(b"\0\0\0\x14")                             # b .
        extra = ["-kernel", str(k)]
    p = subprocess.run([QEMU, "-M", f"virt{machine_opts},dumpdtb={out}", "-cpu", "max", "-display", "none",
                        "-nodefaults", *extra, *args], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    return out.read_bytes()


def paths(t: Fdt) -> list[str]:
    return [p for p, _ in t.root.walk()]


def assert_same_as_qemu(ours: bytes, theirs: bytes) -> None:
    a, q = parse(ours), parse(theirs)
    assert len(ours) == len(theirs) == QEMU_FDT_SIZE and a.reserved == q.reserved == []
    assert set(paths(q)) - set(paths(a)) == NOT_MODELLED & set(paths(q))
    assert {p for p in paths(q) if p.count("/") == 1} & NOT_MODELLED == {p for p in NOT_MODELLED if p.count("/") == 1}
    assert set(paths(a)) <= set(paths(q))
    assert paths(a) == [p for p in paths(q) if p not in NOT_MODELLED], "node order differs from QEMU's"
    for path, node in a.root.walk():
        skip = RANDOM_PROPS.get(path, set()) | (not_described_pcie_props(q) if path == PCIE else set())
        theirs_props = {k: v for k, v in q.find(path).props.items() if k not in skip}
        assert list(node.props.items()) == list(theirs_props.items()), path


def not_described_pcie_props(q: Fdt) -> set[str]:
    """QEMU's PCIe host properties our tree leaves out (harness/devicetree.py `_pcie_node`): `iommu-map` (our
    SMMU is the platform devices'), `msi-map` when it targets a node we do not model (the GICv2m)."""
    pcie, out = q.find(PCIE), {"iommu-map"}
    targets = {n.u32s("phandle")[0]: p for p, n in q.root.walk() if "phandle" in n.props}
    if pcie.get("msi-map") is not None and targets[pcie.u32s("msi-map")[1]] in NOT_MODELLED:
        out.add("msi-map")
    return out


def ram(mib: int):
    return ((VIRT_MEM, mib * MiB),)


@needs_qemu
@pytest.mark.parametrize("spec,opts,args", [
    (BoardSpec(ram=ram(256), cpus=2), "", ["-smp", "2", "-m", "256"]),
    (BoardSpec(ram=ram(256), cpus=2, gic_version=3), ",gic-version=3", ["-smp", "2", "-m", "256"]),
    (BoardSpec(ram=ram(128), cpus=1), "", ["-m", "128"]),
    (BoardSpec(ram=ram(128), cpus=8), "", ["-smp", "8", "-m", "128"]),
    (BoardSpec(ram=ram(128), cpus=20, gic_version=3), ",gic-version=3", ["-smp", "20", "-m", "128"]),
    (BoardSpec(ram=ram(256), cpus=2, start_el=2), ",virtualization=on", ["-smp", "2", "-m", "256"]),
    (BoardSpec(ram=ram(256), cpus=2, start_el=2, gic_version=3, smmu=SmmuSpec(), bootargs="console=ttyAMA0 x=1"),
     ",virtualization=on,gic-version=3,iommu=smmuv3", ["-smp", "2", "-m", "256", "-append", "console=ttyAMA0 x=1"]),
    (BoardSpec(ram=ram(4096), cpu_compatible=CPU_COMPATIBLE["a53"]), "", ["-m", "4G", "-cpu", "cortex-a53"]),
    (BoardSpec(ram=ram(128), cpu_compatible=CPU_COMPATIBLE["a72"], smmu=SmmuSpec()), ",iommu=smmuv3",
     ["-cpu", "cortex-a72"]),
], ids=["v2-smp2", "v3-smp2", "v2-smp1", "v2-smp8", "v3-smp20", "v2-el2", "v3-el2-smmu-append", "a53-4G",
        "a72-smmu"])
def test_tree_matches_qemu_virt(tmp_path, spec, opts, args):
    assert_same_as_qemu(board_dtb(spec), qemu_dtb(tmp_path, opts, *args))


SPECS = [
    BoardSpec(),
    BoardSpec(cpus=4, gic_version=3, start_el=2, bootargs="a b"),
    BoardSpec(cpus=2, gic_version=3, smmu=SmmuSpec(), virtio_iommu=5,
              dma_devices=(DmaDeviceSpec(0x0910_0000, 0x1000, "smmu", 0x10),
                           DmaDeviceSpec(0x0911_0000, 0x1000, "viommu", 3),
                           DmaDeviceSpec(0x0912_0000, 0x1000, None))),
    BoardSpec(cpus=3, ram=((VIRT_MEM, 64 * MiB), (0x1_0000_0000, 1 << 32)), its=False, gic_version=3),
    BoardSpec(cpus=2, mpidrs=(0x1_0000_0000, 0x1_0000_0001), gic_version=3),
]


@needs_dtc
@pytest.mark.parametrize("spec", SPECS, ids=["default", "v3-el2", "smmu-viommu-dma", "two-ram", "aff3"])
def test_dtc_decompiles_our_tree_without_warnings(tmp_path, spec):
    f = tmp_path / "board.dtb"
    f.write_bytes(board_dtb(spec))
    p = subprocess.run([DTC, "-I", "dtb", "-O", "dts", "-o", str(tmp_path / "board.dts"), str(f)],
                       capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == "", p.stderr


def phandle_targets(t: Fdt) -> dict[int, str]:
    out = {}
    for path, n in t.root.walk():
        if "phandle" in n.props:
            (ph,) = n.u32s("phandle")
            assert ph not in out, f"phandle {ph:#x} used twice"
            out[ph] = path
    return out


def test_references_resolve_and_devices_sit_behind_their_iommus():
    t = build_tree(SPECS[2])
    ph = phandle_targets(t)
    assert ph[t.root.u32s("interrupt-parent")[0]] == "/intc@8000000"
    assert t.find("/chosen").string("stdout-path") == "/pl011@9000000" and t.find("/pl011@9000000")
    assert {ph[c] for c in t.find("/pl011@9000000").u32s("clocks")} == {"/apb-pclk"}
    smmu = t.find("/smmuv3@9050000")
    assert smmu.u32s("#iommu-cells") == (1,) and smmu.strings("interrupt-names") == (
        "eventq", "priq", "cmdq-sync", "gerror")
    assert smmu.u32s("interrupts") == (0, 74, 1, 0, 75, 1, 0, 76, 1, 0, 77, 1)
    viommu = t.find("/virtio_mmio@a000a00")               # transport 5
    assert viommu.u32s("#iommu-cells") == (1,) and viommu.u32s("interrupts") == (0, 16 + 5, 1)
    a, b, c = (t.find(f"/dmatest@{x:x}") for x in (0x0910_0000, 0x0911_0000, 0x0912_0000))
    assert a.string("compatible") == DMATEST_COMPATIBLE
    assert (ph[a.u32s("iommus")[0]], a.u32s("iommus")[1]) == ("/smmuv3@9050000", 0x10)
    assert (ph[b.u32s("iommus")[0]], b.u32s("iommus")[1]) == ("/virtio_mmio@a000a00", 3)
    assert c.get("iommus") is None
    for path in ("/cpus/cpu-map/socket0/cluster0/core0", "/cpus/cpu-map/socket0/cluster0/core1"):
        assert ph[t.find(path).u32s("cpu")[0]].startswith("/cpus/cpu@")


def test_virtio_transports_lowest_address_first():
    t = build_tree(BoardSpec())
    virtio = [n for n in t.root.children if n.name.startswith("virtio_mmio@")]
    regs = [cells_of(n, "reg")[0] for n in virtio]
    assert len(virtio) == 32 and regs == sorted(regs) and regs[0] == 0x0A00_0000 and regs[-1] == 0x0A00_3E00
    assert [n.u32s("interrupts")[1] for n in virtio] == list(range(16, 48))


def cells_of(n: Node, name: str) -> tuple[int, ...]:
    v = n.u32s(name)
    return tuple((v[i] << 32) | v[i + 1] for i in range(0, len(v), 2))


@pytest.mark.parametrize("el,method", [(1, "hvc"), (2, "smc")])
def test_psci_conduit_follows_the_start_el(el, method):
    assert psci_method(el) == method
    assert build_tree(BoardSpec(start_el=el)).find("/psci").string("method") == method


def test_gicv2_ppi_cpu_mask_and_v3_plain_flags():
    v2 = build_tree(BoardSpec(cpus=3)).find("/timer").u32s("interrupts")
    assert v2 == (1, 13, 0x704, 1, 14, 0x704, 1, 11, 0x704, 1, 10, 0x704)
    v3 = build_tree(BoardSpec(cpus=3, gic_version=3)).find("/timer").u32s("interrupts")
    assert v3[2::3] == (4, 4, 4, 4)


def test_cpu_nodes_and_mpidr_numbering():
    assert [virt_mpidr(i, 3) for i in (0, 15, 16, 17)] == [0, 15, 0x100, 0x101]
    assert [virt_mpidr(i, 2) for i in (7, 8)] == [7, 0x100]
    t = build_tree(BoardSpec(cpus=17, gic_version=3))
    assert t.find("/cpus/cpu@16").u32s("reg") == (0x100,) and t.find("/cpus").u32s("#address-cells") == (1,)
    assert t.find("/cpus/cpu@0").string("enable-method") == "psci"
    assert build_tree(BoardSpec(cpus=1)).find("/cpus/cpu@0").get("enable-method") is None   # QEMU: SMP only
    aff3 = build_tree(SPECS[4])
    assert aff3.find("/cpus").u32s("#address-cells") == (2,)
    assert aff3.find("/cpus/cpu@1").u32s("reg") == (1, 1)


def test_bootargs_and_memory_ranges():
    t = build_tree(BoardSpec(ram=((VIRT_MEM, 64 * MiB), (0x1_0000_0000, 4 << 30)), bootargs="x y"))
    assert list(t.find("/chosen").props) == ["bootargs", "stdout-path"]
    assert t.find("/chosen").string("bootargs") == "x y"
    mem = [n for n in t.root.children if n.name.startswith("memory@")]
    assert [cells_of(n, "reg") for n in mem] == [(0x1_0000_0000, 4 << 30), (VIRT_MEM, 64 * MiB)]
    assert build_tree(BoardSpec()).find("/chosen").get("bootargs") is None


@pytest.mark.parametrize("spec,message", [
    (BoardSpec(cpus=9), "GICv2 board has 1 to 8"),
    (BoardSpec(cpus=124, gic_version=3), "1 to 123"),
    (BoardSpec(gic_version=4), "GIC version"),
    (BoardSpec(start_el=3), "EL1 or EL2"),
    (BoardSpec(cpus=2, mpidrs=(1, 1)), "distinct"),
    (BoardSpec(dma_devices=(DmaDeviceSpec(),)), "SMMU the board does not have"),
    (BoardSpec(dma_devices=(DmaDeviceSpec(iommu="viommu"),)), "virtio-iommu the board does not have"),
    (BoardSpec(smmu=SmmuSpec(), dma_devices=(DmaDeviceSpec(iommu="pci"),)), "not smmu, viommu or None"),
    (BoardSpec(virtio_iommu=32), "0..31"),
    (BoardSpec(ram=()), "needs RAM"),
])
def test_boards_the_tree_cannot_describe(spec, message):
    with pytest.raises(BoardSpecError, match=message):
        build_tree(spec)


# -- a user's tree (-dtb FILE) ----------------------------------------------------------------------------
USER_DTS = """/dts-v1/;
/ {
	#address-cells = <2>;
	#size-cells = <2>;
	compatible = "test,user";
	memory@80000000 { device_type = "memory"; reg = <0 0x80000000 0 0x1000>; };
	memory { device_type = "memory"; reg = <0 0x90000000 0 0x1000>; };
	memoryx { foo = <1>; };
	soc { #address-cells = <2>; #size-cells = <2>; memory@1 { reg = <0 1 0 1>; }; };
};
"""


def compile_dts(tmp_path, text: str, name="user"):
    src, out = tmp_path / f"{name}.dts", tmp_path / f"{name}.dtb"
    src.write_text(text)
    p = subprocess.run([DTC, "-q", "-I", "dts", "-O", "dtb", "-o", str(out), str(src)], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    return out


@needs_qemu
@needs_dtc
@pytest.mark.parametrize("opts,el,append,dts", [
    ("", 1, "hello world", USER_DTS),
    (",virtualization=on", 2, "", USER_DTS),
    ("", 1, "new args", USER_DTS.replace('compatible = "test,user";', 'compatible = "test,user";\n'
                                         '\tchosen { stdout-path = "/x"; bootargs = "old"; };\n'
                                         '\tpsci { compatible = "arm,psci-0.2"; method = "smc"; };')),
], ids=["append", "el2-psci-smc", "existing-chosen-psci"])
def test_user_dtb_fixups_match_qemu(tmp_path, opts, el, append, dts):
    user = compile_dts(tmp_path, dts)
    args = ["-m", "256", "-dtb", str(user)] + (["-append", append] if append else [])
    theirs = qemu_dtb(tmp_path, opts, *args)
    ours = load_user_dtb(user, ram=((VIRT_MEM, 256 * MiB),), bootargs=append, psci=psci_method(el))
    assert len(ours) == len(theirs) == (user.stat().st_size + 10000) * 2
    a, q = parse(ours), parse(theirs)
    assert paths(a) == paths(q)
    for path, node in a.root.walk():
        assert list(node.props.items()) == list(q.find(path).props.items()), path


def test_user_dtb_fixups_without_tools():
    t = Fdt(Node("", {"#address-cells": u32(1), "#size-cells": u32(1)},
                 [Node("memory", {"reg": cells((0, 1), (1, 1))}), Node("cpus")]))
    adjust_user_dtb(t, ram=((VIRT_MEM, 128 * MiB),), bootargs="b", psci="hvc")
    assert [c.name for c in t.root.children] == ["psci", "chosen", "memory@40000000", "cpus"]
    assert t.find("/memory@40000000").u32s("reg") == (VIRT_MEM, 128 * MiB)
    assert t.find("/chosen").string("bootargs") == "b" and t.find("/psci").string("method") == "hvc"
    no_psci = Fdt(Node("", {"#address-cells": u32(2), "#size-cells": u32(2)}))
    adjust_user_dtb(no_psci, ram=((VIRT_MEM, MiB),), psci=None)
    assert no_psci.find("/psci") is None and no_psci.find("/chosen").get("bootargs") is None


@pytest.mark.parametrize("root_props,ram_size,message", [
    ({"#size-cells": u32(2)}, MiB, "no 32-bit #address-cells"),
    ({"#address-cells": u32(2), "#size-cells": u32(0)}, MiB, r"dtb file invalid \(#address-cells or #size-cells 0\)"),
    ({"#address-cells": u32(2), "#size-cells": u32(1)}, 4 << 30, "not compatible with RAM size > 4GB"),
    ({"#address-cells": u32(3), "#size-cells": u32(2)}, MiB, "not 1 or 2"),
    ({"#address-cells": u32(2), "#size-cells": string("x")}, MiB, "no 32-bit #size-cells"),
])
def test_user_dtb_refused_like_qemu(tmp_path, root_props, ram_size, message):
    f = tmp_path / "bad.dtb"
    f.write_bytes(Fdt(Node("", root_props)).to_bytes())
    with pytest.raises(FdtError, match=message) as e:
        load_user_dtb(f, ram=((VIRT_MEM, ram_size),))
    assert str(e.value).startswith(str(f)) and "\n" not in str(e.value)


@needs_qemu
@pytest.mark.parametrize("root_props,mem", [({"#address-cells": u32(2), "#size-cells": u32(0)}, "128"),
                                            ({"#address-cells": u32(2), "#size-cells": u32(1)}, "4G")])
def test_qemu_refuses_the_same_user_dtbs(tmp_path, root_props, mem):
    f = tmp_path / "bad.dtb"
    f.write_bytes(Fdt(Node("", root_props)).to_bytes())
    p = subprocess.run([QEMU, "-M", "virt", "-cpu", "max", "-display", "none", "-nodefaults", "-m", mem, "-dtb",
                        str(f), "-kernel", str(f), "-S"], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and ("dtb file" in p.stderr), p.stderr


def test_user_dtb_file_errors_name_the_file(tmp_path):
    for target, message in ((tmp_path / "missing.dtb", "no such file"), (tmp_path, "is a directory")):
        with pytest.raises(FdtError, match=message) as e:
            load_user_dtb(target, ram=ram(128))
        assert str(target) in str(e.value)
    junk = tmp_path / "junk.dtb"
    junk.write_bytes(b"not a tree at all, just text")
    with pytest.raises(FdtError, match="junk.dtb: not a device tree blob"):
        load_user_dtb(junk, ram=ram(128))
    cut = tmp_path / "cut.dtb"
    cut.write_bytes(board_dtb(BoardSpec())[:2000])
    with pytest.raises(FdtError, match="cut.dtb: truncated"):
        load_user_dtb(cut, ram=ram(128))


def test_pcie_host_node_windows_interrupts_and_msis():
    """QEMU virt's `create_pcie`: ECAM reg, the three ranges, INTx swizzled onto SPIs 3..6, RIDs to the ITS."""
    t = build_tree(SPECS[2])
    ph = phandle_targets(t)
    n = t.find(PCIE)
    assert n.string("compatible") == "pci-host-ecam-generic" and n.string("device_type") == "pci"
    assert cells_of(n, "reg") == (0x40_1000_0000, 0x1000_0000) and n.u32s("bus-range") == (0, 255)
    r = n.u32s("ranges")
    assert [r[i:i + 7] for i in range(0, len(r), 7)] == [
        (0x0100_0000, 0, 0, 0, 0x3EFF_0000, 0, 0x1_0000), (0x0200_0000, 0, 0x1000_0000, 0, 0x1000_0000, 0, 0x2EFF_0000),
        (0x0300_0000, 0x80, 0, 0x80, 0, 0x80, 0)]
    m = n.u32s("interrupt-map")
    entries = [m[i:i + 10] for i in range(0, len(m), 10)]
    assert len(entries) == 16 and {ph[e[4]] for e in entries} == {"/intc@8000000"}
    assert {(e[0] >> 11, e[3]): e[8] for e in entries}[(1, 1)] == 4          # slot 1 INTA: SPI 3 + 1
    assert sorted({e[8] for e in entries}) == [3, 4, 5, 6] and {e[9] for e in entries} == {4}
    assert n.u32s("interrupt-map-mask") == (0x1800, 0, 0, 7) and n.get("iommu-map") is None
    msi = n.u32s("msi-map")
    assert (msi[0], ph[msi[1]], msi[2], msi[3]) == (0, "/intc@8000000/its@8080000", 0, 0x1_0000)
    assert build_tree(BoardSpec()).find(PCIE).get("msi-map") is None                 # GICv2: no v2m modelled
    assert build_tree(BoardSpec(pcie=False)).find(PCIE) is None


def test_msi_parents_name_the_its_and_the_device_ids():
    t = build_tree(SPECS[2])
    ph = phandle_targets(t)
    its = "/intc@8000000/its@8080000"
    a, b = t.find("/dmatest@9100000"), t.find("/dmatest@9110000")
    assert (ph[a.u32s("msi-parent")[0]], a.u32s("msi-parent")[1]) == (its, 0x10)     # DeviceID = StreamID
    assert (ph[b.u32s("msi-parent")[0]], b.u32s("msi-parent")[1]) == (its, 3)
    assert t.find("/smmuv3@9050000").get("msi-parent") is None                     # wired interrupts only
    t = build_tree(SPECS[2]._replace(smmu=SmmuSpec(msi_devid=0x1000)))
    smmu = t.find("/smmuv3@9050000")
    assert (phandle_targets(t)[smmu.u32s("msi-parent")[0]], smmu.u32s("msi-parent")[1]) == (its, 0x1000)
    for spec in (SPECS[2]._replace(smmu=SmmuSpec(msi_devid=0x1000), gic_version=2),
                 SPECS[2]._replace(smmu=SmmuSpec(msi_devid=0x1000), its=False)):       # no ITS: no msi-parent
        t = build_tree(spec)
        assert all(n.get("msi-parent") is None for _, n in t.root.walk())
