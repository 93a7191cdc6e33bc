/*
 * Semihosting probe: every operation of "Semihosting for AArch32 and AArch64" that answers the same under
 * any host, with its result printed on the PL011, one line per call. Run it from a directory holding
 * sub/in.txt ("inside\n"), with console input "abcdefgh" and `-append "one  two"` (tests/devmodel/
 * test_semihosting_qemu.py does, under qemu-system-aarch64 -semihosting and under the harness's model).
 * Console streams: SYS_WRITE0/SYS_WRITEC text starts "w0:", `:tt` stdout "tt-out:", `:tt` stderr "tt-err:".
 * With "unsupported" on the command line it ends with an unknown operation (QEMU aborts); else exit(0).
 */
#include "guest.h"

#define BAD_PTR 0x100000000ULL          /* beyond the 128 MiB / 256 MiB of RAM at 0x4000_0000: unmapped */

static s64 sh(u64 op, u64 p) { return (s64)semihosting_call(op, p); }
static s64 err(void) { return sh(0x13, 0); }
static s64 sopen(const char *n, u64 mode) { u64 b[3] = { (u64)n, mode, strlen(n) }; return sh(0x01, (u64)b); }
static s64 one(u64 op, u64 a) { u64 b[1] = { a }; return sh(op, (u64)b); }
static s64 two(u64 op, u64 a, u64 c) { u64 b[2] = { a, c }; return sh(op, (u64)b); }
static s64 three(u64 op, u64 a, u64 c, u64 d) { u64 b[3] = { a, c, d }; return sh(op, (u64)b); }
static s64 swrite(s64 h, const void *p, u64 n) { return three(0x05, h, (u64)p, n); }
static s64 sread(s64 h, void *p, u64 n) { return three(0x06, h, (u64)p, n); }

static void features(void)
{
	u8 b[8] = { 0 };
	s64 h = sopen(":semihosting-features", 0);

	printf("features: open %lld flen %lld\n", h, one(0x0c, h));
	printf("features: read %lld bytes %02x %02x %02x %02x %02x\n", sread(h, b, 8), b[0], b[1], b[2], b[3], b[4]);
	printf("features: seek 4 %lld read %lld byte %02x\n", two(0x0a, h, 4), sread(h, b, 1), b[0]);
	printf("features: seek 6 %lld errno %lld\n", two(0x0a, h, 6), err());
	printf("features: istty %lld errno %lld\n", one(0x09, h), err());
	printf("features: write not written %lld\n", swrite(h, "x", 1));
	printf("features: close %lld again %lld errno %lld\n", one(0x02, h), one(0x02, h), err());
	printf("features: open mode w %lld errno %lld\n", sopen(":semihosting-features", 4), err());
}

static void console(void)
{
	char buf[16];
	s64 in = sopen(":tt", 0), out = sopen(":tt", 4), er = sopen(":tt", 8);

	printf("tt: handles %lld %lld %lld\n", in, out, er);
	printf("tt: write out %lld err %lld\n", swrite(out, "tt-out: hello\n", 14), swrite(er, "tt-err: oops\n", 13));
	printf("tt: istty %lld errno %lld\n", one(0x09, out), err());
	printf("tt: seek %lld errno %lld flen %lld\n", two(0x0a, out, 0), err(), one(0x0c, out));
	memset(buf, 0, sizeof(buf));
	printf("tt: read 4 -> %lld '%s'\n", sread(in, buf, 4), buf);
	memset(buf, 0, sizeof(buf));
	printf("tt: read 10 -> %lld '%s'\n", sread(in, buf, 10), buf);
	printf("tt: read at end -> %lld\n", sread(in, buf, 10));
	printf("tt: close %lld %lld %lld\n", one(0x02, in), one(0x02, out), one(0x02, er));
	printf("w0 ret %llx\n", (u64)sh(0x04, (u64)"w0: write0\n"));
	printf("writec ret %llx\n", (u64)sh(0x03, (u64)"\n"));
}

static void cmdline_heap(void)
{
	char buf[256];
	u64 blk[2] = { (u64)buf, sizeof(buf) }, hi[4] = { 0 }, *hp = hi;
	s64 r = sh(0x15, (u64)blk);

	printf("cmdline: %lld len %llu '%s'\n", r, blk[1], buf);
	blk[1] = 3;
	printf("cmdline: small %lld errno %lld\n", sh(0x15, (u64)blk), err());
	r = sh(0x16, (u64)&hp);
	printf("heapinfo: %lld heap %llx-%llx stack %llx-%llx\n", r, hi[0], hi[1], hi[2], hi[3]);
}

