/*
 * A target whose main thread sleeps in one relative clock_nanosleep(), for the restart of a
 * syscall that a checkpoint interrupts.
 *
 *   sleeper DIR SECONDS
 *
 * Writes "READY <pid>" to the FIFO DIR/report, sleeps SECONDS (CLOCK_MONOTONIC, relative), then
 * writes "REPORT slept=<ms> result=<r>" (time since just before the sleep; 0 or the errno) and exits. The kernel
 * restarts such a sleep with restart_syscall, which keeps its deadline: checkpointed past the
 * deadline, it ends as soon as it runs again; started over, it would sleep SECONDS once more.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "fifo_target.h"

static long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: sleeper DIR SECONDS\n");
		return 2;
	}
	int report = fifo_report(argv[1]);
	if (report < 0)
		return 1;
	struct timespec span = { atoi(argv[2]), 0 };
	long start = now_ms();
	dprintf(report, "READY %d\n", getpid());
	int r = clock_nanosleep(CLOCK_MONOTONIC, 0, &span, NULL);
	dprintf(report, "REPORT slept=%ld result=%d\n", now_ms() - start, r);
	return 0;
}
