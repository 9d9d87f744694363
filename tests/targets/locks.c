/*
 * CRIU-mode target holding every kind of file lock memcr dumps (with --file-locks):
 *
 *   locks DIR
 *
 * DIR/flock: an exclusive flock, on a descriptor the forked child inherits (one lock on one
 * open file description, seen by both). DIR/posix: POSIX locks of the parent (write on bytes
 * 5..14, read from byte 100 to EOF) and of the child (write on bytes 50..59), through the
 * inherited descriptor; a dup of the parent's shows its locks too. DIR/ofd: a read OFD lock on
 * the whole file. Then "READY <pid> child <pid>" on stdout, and both sleep.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

static int open_in(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) {
        perror(path);
        exit(1);
    }
    return fd;
}

static void posix_lock(int fd, int cmd, short type, off_t start, off_t len)
{
    struct flock l = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
    if (fcntl(fd, cmd, &l) != 0) {
        perror("fcntl lock");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: locks DIR\n");
        return 2;
    }
    int flk = open_in(argv[1], "flock");
    int posix = open_in(argv[1], "posix");
    int ofd = open_in(argv[1], "ofd");
    if (flock(flk, LOCK_EX | LOCK_NB) != 0) {
        perror("flock");
        return 1;
    }
    posix_lock(posix, F_SETLK, F_WRLCK, 5, 10);
    posix_lock(posix, F_SETLK, F_RDLCK, 100, 0);
    posix_lock(ofd, F_OFD_SETLK, F_RDLCK, 0, 0);
    if (dup(posix) < 0) {
        perror("dup");
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        posix_lock(posix, F_SETLK, F_WRLCK, 50, 10);
        for (;;)
            pause();
    }
    /* The child's lock first, so that READY means every lock is held. */
    char path[4096];
    snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", child, posix);
    for (int seen = 0; !seen;) {
        FILE *f = fopen(path, "r");
        char line[256];
        while (f && fgets(line, sizeof(line), f))
            seen |= line[0] == 'l';
        if (f)
            fclose(f);
        usleep(1000);
    }
    printf("READY %d child %d\n", getpid(), child);
    fflush(stdout);
    for (;;)
        pause();
}
