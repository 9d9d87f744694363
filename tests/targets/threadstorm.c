/*
 * Checkpoint target that never stops creating threads: each short-lived thread writes a pattern
 * into its own stack and heap buffer, checks it, and starts its successor before it exits, so
 * that threads are being created while memcr seizes the process.
 *
 *   threadstorm DIR
 *
 * FIFO protocol as memtest.c: "READY <pid>" on DIR/report; "CHECK" on DIR/cmd answers
 * "REPORT ok=<0|1> threads=<created> errors=<n>".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHAINS 3

static volatile long created, errors;

static void *link_thread(void *arg)
{
	uintptr_t seed = (uintptr_t)arg;
	uint64_t stack_buf[512];
	uint64_t *heap_buf = malloc(sizeof(stack_buf));
	pthread_t next;

	for (int i = 0; i < 512; i++)
		stack_buf[i] = heap_buf[i] = seed * 2654435761u + i;
	usleep(200);
	for (int i = 0; i < 512; i++)
		if (stack_buf[i] != seed * 2654435761u + i || heap_buf[i] != stack_buf[i])
			__atomic_add_fetch(&errors, 1, __ATOMIC_SEQ_CST);
	free(heap_buf);
	__atomic_add_fetch(&created, 1, __ATOMIC_SEQ_CST);
	while (pthread_create(&next, NULL, link_thread, (void *)(seed + CHAINS)) == EAGAIN)
		usleep(100);
	pthread_detach(next);
	return NULL;
}

int main(int argc, char **argv)
{
	char path[4096], line[64];
	pthread_t t;

	if (argc < 2)
		return 2;
	snprintf(path, sizeof(path), "%s/report", argv[1]);
	int report = open(path, O_WRONLY);
	for (uintptr_t i = 0; i < CHAINS; i++) {
		pthread_create(&t, NULL, link_thread, (void *)i);
		pthread_detach(t);
	}
	dprintf(report, "READY %d\n", getpid());
	snprintf(path, sizeof(path), "%s/cmd", argv[1]);
	FILE *cmd = fopen(path, "r");
	while (cmd && fgets(line, sizeof(line), cmd)) {
		if (!strncmp(line, "CHECK", 5)) {
			long before = created;
			while (created < before + 10) /* the chains still run */
				usleep(1000);
			dprintf(report, "REPORT ok=%d threads=%ld errors=%ld\n", errors == 0, created, errors);
		}
	}
	return 0;
}
