/*
 * Target for lazy restore tests and the lazy bench: a process that keeps working while its pages
 * come back.
 *
 *   lazytest DIR MB [exit|kill]
 *
 * With exit or kill, it exit()s or SIGKILLs itself as soon as it finds it has been frozen and
 * resumed (its pages then still coming back).
 *
 * Fills an MB MiB region A, an 8 MiB read buffer R, and two 4 MiB regions M (to be moved) and D
 * (to be discarded) with a pattern. Threads:
 *   - a reader blocks in read() on the FIFO DIR/feed into R + 4 MiB + 100 (64 KiB at most);
 *   - a ticker checks one word of a random page of A every 200 us and notes when it ran last:
 *     a gap of more than 50 ms is a freeze, and the time (CLOCK_REALTIME, ns) of the first good
 *     check after the last gap is when the process resumed;
 *   - the command thread reads DIR/cmd and answers on DIR/report:
 *     CHECK [FED]    verify every region (R's fed bytes are i * 7 + 3); with FED, wait up to 5 s for
 *                    the fed bytes, and not ok without them: "REPORT ok=.. bad=.. fed=.."
 *     MUTATE         mremap M elsewhere, madvise(MADV_DONTNEED) the first half of D, fork a child
 *                    that verifies A, M and D, and wait for it: "REPORT ok=.. child=.."
 *     TOUCH N        touch N random pages of A, verify each, "REPORT p50_us=.. p99_us=.. max_us=.."
 *     WRITE N        rewrite N random pages of A with a new pattern (each page's generation, which
 *                    CHECK and the ticker verify, is counted in a heap array): "REPORT written=.."
 *     RESUMED        "REPORT resumed_ns=.. gap_ms=.." of the longest gap since the last RESUMED
 *     EXIT           exit(0)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#include "fifo_target.h"

#define R_SIZE (8u << 20)
#define R_AT ((4u << 20) + 100)
#define R_MAX (64u << 10)
#define M_SIZE (4u << 20)
#define D_SIZE (4u << 20)

static uint8_t *a_area, *r_area, *m_area, *d_area;
/* Per page of A: how many times WRITE rewrote it; GEN_BUSY while it is being rewritten. */
static volatile uint8_t *a_gen;
#define GEN_BUSY 255
static size_t a_size;
static long page_size;
static int report_fd;
static const char *on_resume = "";
static volatile long fed = -1, feed_errors, tick_errors, ticks;
static volatile int64_t resumed_ns, gap_ns; /* the longest gap since the last RESUMED: the freeze */

static void die(const char *what)
{
	dprintf(2, "lazytest: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void reply(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (write(report_fd, buf, n) != n)
		die("write report");
}

static void fill(uint8_t *p, size_t size, uint64_t seed)
{
	uint64_t *w = (uint64_t *)p;
	for (size_t i = 0; i < size / 8; i++)
		w[i] = mix(seed + i);
}

/* Index of the first wrong word in [from, to) words of a region, or -1. */
static long verify_words(const uint8_t *p, size_t from, size_t to, uint64_t seed)
{
	const uint64_t *w = (const uint64_t *)p;
	for (size_t i = from; i < to; i++)
		if (w[i] != mix(seed + i))
			return (long)i;
	return -1;
}

static uint64_t a_expected(size_t word, uint8_t gen)
{
	return mix(11 + word + ((uint64_t)gen << 40));
}

/* Index of the first wrong word of A, or -1. */
static long verify_a(void)
{
	const uint64_t *w = (const uint64_t *)a_area;
	size_t per_page = page_size / 8;
	for (size_t i = 0; i < a_size / 8; i++)
		if (w[i] != a_expected(i, a_gen[i / per_page]))
			return (long)i;
	return -1;
}

static int64_t now_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t next_random(uint64_t *state)
{
	*state += 0x9e3779b97f4a7c15ull;
	return mix(*state);
}

static void *reader(void *arg)
{
	int fd = *(int *)arg;
	for (;;) {
		ssize_t n = read(fd, r_area + R_AT, R_MAX);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			feed_errors++;
			return NULL;
		}
		for (ssize_t i = 0; i < n; i++)
			if (r_area[R_AT + i] != (uint8_t)(i * 7 + 3))
				feed_errors++;
		fed = n;
		return NULL;
	}
}

