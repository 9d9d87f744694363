/*
 * A target whose main thread waits in sigsuspend() with a temporary signal mask, for the mask a
 * checkpoint must give back.
 *
 *   suspender DIR
 *
 * Blocks SIGUSR1 (handled), writes "READY <pid>" to the FIFO DIR/report and waits in
 * sigsuspend(empty set) until SIGUSR1 arrives; then writes "REPORT got=<n> blocked=<0|1>", where
 * blocked says whether SIGUSR1 is blocked again afterwards (the mask from before the sigsuspend,
 * which the kernel keeps aside while it waits), and exits.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "fifo_target.h"

static volatile sig_atomic_t got;

static void on_usr1(int sig)
{
	(void)sig;
	got++;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: suspender DIR\n");
		return 2;
	}
	int report = fifo_report(argv[1]);
	if (report < 0)
		return 1;
	sigset_t usr1, empty, now;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigemptyset(&empty);
	signal(SIGUSR1, on_usr1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	dprintf(report, "READY %d\n", getpid());
	while (!got)
		sigsuspend(&empty);
	sigprocmask(SIG_BLOCK, NULL, &now);
	dprintf(report, "REPORT got=%d blocked=%d\n", (int)got, sigismember(&now, SIGUSR1));
	return 0;
}
