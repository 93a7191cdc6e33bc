/*
 * libc-lite: string functions, console (PL011), printf subset, spinlocks, semihosting exit.
 *
 * printf conversions: %d %i %u %x %X %o %p %s %c %%, flags '-' '0' '#', a field width (number or *),
 * length modifiers hh h l ll z t j. No floating point.
 */
#include "guest.h"

/* ---- string.c ---------------------------------------------------------------------------------- */
void *memset(void *s, int c, size_t n)
{
	u8 *p = s;
	while (n--)
		*p++ = (u8)c;
	return s;
}

void *memcpy(void *d, const void *s, size_t n)
{
	u8 *dp = d;
	const u8 *sp = s;
	while (n--)
		*dp++ = *sp++;
	return d;
}

void *memmove(void *d, const void *s, size_t n)
{
	u8 *dp = d;
	const u8 *sp = s;
	if (dp <= sp || dp >= sp + n)
		return memcpy(d, s, n);
	while (n--)
		dp[n] = sp[n];
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const u8 *x = a, *y = b;
	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x - *y;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return (u8)*a - (u8)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (; n; n--, a++, b++) {
		if (*a != *b)
			return (u8)*a - (u8)*b;
		if (!*a)
			break;
	}
	return 0;
}

char *strcpy(char *d, const char *s)
{
	char *r = d;
	while ((*d++ = *s++))
		;
	return r;
}

/* ---- spinlock ---------------------------------------------------------------------------------- */
void spin_lock(struct spinlock *l)
{
	u32 tmp, busy;
	asm volatile(
	"1:	ldaxr	%w0, [%2]\n"
	"	cbnz	%w0, 1b\n"
	"	mov	%w0, #1\n"
	"	stxr	%w1, %w0, [%2]\n"
	"	cbnz	%w1, 1b\n"
	: "=&r"(tmp), "=&r"(busy) : "r"(&l->v) : "memory");
}

void spin_unlock(struct spinlock *l)
{
	asm volatile("stlr wzr, [%0]" : : "r"(&l->v) : "memory");
}

/* ---- console: PL011 (DDI 0183: UARTDR 0x000, UARTFR 0x018 TXFF bit 5, UARTCR 0x030) ------------- */
#define UARTDR 0x000
#define UARTFR 0x018
#define UARTCR 0x030
#define UARTFR_TXFF (1U << 5)
#define UARTCR_UARTEN (1U << 0)
#define UARTCR_TXE (1U << 8)
#define UARTCR_RXE (1U << 9)

void console_init(void)
{
	writel(UARTCR_UARTEN | UARTCR_TXE | UARTCR_RXE, PL011_BASE + UARTCR);
}

void putc(char c)
{
	while (readl(PL011_BASE + UARTFR) & UARTFR_TXFF)
		;
	writel((u8)c, PL011_BASE + UARTDR);
}

void puts(const char *s)
{
	while (*s)
		putc(*s++);
}

/* ---- printf ------------------------------------------------------------------------------------ */
struct out {
	char *buf;
	size_t size, len;
};

static void out_c(struct out *o, char c)
{
	if (o->len + 1 < o->size)
		o->buf[o->len] = c;
	o->len++;
}

static void out_pad(struct out *o, char c, int n)
{
	while (n-- > 0)
		out_c(o, c);
}

