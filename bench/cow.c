/*
 * Benchmark target for CRIU mode: a parent fills SIZE_MB of pseudo-random heap, forks a child
 * that keeps sharing all of it copy-on-write, and both sleep. Prints "READY <parent> <child>".
 *
 *   cow SIZE_MB
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	size_t len = (size_t)(argc > 1 ? atoi(argv[1]) : 1024) << 20;
	uint64_t *heap = malloc(len), x = 88172645463325252ULL;
	if (!heap)
		return 1;
	for (size_t i = 0; i < len / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		heap[i] = x;
	}
	pid_t child = fork();
	if (child == 0) {
		for (;;)
			pause();
	}
	printf("READY %d %d\n", getpid(), child);
	fflush(stdout);
	for (;;)
		pause();
}
