/*
 * Hostile semihosting: a guest that tries to reach host files outside its semihosting root and feeds the
 * calls bad pointers, huge lengths and handles it never opened. Every call must fail with an errno the
 * guest can read (printed), and nothing outside the root may be read, created, changed or removed: run it
 * with `smmu-harness run --semihosting-root ROOT` where ROOT/../secret.txt exists and ROOT/link is a symbolic
 * link to it (tests/harness/test_semihosting_machine.py checks the lines and the files). Not for QEMU:
 * QEMU's semihosting is not confined and would touch the host files this guest aims at.
 */
#include "sh_calls.h"

#define BAD 0xdead00000000ULL           /* not mapped (far beyond RAM) */
#define HUGE 0x4000000000000000ULL

static void try_open(const char *name, u64 mode)
{
	s64 h = sopen(name, mode);

	printf("open %s mode %llu: %lld errno %lld\n", name, mode, h, h < 0 ? err() : 0);
	if (h >= 0)
		one(0x02, h);
}

static void escapes(void)
{
	try_open("../secret.txt", 0);
	try_open("../secret.txt", 4);
	try_open("sub/../../secret.txt", 0);
	try_open("/etc/passwd", 0);              /* the root's etc/passwd: there is none */
	try_open("link", 0);                     /* a symbolic link out of the root */
	try_open("link", 6);
	try_open("../created.txt", 4);
	try_open("sub", 0);                      /* a directory */
	printf("remove ../secret.txt: %lld errno %lld\n", two(0x0e, (u64)"../secret.txt", 13), err());
	printf("remove link: %lld\n", two(0x0e, (u64)"link", 4));     /* the link itself, never its target */
	printf("rename ../secret.txt: %lld errno %lld\n",
	       sh(0x0f, (u64)(u64[]){ (u64)"../secret.txt", 13, (u64)"stolen.txt", 10 }), err());
	printf("rename into ..: %lld errno %lld\n",
	       sh(0x0f, (u64)(u64[]){ (u64)"sub/in.txt", 10, (u64)"../in.txt", 9 }), err());
	printf("system: %lld errno %lld\n", two(0x12, (u64)"cat ../secret.txt", 17), err());
}

static void bad_pointers(void)
{
	u64 blk[3];

	printf("open block unmapped: %lld errno %lld\n", sh(0x01, BAD), err());
	printf("open name unmapped: %lld errno %lld\n", three(0x01, BAD, 0, 4), err());
	printf("write0 unmapped: %llx\n", (u64)sh(0x04, BAD));
	printf("writec unmapped: %llx\n", (u64)sh(0x03, BAD));
	printf("heapinfo unmapped: %lld errno %lld\n", sh(0x16, BAD), err());
	blk[0] = BAD;
	printf("heapinfo block unmapped: %lld errno %lld\n", sh(0x16, (u64)blk), err());
	printf("cmdline unmapped buffer: %lld errno %lld\n", two(0x15, BAD, 4096), err());
	printf("elapsed unmapped: %lld errno %lld\n", sh(0x30, BAD), err());
	printf("tmpnam unmapped: %lld errno %lld\n", three(0x0d, BAD, 1, 64), err());
	printf("name without NUL at len: %lld errno %lld\n", three(0x01, (u64)"in.txtXX", 0, 6), err());
}

static void huge_lengths(void)
{
	static char buf[64];
	s64 h = sopen("big.txt", 4);
	u64 ram_end = 0x40000000ULL + (128ULL << 20), left;

	/* 16 bytes of RAM before its end, then nothing: the write stops there (EFAULT) */
	left = three(0x05, h, ram_end - 16, HUGE);
	printf("write huge: not written %llx errno %lld flen %lld\n", left, err(), one(0x0c, h));
	one(0x02, h);
	h = sopen("big.txt", 0);
	left = three(0x06, h, (u64)buf, HUGE);
	printf("read huge: not read %llx (of %llx)\n", left, HUGE);
	one(0x02, h);
	printf("open name huge length: %lld errno %lld\n", three(0x01, (u64)"big.txt", 0, HUGE), err());
	printf("cmdline huge size, small block: %lld\n", two(0x15, (u64)buf, HUGE) == 0);
	printf("remove big.txt: %lld\n", two(0x0e, (u64)"big.txt", 7));
}

static void handles(void)
{
	char c;

	printf("close 0: %lld errno %lld\n", one(0x02, 0), err());
	printf("close 99: %lld errno %lld\n", one(0x02, 99), err());
	printf("close -1: %lld errno %lld\n", one(0x02, (u64)-1), err());
	printf("write 42: not written %lld errno %lld\n", three(0x05, 42, (u64)"x", 1), err());
	printf("read 42: not read %lld errno %lld\n", three(0x06, 42, (u64)&c, 1), err());
	printf("seek 42: %lld errno %lld\n", two(0x0a, 42, 0), err());
	printf("flen 42: %lld errno %lld\n", one(0x0c, 42), err());
	printf("istty 42: %lld errno %lld\n", one(0x09, 42), err());
	printf("close 1 << 32 | 1: %lld errno %lld\n", one(0x02, (1ULL << 32) | 77), err());
}

int main(void)
{
	escapes();
	bad_pointers();
	huge_lengths();
	handles();
	printf("done\n");
	return 0;
}
