/*
 * Checkpoint target for memcr's integration tests and benchmarks.
 *
 *   memtest DIR HEAP_MB [random|program]
 *
 * Fills a 16 MiB static array, a HEAP_MB malloc'ed buffer, many small heap blocks, a read-only
 * region, a PROT_NONE region and a private file mapping (some pages written) with a pattern
 * (pseudo-random by default, or like a program's memory). Four worker threads keep rewriting and
 * verifying their own heap buffers and stack
 * arrays; one thread sleeps in nanosleep() in a loop; one thread blocks in read() on the command
 * FIFO; one thread takes SIGUSR2 and SIGRTMIN (blocked everywhere else) and counts them.
 *
 * Talks through two FIFOs in DIR, created by the caller: it writes "READY <pid>" to DIR/report,
 * then reads commands from DIR/cmd:
 *   CHECK [RT]  verify everything (after waiting up to 5 s for RT SIGRTMIN signals), answer with
 *               one "REPORT key=value ..." line
 *   EXIT        exit(0)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "fifo_target.h"

#define STATIC_SIZE (16u << 20)
#define WORKERS 4
#define WORKER_HEAP (2u << 20)
#define WORKER_STACK (64u << 10)
#define SMALL_BLOCKS 2000
#define SMALL_SIZE 1000
#define REGION_SIZE (2u << 20)
#define FILE_SIZE (1u << 20)

static uint8_t static_area[STATIC_SIZE];
static uint8_t *heap_area;
static size_t heap_size;
static uint8_t *small_blocks[SMALL_BLOCKS];
static uint8_t *ro_area, *none_area, *file_area;
static long page_size;

static volatile sig_atomic_t usr2_count, rt_count;
static volatile long workers_started, worker_errors, worker_iterations[WORKERS], eintr_count, sleeps;
static int report_fd = -1;

static int program_fill;

/*
 * Word i of a pattern. "random" memory: incompressible. "program" memory looks like a real
 * program's, per 64-byte line: half the lines zero, most others structs of small integers,
 * pointers and zeros, some text (same generator as bench/CodecBench).
 */
static inline uint64_t word(uint64_t seed, size_t i)
{
	if (!program_fill)
		return mix(seed ^ (i * 0x100000001b3ull));
	uint64_t h = mix(seed ^ ((i / 8) * 0x100000001b3ull));
	uint64_t g = mix(h + (i % 8));
	unsigned kind = h & 0xff;
	if (kind < 128)
		return 0;
	if (kind < 224) {
		switch (g & 3) {
		case 1: return (g >> 32) & 0xff;
		case 2: return 0x0000555555550000ull | ((g >> 16) & 0xfff0);
		default: return 0;
		}
	}
	return 0x6161616161616161ull + ((g & 0x0f0f0f0f0f0f0f0full) % 0x0f0f0f0f0f0f0f0full);
}

static void fill(void *p, size_t len, uint64_t seed)
{
	uint64_t *w = p;
	for (size_t i = 0; i < len / 8; i++)
		w[i] = word(seed, i);
}

/* Returns the index of the first wrong word, or -1. */
static long verify(const void *p, size_t len, uint64_t seed)
{
	const uint64_t *w = p;
	for (size_t i = 0; i < len / 8; i++)
		if (w[i] != word(seed, i))
			return (long)i;
	return -1;
}

