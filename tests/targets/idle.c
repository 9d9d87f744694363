/*
 * A small, mostly idle checkpoint target for service tests that run many at once.
 *
 *   idle DIR MB [catch-term]
 *
 * Fills MB MiB of heap and a 64 KiB stack array with a pattern, starts one thread that sleeps in
 * nanosleep() in a loop, writes "READY <pid>" to DIR/report and then answers commands from DIR/cmd
 * like memtest: CHECK [RT] verifies everything and answers "REPORT ok=0|1 ...", EXIT exits.
 * With catch-term it handles SIGTERM (counting it in the report's terms=N) instead of dying.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fifo_target.h"

static volatile long sleeps;
static volatile sig_atomic_t terms;

static void on_term(int sig)
{
	(void)sig;
	terms++;
}

static void *sleeper(void *arg)
{
	(void)arg;
	for (;;) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		sleeps++;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	char line[256];
	uint64_t stack_area[8192];
	if (argc < 3) {
		fprintf(stderr, "usage: idle DIR MB\n");
		return 2;
	}
	size_t words = ((size_t)atol(argv[2]) << 20) / 8;
	uint64_t *heap = malloc(words * 8);
	if (!heap)
		return 2;
	for (size_t i = 0; i < words; i++)
		heap[i] = (i % 3) ? mix(i) : 0;
	for (size_t i = 0; i < 8192; i++)
		stack_area[i] = mix(i + 77);
	if (argc > 3 && strcmp(argv[3], "catch-term") == 0) {
		struct sigaction sa = { .sa_handler = on_term, .sa_flags = SA_RESTART };
		sigaction(SIGTERM, &sa, NULL);
	}
	pthread_t t;
	pthread_create(&t, NULL, sleeper, NULL);

	int report;
	FILE *cmd;
	if (fifo_ready(argv[1], &report, &cmd) < 0)
		return 2;
	while (fgets(line, sizeof(line), cmd)) {
		if (strncmp(line, "EXIT", 4) == 0)
			return 0;
		if (strncmp(line, "CHECK", 5) != 0)
			continue;
		long bad = -1;
		for (size_t i = 0; i < words && bad < 0; i++)
			if (heap[i] != ((i % 3) ? mix(i) : 0))
				bad = (long)i;
		for (size_t i = 0; i < 8192 && bad < 0; i++)
			if (stack_area[i] != mix(i + 77))
				bad = 1000000000L + (long)i;
		dprintf(report, "REPORT ok=%d bad=%ld sleeps=%ld terms=%d\n", bad < 0, bad, sleeps, (int)terms);
	}
	return 0;
}