static void out_num(struct out *o, u64 v, int base, bool upper, bool neg, int width, bool left, bool zero)
{
	char tmp[24];
	int n = 0, len;
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	do {
		tmp[n++] = digits[v % base];
		v /= base;
	} while (v);
	len = n + neg;
	if (!left && !zero)
		out_pad(o, ' ', width - len);
	if (neg)
		out_c(o, '-');
	if (!left && zero)
		out_pad(o, '0', width - len);
	while (n)
		out_c(o, tmp[--n]);
	if (left)
		out_pad(o, ' ', width - len);
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
	struct out o = { buf, size, 0 };
	for (; *fmt; fmt++) {
		bool left = false, zero = false, alt = false;
		int width = 0, lng = 0;
		if (*fmt != '%') {
			out_c(&o, *fmt);
			continue;
		}
		fmt++;
		for (;; fmt++) {
			if (*fmt == '-')
				left = true;
			else if (*fmt == '0')
				zero = true;
			else if (*fmt == '#')
				alt = true;
			else
				break;
		}
		if (*fmt == '*') {
			width = va_arg(ap, int);
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		for (;; fmt++) {
			if (*fmt == 'l' || *fmt == 'z' || *fmt == 't' || *fmt == 'j')
				lng = 2;
			else if (*fmt == 'h')
				lng = lng > 0 ? lng : 0;
			else
				break;
		}
		switch (*fmt) {
		case 'd':
		case 'i': {
			s64 v = lng ? va_arg(ap, s64) : va_arg(ap, int);
			out_num(&o, v < 0 ? -(u64)v : (u64)v, 10, false, v < 0, width, left, zero);
			break;
		}
		case 'u':
		case 'x':
		case 'X':
		case 'o': {
			u64 v = lng ? va_arg(ap, u64) : va_arg(ap, unsigned int);
			int base = *fmt == 'u' ? 10 : *fmt == 'o' ? 8 : 16;
			if (alt && base == 16 && v) {	/* "%#x": 0x prefix, counted in the width */
				out_c(&o, '0');
				out_c(&o, *fmt == 'X' ? 'X' : 'x');
				width -= 2;
			}
			out_num(&o, v, base, *fmt == 'X', false, width, left, zero);
			break;
		}
		case 'p':
			out_c(&o, '0');
			out_c(&o, 'x');
			out_num(&o, (u64)(uintptr_t)va_arg(ap, void *), 16, false, false, width > 2 ? width - 2 : 0,
				left, zero);
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			int len;
			if (!s)
				s = "(null)";
			len = (int)strlen(s);
			if (!left)
				out_pad(&o, ' ', width - len);
			while (*s)
				out_c(&o, *s++);
			if (left)
				out_pad(&o, ' ', width - len);
			break;
		}
		case 'c':
			out_c(&o, (char)va_arg(ap, int));
			break;
		case '%':
			out_c(&o, '%');
			break;
		case '\0':
			fmt--;
			break;
		default:
			out_c(&o, '%');
			out_c(&o, *fmt);
		}
	}
	if (size)
		buf[o.len < size ? o.len : size - 1] = '\0';
	return (int)o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return n;
}

static struct spinlock print_lock;

int printf(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	spin_lock(&print_lock);
	puts(buf);
	spin_unlock(&print_lock);
	return n;
}

/* ---- semihosting ("Semihosting for AArch32 and AArch64", chapter 6) ------------------------------ */
#define SYS_WRITE0 0x04
#define SYS_EXIT 0x18
#define ADP_STOPPED_APPLICATION_EXIT 0x20026

u64 semihosting_call(u64 op, u64 param)
{
	register u64 x0 asm("x0") = op;
	register u64 x1 asm("x1") = param;
	asm volatile("hlt #0xf000" : "+r"(x0) : "r"(x1) : "memory");
	return x0;
}

void semihosting_write0(const char *s)
{
	semihosting_call(SYS_WRITE0, (u64)(uintptr_t)s);
}

void exit(int status)
{
	static volatile int exiting;
	u64 block[2] = { ADP_STOPPED_APPLICATION_EXIT, (u64)(u32)status };
	/* Without semihosting, HLT #0xF000 is undefined and the vectors call exit() again: power off then. */
	if (!exiting++)
		semihosting_call(SYS_EXIT, (u64)(uintptr_t)block);
	for (;;)	/* no semihosting: power off instead (the status is lost) */
		psci_call(PSCI_SYSTEM_OFF, 0, 0, 0);
}