static void die(const char *what)
{
	fprintf(stderr, "memtest: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void reply(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (write(report_fd, buf, n) != n)
		die("write report");
}

static void *worker(void *arg)
{
	long id = (long)arg;
	uint8_t stack_area[WORKER_STACK];
	uint8_t *mine = malloc(WORKER_HEAP);
	uint64_t gen = 0;
	struct timespec ts = { 0, 2 * 1000 * 1000 };

	if (!mine)
		die("malloc");
	fill(mine, WORKER_HEAP, 1000 + id * 7919);
	fill(stack_area, WORKER_STACK, 2000 + id * 7919);
	__atomic_add_fetch(&workers_started, 1, __ATOMIC_SEQ_CST);
	for (;;) {
		uint64_t seed = 1000 + id * 7919 + gen;
		if (verify(mine, WORKER_HEAP, seed) >= 0 || verify(stack_area, WORKER_STACK, seed + 1000) >= 0)
			__atomic_add_fetch(&worker_errors, 1, __ATOMIC_SEQ_CST);
		gen++;
		fill(mine, WORKER_HEAP, 1000 + id * 7919 + gen);
		fill(stack_area, WORKER_STACK, 2000 + id * 7919 + gen);
		worker_iterations[id]++;
		while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
			__atomic_add_fetch(&eintr_count, 1, __ATOMIC_SEQ_CST);
		ts.tv_nsec = 2 * 1000 * 1000;
	}
	return NULL;
}

static void *sleeper(void *arg)
{
	(void)arg;
	for (;;) {
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		if (nanosleep(&ts, NULL) == -1 && errno == EINTR)
			__atomic_add_fetch(&eintr_count, 1, __ATOMIC_SEQ_CST);
		sleeps++;
	}
	return NULL;
}

static void on_usr2(int sig) { (void)sig; usr2_count++; }
static void on_rt(int sig) { (void)sig; rt_count++; }

static void *signal_thread(void *arg)
{
	sigset_t set;
	(void)arg;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGRTMIN);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	for (;;)
		pause();
	return NULL;
}

static const char *check_all(void)
{
	static char buf[256];
	if (verify(static_area, STATIC_SIZE, 1) >= 0)
		return "static";
	if (verify(heap_area, heap_size, 2) >= 0)
		return "heap";
	for (int i = 0; i < SMALL_BLOCKS; i++)
		if (verify(small_blocks[i], SMALL_SIZE, 100000 + i) >= 0) {
			snprintf(buf, sizeof(buf), "small%d", i);
			return buf;
		}
	if (verify(ro_area, REGION_SIZE, 3) >= 0)
		return "readonly";
	if (mprotect(none_area, REGION_SIZE, PROT_READ))
		die("mprotect");
	long bad = verify(none_area, REGION_SIZE, 4);
	if (mprotect(none_area, REGION_SIZE, PROT_NONE))
		die("mprotect");
	if (bad >= 0)
		return "protnone";
	for (size_t off = 0; off < FILE_SIZE; off += page_size) {
		/* even pages were written after mapping, odd pages hold the file's content */
		uint64_t seed = (off / page_size) % 2 == 0 ? 6 + off : 5 + off;
		if (verify(file_area + off, page_size, seed) >= 0)
			return "filemap";
	}
	return NULL;
}

static char cmd_path[4096];
static int cmd_fd;

