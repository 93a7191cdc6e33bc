/*
 * Console input through semihosting: SYS_READC until a newline, then SYS_READ of a `:tt` read handle (what
 * there is, up to 16 bytes), each echoed on the PL011. With "again" on the command line it asks for one more
 * character after that: at the end of the input the call never completes (QEMU halts the vCPU until input
 * arrives; smmu-harness ends the run with status 124 when nothing else can run). tests/harness/
 * test_semihosting_machine.py feeds it input on a pipe, late, and to its end.
 */
#include "sh_calls.h"

int main(void)
{
	char line[64], buf[17], cmd[256];
	u64 blk[2] = { (u64)cmd, sizeof(cmd) }, rd[3];
	int n = 0;
	s64 c, h;

	while (n < 63 && (c = sh(0x07, 0)) != '\n')
		line[n++] = (char)c;
	line[n] = 0;
	printf("readc: '%s'\n", line);
	memset(buf, 0, sizeof(buf));
	h = sh(0x01, (u64)(u64[]){ (u64)":tt", 0, 3 });
	rd[0] = h;
	rd[1] = (u64)buf;
	rd[2] = 16;
	printf("read: not read %lld '%s'\n", sh(0x06, (u64)rd), buf);
	memset(cmd, 0, sizeof(cmd));
	if (sh(0x15, (u64)blk) == 0 && strlen(cmd) > 6 && !strcmp(cmd + strlen(cmd) - 6, " again")) {
		printf("readc again\n");
		printf("readc: %lld\n", sh(0x07, 0));
	}
	return 0;
}
