/*
 * CRIU-mode target holding one descriptor of every kind memcr dump supports, each with state
 * that a restore must bring back:
 *
 *   fdkinds DIR
 *
 * inotify watching DIR (IN_CREATE) and DIR/watched (IN_MODIFY); an eventfd holding 5; a
 * signalfd for SIGUSR1 (blocked); a 100 ms interval timerfd; an epoll watching the eventfd and
 * the timerfd; the FIFO DIR/fifo holding 7 unread bytes; a sealed memfd mapped shared; shared
 * anonymous memory; a UNIX socket listening on DIR/sock; /dev/null.
 *
 * FIFO protocol as memtest.c: "READY <pid>" on DIR/report; "CHECK" on DIR/cmd answers
 * "REPORT ok=<0|1> bad=<kinds that failed, or none> worker_errors=0". Before CHECK the test
 * creates DIR/created, appends to DIR/watched and connects to DIR/sock.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#define MEMFD_TEXT "memfd-content"
#define SHARED_TEXT "shared-anonymous"

static int ino, efd, sfd, tfd, epfd, fifo, memfd, lsock, devnull;
static char *memfd_map, *shared_map;
static char bad[512];

static void fail(const char *what)
{
	if (strlen(bad) + strlen(what) + 2 < sizeof(bad)) {
		if (bad[0])
			strcat(bad, ",");
		strcat(bad, what);
	}
}

static int die(const char *what)
{
	perror(what);
	exit(1);
}

static void setup(const char *dir)
{
	char path[4096];
	sigset_t usr1;

	ino = inotify_init1(IN_NONBLOCK);
	if (ino < 0 || inotify_add_watch(ino, dir, IN_CREATE) != 1)
		die("inotify dir");
	snprintf(path, sizeof(path), "%s/watched", dir);
	close(open(path, O_CREAT | O_WRONLY, 0644));
	if (inotify_add_watch(ino, path, IN_MODIFY) != 2)
		die("inotify file");

	efd = eventfd(5, EFD_NONBLOCK);
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	sfd = signalfd(-1, &usr1, SFD_NONBLOCK);
	tfd = timerfd_create(CLOCK_MONOTONIC, 0);
	struct itimerspec its = { { 0, 100000000 }, { 0, 100000000 } };
	timerfd_settime(tfd, 0, &its, NULL);
	epfd = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0xe1 };
	epoll_ctl(epfd, EPOLL_CTL_ADD, efd, &ev);
	ev.data.u64 = 0x71;
	epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &ev);
	if (efd < 0 || sfd < 0 || tfd < 0 || epfd < 0)
		die("eventfd/signalfd/timerfd/epoll");

	snprintf(path, sizeof(path), "%s/fifo", dir);
	mkfifo(path, 0600);
	fifo = open(path, O_RDWR | O_NONBLOCK);
	if (fifo < 0 || write(fifo, "fifodat", 7) != 7)
		die("fifo");

	memfd = memfd_create("fdkinds", MFD_ALLOW_SEALING);
	if (memfd < 0 || ftruncate(memfd, 8192) < 0)
		die("memfd");
	memfd_map = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	strcpy(memfd_map, MEMFD_TEXT);
	if (fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
		die("seals");
	shared_map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	strcpy(shared_map, SHARED_TEXT);

	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/sock", dir);
	lsock = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (lsock < 0 || bind(lsock, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(lsock, 4) < 0)
		die("unix socket");
	devnull = open("/dev/null", O_WRONLY);
}

static void check_inotify(void)
{
	char buf[4096] __attribute__((aligned(8)));
	int created = 0, modified = 0;
	for (int tries = 0; tries < 100 && !(created && modified); tries++) {
		ssize_t n = read(ino, buf, sizeof(buf));
		if (n <= 0) {
			usleep(10000);
			continue;
		}
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *e = (struct inotify_event *)p;
			if (e->wd == 1 && (e->mask & IN_CREATE) && e->len && strcmp(e->name, "created") == 0)
				created = 1;
			if (e->wd == 2 && (e->mask & IN_MODIFY))
				modified = 1;
			p += sizeof(*e) + e->len;
		}
	}
	if (!created || !modified)
		fail("inotify");
}

static void check(void)
{
	uint64_t v;
	char buf[64];

	bad[0] = 0;
	check_inotify();

	if (read(efd, &v, 8) != 8 || v != 5)
		fail("eventfd");
	v = 5;
	write(efd, &v, 8);

	kill(getpid(), SIGUSR1);
	struct signalfd_siginfo si;
	if (read(sfd, &si, sizeof(si)) != sizeof(si) || si.ssi_signo != SIGUSR1)
		fail("signalfd");

	struct itimerspec its;
	if (timerfd_gettime(tfd, &its) < 0 || its.it_interval.tv_sec != 0 || its.it_interval.tv_nsec != 100000000)
		fail("timerfd");
	struct epoll_event evs[4];
	int seen = 0;
	/* The eventfd is ready at once, the timer within 100 ms: wait up to 2 s for both. */
	for (int tries = 0; tries < 200 && seen != 3; tries++) {
		int n = epoll_wait(epfd, evs, 4, 100);
		for (int i = 0; i < n; i++)
			seen |= evs[i].data.u64 == 0xe1 ? 1 : evs[i].data.u64 == 0x71 ? 2 : 0;
		if (seen != 3)
			usleep(10000);
	}
	if (seen != 3)
		fail("epoll");
	if (read(tfd, &v, 8) != 8 || v == 0)
		fail("timerfd-ticks");

	memset(buf, 0, sizeof(buf));
	if (read(fifo, buf, sizeof(buf)) != 7 || memcmp(buf, "fifodat", 7) != 0)
		fail("fifo");
	write(fifo, "fifodat", 7);

	memset(buf, 0, sizeof(buf));
	if (strcmp(memfd_map, MEMFD_TEXT) != 0 || pread(memfd, buf, sizeof(MEMFD_TEXT), 0) != sizeof(MEMFD_TEXT) || strcmp(buf, MEMFD_TEXT) != 0)
		fail("memfd");
	if (fcntl(memfd, F_GET_SEALS) != (F_SEAL_SHRINK | F_SEAL_GROW))
		fail("memfd-seals");
	/* Written through the fd, seen through the mapping: still one file. */
	pwrite(memfd, "M", 1, 4096);
	if (memfd_map[4096] != 'M')
		fail("memfd-mapping");
	if (strcmp(shared_map, SHARED_TEXT) != 0)
		fail("shared-anonymous");

	int c = -1;
	for (int tries = 0; tries < 100 && c < 0; tries++) {
		c = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0)
			usleep(10000);
	}
	if (c < 0 || write(c, "hi", 2) != 2)
		fail("unix-listener");
	if (c >= 0)
		close(c);
	if (write(devnull, "x", 1) != 1)
		fail("devnull");
}

int main(int argc, char **argv)
{
	char path[4096], line[256];

	if (argc < 2)
		return 2;
	setup(argv[1]);
	snprintf(path, sizeof(path), "%s/report", argv[1]);
	int report = open(path, O_WRONLY);
	if (report < 0)
		die("report");
	dprintf(report, "READY %d\n", getpid());
	snprintf(path, sizeof(path), "%s/cmd", argv[1]);
	FILE *cmd = fopen(path, "r");
	while (cmd && fgets(line, sizeof(line), cmd)) {
		if (strncmp(line, "CHECK", 5) == 0) {
			check();
			dprintf(report, "REPORT ok=%d bad=%s worker_errors=0\n", bad[0] == 0, bad[0] ? bad : "none");
		}
	}
	return 0;
}