static void *ticker(void *arg)
{
	(void)arg;
	uint64_t state = 42;
	size_t words = a_size / 8;
	int64_t last = now_ns(CLOCK_MONOTONIC);
	for (;;) {
		size_t i = next_random(&state) % words;
		uint8_t gen = a_gen[i / (page_size / 8)];
		uint64_t word = ((volatile uint64_t *)a_area)[i];
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (gen != GEN_BUSY && gen == a_gen[i / (page_size / 8)] && word != a_expected(i, gen))
			tick_errors++;
		int64_t t = now_ns(CLOCK_MONOTONIC);
		if (t - last > 50000000 && t - last > gap_ns) {
			gap_ns = t - last;
			resumed_ns = now_ns(CLOCK_REALTIME);
			if (!strcmp(on_resume, "exit"))
				exit(0);
			if (!strcmp(on_resume, "kill"))
				raise(SIGKILL);
		}
		last = t;
		ticks++;
		usleep(200);
	}
	return NULL;
}

/* Which region is wrong, or NULL. M is checked wherever it is now; D's first half may be discarded. */
static const char *check_all(int d_discarded)
{
	if (verify_a() >= 0)
		return "A";
	if (verify_words(r_area, 0, R_AT / 8, 12) >= 0)
		return "R";
	size_t after = (R_AT + (fed > 0 ? (size_t)fed : 0) + 7) / 8;
	if (fed <= 0 && verify_words(r_area, R_AT / 8 + 1, R_SIZE / 8, 12) >= 0)
		return "R";
	if (fed > 0 && verify_words(r_area, after + 1, R_SIZE / 8, 12) >= 0)
		return "R";
	/* What the reader got is still there (a lazy restore must not lose what read() wrote). */
	for (long i = 0; i < fed; i++)
		if (r_area[R_AT + i] != (uint8_t)(i * 7 + 3))
			return "R-fed";
	if (verify_words(m_area, 0, M_SIZE / 8, 13) >= 0)
		return "M";
	if (d_discarded) {
		for (size_t i = 0; i < D_SIZE / 2; i++)
			if (d_area[i])
				return "D-discarded";
		if (verify_words(d_area, D_SIZE / 16, D_SIZE / 8, 14) >= 0)
			return "D";
	} else if (verify_words(d_area, 0, D_SIZE / 8, 14) >= 0) {
		return "D";
	}
	return NULL;
}

static int cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;
	return (x > y) - (x < y);
}

static void touch(long n)
{
	long *us = malloc(n * sizeof(long));
	uint64_t state = (uint64_t)now_ns(CLOCK_MONOTONIC);
	size_t pages = a_size / page_size;
	long bad = 0;
	for (long k = 0; k < n; k++) {
		size_t page = next_random(&state) % pages;
		size_t i = page * (page_size / 8) + (next_random(&state) % (page_size / 8));
		int64_t t = now_ns(CLOCK_MONOTONIC);
		if (((volatile uint64_t *)a_area)[i] != a_expected(i, a_gen[page]))
			bad++;
		us[k] = (now_ns(CLOCK_MONOTONIC) - t) / 1000;
	}
	qsort(us, n, sizeof(long), cmp_long);
	reply("REPORT ok=%d bad=%ld p50_us=%ld p99_us=%ld max_us=%ld\n", bad == 0, bad, us[n / 2], us[n * 99 / 100], us[n - 1]);
	free(us);
}

