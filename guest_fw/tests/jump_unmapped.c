/*
 * Bad guest: calls a function pointer into unmapped memory: exits 139 (instruction abort, synchronous external
 * abort). 0x0e00_0000 is a hole on this board and on QEMU virt, where it is the Secure-only RAM that exists only
 * with secure=on (hw/arm/virt.c VIRT_SECURE_MEM); QEMU virt's 0x1000_0000 would not do: its PCIe MMIO window
 * (VIRT_PCIE_MMIO) is there.
 */
#include "guest.h"

int main(void)
{
	void (*volatile fn)(void) = (void (*)(void))0x0e000000UL;
	printf("about to jump to unmapped memory\n");
	fn();
	return 0;
}
