/* Sample guest with one failing, one passing and one skipped report: exits 1 (report_summary). */
#include "guest.h"

int main(void)
{
	report_prefix_push("sample");
	report(true, "this passes");
	report(2 + 2 == 5, "this fails on purpose");
	report_skip("nothing to see here");
	report_prefix_pop();
	return report_summary();
}
