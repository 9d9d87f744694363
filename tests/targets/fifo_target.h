/*
 * What the FIFO targets share (memtest.c, idle.c, manyvmas.c): the pattern they fill memory with,
 * and the handshake with the caller through the FIFOs DIR/report and DIR/cmd (sleeper.c and
 * suspender.c only report).
 */
#ifndef FIFO_TARGET_H
#define FIFO_TARGET_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

/* The pattern: word i of a region holds mix(i + seed) (splitmix64's finaliser). */
static inline uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Opens the FIFO DIR/report for writing (once the caller has it open for reading); -1 on failure. */
static inline int fifo_report(const char *dir)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/report", dir);
	return open(path, O_WRONLY);
}

/* Opens DIR/report for writing and DIR/cmd for reading, then writes "READY <pid>" to the report. */
static inline int fifo_ready(const char *dir, int *report, FILE **cmd)
{
	char path[4096];
	*report = fifo_report(dir);
	snprintf(path, sizeof(path), "%s/cmd", dir);
	*cmd = fopen(path, "r");
	if (*report < 0 || !*cmd)
		return -1;
	dprintf(*report, "READY %d\n", getpid());
	return 0;
}

#endif
