/*
 * kvm-unit-tests-style results: `PASS: prefix: msg`, `FAIL: ...`, `SKIP: ...`, `INFO: ...` and a final
 * `SUMMARY: N tests, M unexpected failures, K skipped`. report_summary() returns the exit status:
 * 0 when nothing failed, 1 otherwise. Safe to call from several CPUs.
 */
#include "guest.h"

static struct spinlock report_lock;
static char prefix[256];
static int prefix_len[16];
static int depth;
static int tests, failures, skipped;

void report_prefix_push(const char *p)
{
	int len, n;
	spin_lock(&report_lock);
	len = (int)strlen(prefix);
	if (depth < (int)ARRAY_SIZE(prefix_len))
		prefix_len[depth] = len;
	depth++;
	n = snprintf(prefix + len, sizeof(prefix) - (size_t)len, "%s: ", p);
	(void)n;
	spin_unlock(&report_lock);
}

void report_prefix_pop(void)
{
	spin_lock(&report_lock);
	if (depth > 0) {
		depth--;
		if (depth < (int)ARRAY_SIZE(prefix_len))
			prefix[prefix_len[depth]] = '\0';
	}
	spin_unlock(&report_lock);
}

static void va_report(const char *tag, const char *fmt, va_list ap)
{
	char msg[256];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	printf("%s: %s%s\n", tag, prefix, msg);
}

void report(bool pass, const char *fmt, ...)
{
	va_list ap;
	spin_lock(&report_lock);
	tests++;
	if (!pass)
		failures++;
	va_start(ap, fmt);
	va_report(pass ? "PASS" : "FAIL", fmt, ap);
	va_end(ap);
	spin_unlock(&report_lock);
}

void report_skip(const char *fmt, ...)
{
	va_list ap;
	spin_lock(&report_lock);
	tests++;
	skipped++;
	va_start(ap, fmt);
	va_report("SKIP", fmt, ap);
	va_end(ap);
	spin_unlock(&report_lock);
}

void report_info(const char *fmt, ...)
{
	va_list ap;
	spin_lock(&report_lock);
	va_start(ap, fmt);
	va_report("INFO", fmt, ap);
	va_end(ap);
	spin_unlock(&report_lock);
}

int report_summary(void)
{
	int ret;
	spin_lock(&report_lock);
	printf("SUMMARY: %d tests, %d unexpected failures, %d skipped\n", tests, failures, skipped);
	ret = failures ? 1 : 0;
	spin_unlock(&report_lock);
	return ret;
}
