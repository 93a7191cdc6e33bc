/* Bad guest: prints a line without its newline by semihosting SYS_WRITE0, then spins forever (the bytes wait
 * in harness/native/console.c's buffer meanwhile). tests/harness/test_interrupt.py interrupts it with ^C. */
#include "guest.h"

#define SYS_WRITE0 0x04

int main(void)
{
	volatile u64 n = 0;
	semihosting_call(SYS_WRITE0, (u64)(uintptr_t)"no newline yet");
	for (;;)
		n++;
	return 0;
}
