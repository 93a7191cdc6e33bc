/* Bad guest: calls a function pointer into unmapped memory (0x1000_0000): exits 139. */
#include "guest.h"

int main(void)
{
	void (*volatile fn)(void) = (void (*)(void))0x10000000UL;
	printf("about to jump to unmapped memory\n");
	fn();
	return 0;
}
