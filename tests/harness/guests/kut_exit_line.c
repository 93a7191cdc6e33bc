/*
 * Ends the way kvm-unit-tests' lib/arm/io.c exit() does when there is no chr-testdev: print
 * "EXIT: STATUS=<(code << 1) | 1>" and power off with PSCI SYSTEM_OFF. The code comes from the command
 * line's first digit when built with -DCODE=n (default 1: a failure, STATUS=3).
 */
#include "guest.h"

#ifndef CODE
#define CODE 1
#endif

int main(void)
{
	printf("INFO: about to exit with code %d\n", CODE);
	printf("\nEXIT: STATUS=%d\n", (CODE << 1) | 1);
	psci_call(PSCI_SYSTEM_OFF, 0, 0, 0);
	return 99;              /* not reached: SYSTEM_OFF does not return */
}
