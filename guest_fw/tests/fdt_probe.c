/*
 * Device-tree probe, booted as a raw image (build it with `smmu-harness build --binary`): QEMU's -kernel stub
 * (and smmu-harness's) enters it at RAM + 0x80000 with x0 = the device tree (Linux Documentation/arch/arm64/
 * booting.rst), kept by start.S in boot_args[0]. It walks the flattened tree (Devicetree Specification v0.4,
 * chapter 5: big-endian header, structure block of BEGIN_NODE/PROP/END_NODE tokens, strings block) and
 * prints what a kernel would look for: memory, CPUs, the PSCI method, /chosen, the PL011, the timer and
 * the interrupt controller. The same binary prints the same lines under qemu-system-aarch64 -M virt
 * -kernel and under smmu-harness run (tests/harness/test_boot_qemu.py). Exit status: the number of CPU nodes.
 */
#include "guest.h"

#define FDT_MAGIC 0xd00dfeedU
#define FDT_BEGIN_NODE 1
#define FDT_END_NODE 2
#define FDT_PROP 3
#define FDT_NOP 4
#define FDT_END 9

static const u8 *blob;
static u32 off_struct, size_struct, off_strings;

static u32 be32(const void *p)
{
	const u8 *b = p;
	return (u32)b[0] << 24 | (u32)b[1] << 16 | (u32)b[2] << 8 | b[3];
}

static u64 be64(const void *p) { return (u64)be32(p) << 32 | be32((const u8 *)p + 4); }

static u32 align4(u32 n) { return (n + 3) & ~3U; }

/* The token at structure offset `off`; `*next` = offset of the token after it (-1 past the end). */
static u32 tag(u32 off, u32 *next)
{
	u32 t;

	if (off + 4 > size_struct)
		return FDT_END;
	t = be32(blob + off_struct + off);
	*next = off + 4;
	if (t == FDT_BEGIN_NODE)
		*next = align4(off + 4 + strlen((const char *)blob + off_struct + off + 4) + 1);
	else if (t == FDT_PROP)
		*next = align4(off + 12 + be32(blob + off_struct + off + 4));
	return t;
}

static const char *node_name(u32 node) { return (const char *)blob + off_struct + node + 4; }

/* Property `name` of the node whose BEGIN_NODE token is at `node`: its value and length, or NULL. */
static const u8 *prop(u32 node, const char *name, u32 *len)
{
	u32 off, next, t;

	tag(node, &off);
	while ((t = tag(off, &next)) == FDT_PROP || t == FDT_NOP) {
		const u8 *p = blob + off_struct + off;

		if (t == FDT_PROP && !strcmp((const char *)blob + off_strings + be32(p + 8), name)) {
			*len = be32(p + 4);
			return p + 12;
		}
		off = next;
	}
	return NULL;
}

/* The subnodes of `node`: call fn(child) for each, in tree order. */
static void children(u32 node, void (*fn)(u32 child))
{
	u32 off, next, t;
	int depth = 0;

	tag(node, &off);
	while ((t = tag(off, &next)) != FDT_END) {
		if (t == FDT_BEGIN_NODE && depth++ == 0)
			fn(off);
		else if (t == FDT_END_NODE && depth-- == 0)
			return;
		off = next;
	}
}

static u32 child(u32 node, const char *name)
{
	u32 off, next, t, found = 0;
	int depth = 0;

	tag(node, &off);
	while (!found && (t = tag(off, &next)) != FDT_END) {
		if (t == FDT_BEGIN_NODE && depth++ == 0 && !strcmp(node_name(off), name))
			found = off;
		else if (t == FDT_END_NODE && depth-- == 0)
			break;
		off = next;
	}
	return found;
}

static void show_string(u32 node, const char *name)
{
	u32 len;
	const u8 *v = prop(node, name, &len);

	if (v)
		printf(" %s=\"%s\"", name, (const char *)v);   /* the first string of a string list */
}

static void show_cells(u32 node, const char *name)
{
	u32 len, i;
	const u8 *v = prop(node, name, &len);

	if (!v)
		return;
	printf(" %s=<", name);
	for (i = 0; i + 4 <= len; i += 4)
		printf("%s%x", i ? " " : "", be32(v + i));
	printf(">");
}

static void show(u32 node, const char *const *strs, const char *const *cells)
{
	printf("%s:", node ? node_name(node) : "/");
	for (; strs && *strs; strs++)
		show_string(node, *strs);
	for (; cells && *cells; cells++)
		show_cells(node, *cells);
	printf("\n");
}

static const char *const compat[] = { "compatible", NULL };
static int ncpus;

static void root_child(u32 node)
{
	static const char *const mem_s[] = { "device_type", NULL }, *const reg[] = { "reg", NULL };
	static const char *const uart_c[] = { "reg", "interrupts", "clocks", NULL };
	static const char *const timer_c[] = { "interrupts", NULL };
	static const char *const gic_c[] = { "reg", "#interrupt-cells", NULL };
	static const char *const psci_s[] = { "compatible", "method", NULL }, *const psci_c[] = { "cpu_on", NULL };
	const char *n = node_name(node);

	if (!strncmp(n, "memory@", 7))
		show(node, mem_s, reg);
	else if (!strncmp(n, "pl011@", 6))
		show(node, compat, uart_c);
	else if (!strcmp(n, "timer"))
		show(node, compat, timer_c);
	else if (!strncmp(n, "intc@", 5))
		show(node, compat, gic_c);
	else if (!strcmp(n, "psci"))
		show(node, psci_s, psci_c);
}

static void cpu_node(u32 node)
{
	static const char *const s[] = { "device_type", "compatible", "enable-method", NULL };
	static const char *const c[] = { "reg", NULL };

	if (strncmp(node_name(node), "cpu@", 4))
		return;
	ncpus++;
	show(node, s, c);
}

int main(void)
{
	static const char *const root_s[] = { "model", "compatible", NULL };
	static const char *const root_c[] = { "#address-cells", "#size-cells", NULL };
	static const char *const chosen_s[] = { "bootargs", "stdout-path", NULL };
	u64 dtb = boot_args[0];
	u32 len, cpus, chosen;
	const u8 *mem;

	printf("fdt: x0 %llx x1 %llx x2 %llx x3 %llx\n", dtb, boot_args[1], boot_args[2], boot_args[3]);
	if (!dtb || be32((const void *)dtb) != FDT_MAGIC) {
		printf("fdt: no device tree in x0\n");
		return 100;
	}
	blob = (const u8 *)dtb;
	off_struct = be32(blob + 8);
	off_strings = be32(blob + 12);
	size_struct = be32(blob + 36);
	printf("fdt: totalsize %x version %u last-compatible %u boot-cpu %u\n", be32(blob + 4), be32(blob + 20),
	       be32(blob + 24), be32(blob + 28));
	if (tag(0, &len) != FDT_BEGIN_NODE) {
		printf("fdt: no root node\n");
		return 101;
	}
	show(0, root_s, root_c);
	children(0, root_child);
	cpus = child(0, "cpus");
	if (cpus)
		children(cpus, cpu_node);
	chosen = child(0, "chosen");
	if (chosen)
		show(chosen, chosen_s, NULL);
	mem = prop(child(0, "memory@40000000"), "reg", &len);
	if (mem && len == 16)
		printf("memory: %llx bytes at %llx, tree at +%llx\n", be64(mem + 8), be64(mem), dtb - be64(mem));
	printf("cpus: %d\n", ncpus);
	return ncpus;
}
