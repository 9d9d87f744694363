/*
 * A checkpoint target with tens of thousands of mappings and, if asked, hundreds of threads.
 *
 *   manyvmas DIR MB [THREADS] [sparse|flat]
 *
 * Maps MB MiB of anonymous memory, fills it with a pattern and makes every other page read-only
 * (mprotect), so the kernel keeps one VMA per page: 240 MiB gives about 60,000 VMAs, as a JVM or a
 * browser renderer has. With "flat", nothing is changed: the same data in one VMA, to compare with.
 * With "sparse", every other page is unmapped instead of made read-only, so
 * no two VMAs touch. THREADS threads (default 0) each keep a pattern in a stack array and block in
 * pthread_cond_wait; CHECK wakes them all to verify it. Writes "READY <pid>" to DIR/report and answers commands from DIR/cmd like
 * memtest: CHECK [RT] verifies everything and answers "REPORT ok=0|1 ...", EXIT exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fifo_target.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static long started, generation, checked, thread_errors;

static void *waiter(void *arg)
{
	uint64_t local[256];
	uint64_t seed = (uint64_t)(uintptr_t)arg * 1000003;
	for (int i = 0; i < 256; i++)
		local[i] = mix(seed + i);
	pthread_mutex_lock(&lock);
	started++;
	for (long seen = 0;;) {
		while (generation == seen)
			pthread_cond_wait(&wake, &lock);
		seen = generation;
		for (int i = 0; i < 256; i++)
			if (local[i] != mix(seed + i))
				thread_errors++;
		checked++;
		pthread_cond_broadcast(&done);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	char line[256];
	if (argc < 3) {
		fprintf(stderr, "usage: manyvmas DIR MB [THREADS] [sparse|flat]\n");
		return 2;
	}
	long page = sysconf(_SC_PAGESIZE);
	size_t size = (size_t)atol(argv[2]) << 20, pages = size / page;
	int threads = argc > 3 ? atoi(argv[3]) : 0;
	int sparse = argc > 4 && strcmp(argv[4], "sparse") == 0;
	int flat = argc > 4 && strcmp(argv[4], "flat") == 0;
	uint8_t *area = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		return 2;
	for (size_t i = 0; i < size / 8; i++)
		((uint64_t *)area)[i] = mix(i);
	for (size_t p = 1; p < pages && !flat; p += 2) {
		int r = sparse ? munmap(area + p * page, page) : mprotect(area + p * page, page, PROT_READ);
		if (r < 0) {
			perror(sparse ? "munmap" : "mprotect");
			return 2;
		}
	}
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 << 10);
	for (int i = 0; i < threads; i++) {
		pthread_t t;
		if (pthread_create(&t, &attr, waiter, (void *)(uintptr_t)(i + 1)) != 0)
			return 2;
	}
	for (;;) {
		pthread_mutex_lock(&lock);
		long n = started;
		pthread_mutex_unlock(&lock);
		if (n == threads)
			break;
		usleep(1000);
	}

	int report;
	FILE *cmd;
	if (fifo_ready(argv[1], &report, &cmd) < 0)
		return 2;
	for (;;) {
		if (!fgets(line, sizeof(line), cmd)) {
			clearerr(cmd);
			usleep(10000);
			continue;
		}
		if (!strncmp(line, "CHECK", 5)) {
			long bad = 0;
			pthread_mutex_lock(&lock);
			checked = 0;
			generation++;
			pthread_cond_broadcast(&wake);
			while (checked < threads)
				pthread_cond_wait(&done, &lock);
			pthread_mutex_unlock(&lock);
			for (size_t p = 0; p < pages; p += sparse ? 2 : 1)
				for (size_t i = p * page / 8; i < (p + 1) * page / 8; i++)
					if (((uint64_t *)area)[i] != mix(i)) {
						bad++;
						break;
					}
			dprintf(report, "REPORT ok=%d bad_pages=%ld thread_errors=%ld threads=%ld\n",
				bad == 0 && thread_errors == 0 && started == threads, bad, thread_errors, started);
		} else if (!strncmp(line, "EXIT", 4)) {
			return 0;
		}
	}
}