/* Reads commands from DIR/cmd, opened by main before READY (so that the caller's view of our fds holds it). */
static void *commands(void *arg)
{
	char line[256];
	size_t used = 0;
	int fd = cmd_fd;

	(void)arg;
	for (;;) {
		ssize_t n = read(fd, line + used, sizeof(line) - 1 - used);
		if (n < 0) {
			if (errno == EINTR) {
				__atomic_add_fetch(&eintr_count, 1, __ATOMIC_SEQ_CST);
				continue;
			}
			die("read cmd");
		}
		if (n == 0) { /* writer closed: wait for the next one */
			close(fd);
			fd = open(cmd_path, O_RDONLY);
			if (fd < 0)
				die("reopen cmd");
			continue;
		}
		used += n;
		line[used] = 0;
		char *nl;
		while ((nl = strchr(line, '\n'))) {
			*nl = 0;
			if (!strncmp(line, "CHECK", 5)) {
				int want_rt = atoi(line + 5);
				for (int i = 0; i < 5000 && rt_count < want_rt; i++)
					usleep(1000);
				const char *bad = check_all();
				long iters = 0;
				for (int i = 0; i < WORKERS; i++)
					iters += worker_iterations[i];
				reply("REPORT ok=%d bad=%s worker_errors=%ld eintr=%ld usr2=%d rt=%d iterations=%ld sleeps=%ld\n",
				      bad == NULL && worker_errors == 0 && eintr_count == 0, bad ? bad : "none",
				      worker_errors, eintr_count, (int)usr2_count, (int)rt_count, iters, sleeps);
			} else if (!strcmp(line, "EXIT")) {
				exit(0);
			}
			used -= (nl + 1 - line);
			memmove(line, nl + 1, used + 1);
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	char path[4096];
	pthread_t t;
	sigset_t set;

	if (argc < 3) {
		fprintf(stderr, "usage: memtest DIR HEAP_MB [random|program]\n");
		return 2;
	}
	program_fill = argc > 3 && strcmp(argv[3], "program") == 0;
	page_size = sysconf(_SC_PAGESIZE);
	heap_size = (size_t)atol(argv[2]) << 20;

	fill(static_area, STATIC_SIZE, 1);
	heap_area = malloc(heap_size);
	if (!heap_area)
		die("malloc heap");
	fill(heap_area, heap_size, 2);
	for (int i = 0; i < SMALL_BLOCKS; i++) {
		small_blocks[i] = malloc(SMALL_SIZE);
		fill(small_blocks[i], SMALL_SIZE, 100000 + i);
	}
	ro_area = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	none_area = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ro_area == MAP_FAILED || none_area == MAP_FAILED)
		die("mmap");
	fill(ro_area, REGION_SIZE, 3);
	fill(none_area, REGION_SIZE, 4);
	if (mprotect(ro_area, REGION_SIZE, PROT_READ) || mprotect(none_area, REGION_SIZE, PROT_NONE))
		die("mprotect");

	/* A file whose odd pages the mapping leaves alone and whose even pages it overwrites. */
	snprintf(path, sizeof(path), "%s/mapped.bin", argv[1]);
	int ffd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (ffd < 0)
		die("open mapped file");
	uint8_t *page = malloc(page_size);
	for (size_t off = 0; off < FILE_SIZE; off += page_size) {
		fill(page, page_size, 5 + off);
		if (pwrite(ffd, page, page_size, off) != page_size)
			die("pwrite");
	}
	free(page);
	file_area = mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, ffd, 0);
	if (file_area == MAP_FAILED)
		die("mmap file");
	close(ffd);
	for (size_t off = 0; off < FILE_SIZE; off += page_size) {
		if ((off / page_size) % 2 == 0)
			fill(file_area + off, page_size, 6 + off);
		else
			(void)*(volatile uint8_t *)(file_area + off); /* resident, clean */
	}

	signal(SIGUSR2, on_usr2);
	signal(SIGRTMIN, on_rt);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGRTMIN);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	report_fd = fifo_report(argv[1]);
	if (report_fd < 0)
		die("open report");
	snprintf(cmd_path, sizeof(cmd_path), "%s/cmd", argv[1]);
	/* Without waiting for a writer (one that starts us and never sends a command need not open
	 * it); then blocking, as the commands thread reads it. */
	cmd_fd = open(cmd_path, O_RDONLY | O_NONBLOCK);
	if (cmd_fd < 0 || fcntl(cmd_fd, F_SETFL, 0) < 0)
		die("open cmd");

	for (long i = 0; i < WORKERS; i++)
		if (pthread_create(&t, NULL, worker, (void *)i))
			die("pthread_create");
	pthread_create(&t, NULL, sleeper, NULL);
	pthread_create(&t, NULL, signal_thread, NULL);
	pthread_create(&t, NULL, commands, NULL);

	/* Ready once every thread has made its allocations: the maps stay as they are from here. */
	while (__atomic_load_n(&workers_started, __ATOMIC_SEQ_CST) < WORKERS)
		usleep(1000);
	reply("READY %d\n", getpid());
	for (;;)
		pause();
}
