/*
 * A target whose worker thread keeps a pattern in the upper half of a vector register (ymm1)
 * all the time, for the dump and restore of the AVX state: a thread can be stopped anywhere, in
 * the middle of a memcpy or memcmp that holds data in those registers.
 *
 *   vectors DIR
 *
 * The worker loads the pattern once, then checks forever, with no call in between (a library
 * call may clear the upper halves), that the register still holds it. On DIR/cmd, CHECK waits
 * for a few more rounds of the worker, then answers on DIR/report
 * "REPORT ok=.. bad=none worker_errors=.. rounds=..". Without AVX it answers "REPORT ok=0 bad=noavx".
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fifo_target.h"

static const uint64_t pattern[4] __attribute__((aligned(32))) = {
	0x0123456789abcdefULL, 0xfedcba9876543210ULL, 0x5a5a5a5aa5a5a5a5ULL, 0xc3c3c3c33c3c3c3cULL,
};
static volatile long errors, rounds;

static void *worker(void *arg)
{
	(void)arg;
	__asm__ volatile("vmovdqa %0, %%ymm1" : : "m"(pattern) : "xmm1");
	for (;;) {
		uint64_t upper[2] __attribute__((aligned(16)));
		/* Only the upper half: the compiler's own SSE code may use xmm1, and leaves the rest alone. */
		__asm__ volatile("vextractf128 $1, %%ymm1, %0" : "=m"(upper));
		if (upper[0] != pattern[2] || upper[1] != pattern[3])
			errors++;
		rounds++;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int report;
	FILE *cmd;
	char line[256];
	if (argc < 2) {
		fprintf(stderr, "usage: vectors DIR\n");
		return 2;
	}
	if (fifo_ready(argv[1], &report, &cmd) < 0)
		return 2;
	int avx = __builtin_cpu_supports("avx");
	pthread_t t;
	if (avx)
		pthread_create(&t, NULL, worker, NULL);
	while (fgets(line, sizeof(line), cmd)) {
		if (strncmp(line, "EXIT", 4) == 0)
			return 0;
		if (strncmp(line, "CHECK", 5) != 0)
			continue;
		if (!avx) {
			dprintf(report, "REPORT ok=0 bad=noavx worker_errors=0 rounds=0\n");
			continue;
		}
		long before = rounds;
		while (rounds < before + 1000)
			usleep(100);
		dprintf(report, "REPORT ok=%d bad=none worker_errors=%ld rounds=%ld\n", errors == 0, errors, rounds);
	}
	return 0;
}