static void files(void)
{
	char buf[32];
	s64 h = sopen("data.txt", 4);

	printf("file: open w %lld write %lld close %lld\n", h, swrite(h, "hello world", 11), one(0x02, h));
	h = sopen("data.txt", 0);
	printf("file: open r %lld flen %lld istty %lld errno %lld\n", h, one(0x0c, h), one(0x09, h), err());
	memset(buf, 0, sizeof(buf));
	printf("file: seek 6 %lld read 16 -> %lld '%s'\n", two(0x0a, h, 6), sread(h, buf, 16), buf);
	printf("file: read at end -> %lld\n", sread(h, buf, 16));
	printf("file: write to r not written %lld\n", swrite(h, "zz", 2));
	printf("file: seek -1 %lld errno %lld\n", two(0x0a, h, (u64)-1), err());
	printf("file: close %lld\n", one(0x02, h));
	h = sopen("data.txt", 2);
	memset(buf, 0, sizeof(buf));
	printf("file: r+ write %lld seek %lld read -> %lld '%s'\n", swrite(h, "J", 1), two(0x0a, h, 0),
	       sread(h, buf, 31), buf);
	one(0x02, h);
	h = sopen("sub/in.txt", 0);
	memset(buf, 0, sizeof(buf));
	printf("file: sub/in.txt %lld read -> %lld '%s'\n", h, sread(h, buf, 31), buf);
	one(0x02, h);
	printf("file: missing %lld errno %lld\n", sopen("missing.txt", 0), err());
	printf("file: mode 12 %lld errno %lld\n", sopen("data.txt", 12), err());
	printf("file: wrong length %lld errno %lld\n", three(0x01, (u64)"data.txt", 0, 3), err());
	printf("file: rename %lld\n", sh(0x0f, (u64)(u64[]){ (u64)"data.txt", 8, (u64)"moved.txt", 9 }));
	printf("file: open old name %lld errno %lld\n", sopen("data.txt", 0), err());
	printf("file: remove %lld\n", two(0x0e, (u64)"moved.txt", 9));
	printf("file: remove again %lld errno %lld\n", two(0x0e, (u64)"moved.txt", 9), err());
}

static void misc(void)
{
	char buf[64];
	u64 e = 0;
	s64 h;

	memset(buf, 0, sizeof(buf));
	printf("tmpnam: %lld '%s'\n", three(0x0d, (u64)buf, 0x42, sizeof(buf)), buf);
	printf("tmpnam: short %lld\n", three(0x0d, (u64)buf, 0x42, strlen(buf)));
	printf("system: exit 3 -> %lld\n", two(0x12, (u64)"exit 3", 6));
	printf("system: file -> %lld\n", two(0x12, (u64)"echo made > made.txt", 20));
	h = sopen("made.txt", 0);
	memset(buf, 0, sizeof(buf));
	printf("system: made.txt %lld read -> %lld '%s'\n", h, sread(h, buf, 63), buf);
	one(0x02, h);
	two(0x0e, (u64)"made.txt", 8);
	printf("iserror: %lld %lld\n", one(0x08, (u64)-1), one(0x08, 5));
	printf("tickfreq: %lld\n", sh(0x31, 0));
	printf("elapsed: %lld nonzero %d\n", sh(0x30, (u64)&e), e != 0);
	printf("clock/time: %d %d\n", sh(0x10, 0) >= 0, sh(0x11, 0) >= 0);
	printf("synccache: %lld\n", sh(0x19, 0));
}

static void bad_pointers(void)
{
	printf("bad: write0 %llx\n", (u64)sh(0x04, BAD_PTR));
	printf("bad: open block %lld errno %lld\n", sh(0x01, BAD_PTR), err());
	printf("bad: open name %lld errno %lld\n", three(0x01, BAD_PTR, 0, 3), err());
	printf("bad: heapinfo %lld errno %lld\n", sh(0x16, BAD_PTR), err());
	printf("bad: write buffer not written %lld\n", swrite(sopen(":tt", 4), (void *)BAD_PTR, 7));
	printf("bad: close 0 %lld errno %lld\n", one(0x02, 0), err());
	printf("bad: flen 77 %lld errno %lld istty 77 %lld errno %lld\n", one(0x0c, 77), err(), one(0x09, 77), err());
}

static bool contains(const char *s, const char *word)
{
	for (size_t n = strlen(word); *s; s++)
		if (!strncmp(s, word, n))
			return true;
	return false;
}

int main(void)
{
	char line[256];
	u64 blk[2] = { (u64)line, sizeof(line) };

	features();
	console();
	cmdline_heap();
	files();
	misc();
	bad_pointers();
	if (sh(0x15, (u64)blk) == 0 && contains(line, "unsupported")) {
		printf("unsupported: calling 0x42\n");
		sh(0x42, 0);
		printf("unsupported: returned\n");
	}
	return 0;
}