static void rewrite(long n)
{
	uint64_t state = (uint64_t)now_ns(CLOCK_MONOTONIC);
	size_t pages = a_size / page_size, per_page = page_size / 8;
	for (long k = 0; k < n; k++) {
		size_t page = next_random(&state) % pages;
		uint8_t gen = a_gen[page] == GEN_BUSY - 1 ? 1 : a_gen[page] + 1;
		a_gen[page] = GEN_BUSY;
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		uint64_t *w = (uint64_t *)a_area + page * per_page;
		for (size_t j = 0; j < per_page; j++)
			w[j] = a_expected(page * per_page + j, gen);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		a_gen[page] = gen;
	}
	reply("REPORT ok=1 written=%ld\n", n);
}

static int d_discarded;

static void mutate(void)
{
	/* M moves to a place reserved for it; D's first half is discarded (it must read as zeros). */
	void *to = mmap(NULL, M_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (to == MAP_FAILED)
		die("mmap");
	void *moved = mremap(m_area, M_SIZE, M_SIZE, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	if (moved == MAP_FAILED)
		die("mremap");
	m_area = moved;
	if (madvise(d_area, D_SIZE / 2, MADV_DONTNEED))
		die("madvise");
	d_discarded = 1;
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0)
		_exit(check_all(1) ? 3 : 0);
	int status;
	if (waitpid(child, &status, 0) != child)
		die("waitpid");
	const char *bad = check_all(1);
	reply("REPORT ok=%d bad=%s child=%d\n", bad == NULL && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      bad ? bad : "none", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

int main(int argc, char **argv)
{
	char path[4096], line[256];
	FILE *cmd;
	pthread_t t;

	if (argc < 3) {
		fprintf(stderr, "usage: lazytest DIR MB [exit|kill]\n");
		return 2;
	}
	if (argc > 3)
		on_resume = argv[3];
	page_size = sysconf(_SC_PAGESIZE);
	a_size = (size_t)atol(argv[2]) << 20;
	a_area = mmap(NULL, a_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r_area = mmap(NULL, R_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	m_area = mmap(NULL, M_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	d_area = mmap(NULL, D_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	a_gen = calloc(a_size / page_size, 1);
	if (a_area == MAP_FAILED || r_area == MAP_FAILED || m_area == MAP_FAILED || d_area == MAP_FAILED || !a_gen)
		die("mmap");
	fill(a_area, a_size, 11);
	fill(r_area, R_SIZE, 12);
	fill(m_area, M_SIZE, 13);
	fill(d_area, D_SIZE, 14);

	snprintf(path, sizeof(path), "%s/feed", argv[1]);
	static int feed;
	feed = open(path, O_RDWR);
	if (feed < 0)
		die("open feed");
	pthread_create(&t, NULL, reader, &feed);
	pthread_create(&t, NULL, ticker, NULL);
	/* Ready once the ticker runs: a freeze before its first check would go unseen. */
	while (ticks < 2)
		usleep(1000);
	if (fifo_ready(argv[1], &report_fd, &cmd))
		die("fifos");
	while (fgets(line, sizeof(line), cmd) || (errno == EINTR && !feof(cmd))) {
		if (!strncmp(line, "CHECK", 5)) {
			int want_fed = strstr(line, "FED") != NULL;
			for (int i = 0; i < 5000 && want_fed && fed < 0 && !feed_errors; i++)
				usleep(1000);
			const char *bad = check_all(d_discarded);
			reply("REPORT ok=%d bad=%s fed=%ld feed_errors=%ld tick_errors=%ld\n",
			      bad == NULL && (fed > 0 || !want_fed) && !feed_errors && !tick_errors, bad ? bad : "none", fed, feed_errors, tick_errors);
		} else if (!strncmp(line, "MUTATE", 6)) {
			mutate();
		} else if (!strncmp(line, "TOUCH", 5)) {
			touch(atol(line + 5) > 0 ? atol(line + 5) : 1000);
		} else if (!strncmp(line, "WRITE", 5)) {
			rewrite(atol(line + 5));
		} else if (!strncmp(line, "RESUMED", 7)) {
			reply("REPORT resumed_ns=%lld gap_ms=%lld\n", (long long)resumed_ns, (long long)(gap_ns / 1000000));
			gap_ns = 0;
		} else if (!strncmp(line, "EXIT", 4)) {
			exit(0);
		}
	}
	return 0;
}
