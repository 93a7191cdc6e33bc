/*
 * Semihosting as a guest written for QEMU virt uses it at boot: the command line (SYS_GET_CMDLINE), the heap
 * and stack QEMU computes for a -kernel boot (SYS_HEAPINFO), used for real (a pattern written at both ends
 * and read back), and files in the current directory (SYS_OPEN/WRITE/SEEK/FLEN/READ/RENAME/REMOVE). Run it
 * from a directory holding in.txt ("input file\n"), as an ELF or as a raw image (`build --binary`), with
 * `-append`: tests/harness/test_boot_qemu.py runs it under qemu-system-aarch64 -semihosting (cwd = that
 * directory) and under `smmu-harness run --semihosting-root DIR` and compares. Exit status: the number of
 * words on the command line (the image name included) plus 10 * the number of failed checks.
 */
#include "sh_calls.h"

static int failed;

static void check(bool ok, const char *what)
{
	printf("%s: %s\n", ok ? "ok" : "FAILED", what);
	failed += !ok;
}

static const char *basename(const char *path)
{
	const char *b = path;

	for (; *path; path++)
		if (*path == '/')
			b = path + 1;
	return b;
}

static int cmdline(void)
{
	char line[512];
	u64 blk[2] = { (u64)line, sizeof(line) };
	const char *args = "";
	int words = 0;
	bool in_word = false;

	memset(line, 0, sizeof(line));
	if (sh(0x15, (u64)blk)) {
		printf("cmdline: failed errno %lld\n", err());
		return 0;
	}
	for (char *p = line; *p; p++) {
		words += *p != ' ' && !in_word;
		in_word = *p != ' ';
		if (*p == ' ' && !*args) {
			*p = 0;                 /* the image path as given to -kernel ends here */
			args = p + 1;
		}
	}
	printf("cmdline: %llu bytes, %d words, image %s, args '%s'\n", blk[1], words, basename(line), args);
	return words;
}

extern char __image_start[], __image_end[];     /* link.ld: the image, .bss and the stacks included */

static void heap(void)
{
	u64 hi[4] = { 0 }, *hp = hi, end = (u64)__image_end;
	volatile u64 *lo, *top;

	check(sh(0x16, (u64)&hp) == 0, "SYS_HEAPINFO returns 0");
	printf("heap: %llx-%llx stack: %llx-%llx\n", hi[0], hi[1], hi[2], hi[3]);
	check(hi[0] < hi[1] && hi[2] == hi[1] && hi[3] == hi[0], "stack is the heap range, growing down");
	/* QEMU counts what it loaded: a raw image's .bss (never in the file) can lie inside the "heap" */
	printf("heap starts inside the image's .bss: %s\n", hi[0] >= (u64)__image_start && hi[0] < end ? "yes" : "no");
	lo = (volatile u64 *)(hi[0] > end ? hi[0] : end);
	top = (volatile u64 *)(hi[1] - 8);
	*lo = 0x1122334455667788ULL;
	*top = ~0x1122334455667788ULL;
	check(*lo == 0x1122334455667788ULL && *top == ~0x1122334455667788ULL, "heap memory at both ends works");
}

static void files(void)
{
	char buf[64];
	s64 h = sopen("out.txt", 4);          /* "w" */

	printf("open out.txt w: %lld\n", h);
	printf("write: not written %lld\n", three(0x05, h, (u64)"semihosting file\n", 17));
	printf("flen: %lld\n", one(0x0c, h));
	printf("close: %lld\n", one(0x02, h));
	h = sopen("out.txt", 0);
	memset(buf, 0, sizeof(buf));
	printf("seek 12: %lld read: not read %lld '%s'\n", two(0x0a, h, 12), three(0x06, h, (u64)buf, 32), buf);
	one(0x02, h);
	h = sopen("in.txt", 0);
	memset(buf, 0, sizeof(buf));
	printf("in.txt: flen %lld read: not read %lld '%s'\n", one(0x0c, h), three(0x06, h, (u64)buf, 63), buf);
	one(0x02, h);
	h = sopen("out.txt", 2);              /* "r+": update from the start */
	printf("update: not written %lld\n", three(0x05, h, (u64)"S", 1));
	one(0x02, h);
	printf("rename out.txt kept.txt: %lld\n", sh(0x0f, (u64)(u64[]){ (u64)"out.txt", 7, (u64)"kept.txt", 8 }));
	printf("open out.txt again: %lld errno %lld\n", sopen("out.txt", 0), err());
	printf("remove in.txt: %lld again %lld errno %lld\n", two(0x0e, (u64)"in.txt", 6),
	       two(0x0e, (u64)"in.txt", 6), err());
}

int main(void)
{
	int words = cmdline();

	heap();
	files();
	printf("boot_args: x0 %s\n", boot_args[0] ? "device tree" : "0");
	return words + 10 * failed;
}
