/* Bad guest: never exits. With --timeout or --max-insns smmu-harness exits 124. */
#include "guest.h"

int main(void)
{
	volatile u64 n = 0;
	printf("spinning forever\n");
	for (;;)
		n++;
	return 0;
}
