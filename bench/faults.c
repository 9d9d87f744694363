/*
 * The page-fault floor of a restore: how long writing SIZE MiB into fresh (dropped) anonymous
 * pages takes on this machine, one 2 MiB memcpy at a time, as a restore writes them.
 *
 *   faults SIZE_MB     prints the time in ms
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

int main(int argc, char **argv)
{
	size_t size = (size_t)atol(argc > 1 ? argv[1] : "1024") << 20, chunk = 2u << 20;
	char *src = malloc(chunk), *dst = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct timespec a, b;

	if (!src || dst == MAP_FAILED)
		return 1;
	memset(src, 0x5a, chunk);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (size_t at = 0; at < size; at += chunk)
		memcpy(dst + at, src, chunk);
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%ld\n", (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000);
	return 0;
}
