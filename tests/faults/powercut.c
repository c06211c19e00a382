/*
 * An LD_PRELOAD layer that makes a SIGKILL look like a power cut.
 *
 * A SIGKILL keeps the kernel's page cache, so a program that never syncs
 * survives it. This layer remembers, per file named by POWERCUT_FILE, what every
 * write since that file's last fsync/fdatasync overwrote: before each write or
 * shrinking truncate it appends (sequence, offset, original bytes) to an undo
 * log in POWERCUT_LOG, plus the file's size when the log began. A successful
 * fsync/fdatasync of the file empties its log: what is synced is on the disk.
 * After the kill, the test plays the logs backwards and so takes every file
 * back to what it was at its last sync.
 *
 * POWERCUT_NOSYNC=1 is the negative control: fsync/fdatasync do nothing and
 * keep the log, as if the program never synced; the test must then see losses.
 *
 * Undo log format (little-endian): header "PCUT" u64 original_size, then
 * records: u64 seq, u64 offset, u64 write_len, u64 orig_len, orig_len bytes
 * (the original bytes inside the file; the rest of the write extended it).
 * A record is written before the write it undoes, so a kill between the two
 * only restores bytes that were already there.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static uint64_t seq;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_unlink)(const char *);

static void init(void) {
    if (real_write)
        return;
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
    real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
    real_unlink = dlsym(RTLD_NEXT, "unlink");
    real_write = dlsym(RTLD_NEXT, "write");
}

static int nosync(void) {
    const char *v = getenv("POWERCUT_NOSYNC");
    return v && v[0] == '1';
}

/* The undo log's path for a watched file, or 0 when `path` is not watched.
 * Watched: paths starting with POWERCUT_FILE (the spool, its -wal and
 * -journal). The -shm file is not watched: the test deletes it, as a reboot
 * would. */
static int log_path_for(const char *path, char *out, size_t n) {
    const char *prefix = getenv("POWERCUT_FILE");
    const char *logdir = getenv("POWERCUT_LOG");
    if (!prefix || !logdir)
        return 0;
    if (strncmp(path, prefix, strlen(prefix)) != 0)
        return 0;
    size_t pl = strlen(path);
    if (pl >= 4 && strcmp(path + pl - 4, "-shm") == 0)
        return 0;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return snprintf(out, n, "%s/%s.undo", logdir, base) < (int)n;
}

static int log_path_fd(int fd, char *out, size_t n) {
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t len = readlink(link, path, sizeof path - 1);
    if (len <= 0)
        return 0;
    path[len] = 0;
    return log_path_for(path, out, n);
}

static int put_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = real_write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Saves what [off, off+len) of `fd` holds now (the part inside the file). */
static void save(int fd, off_t off, size_t len) {
    char lp[PATH_MAX];
    if (!log_path_fd(fd, lp, sizeof lp))
        return;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return;
    int lf = open(lp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (lf < 0) {
        fprintf(stderr, "powercut: cannot open %s: %s\n", lp, strerror(errno));
        abort();
    }
    struct stat ls;
    if (fstat(lf, &ls) == 0 && ls.st_size == 0) {
        uint64_t size = (uint64_t)st.st_size;
        if (put_all(lf, "PCUT", 4) || put_all(lf, &size, 8))
            abort();
    }
    uint64_t have = 0;
    if (off < st.st_size)
        have = (uint64_t)(st.st_size - off) < len ? (uint64_t)(st.st_size - off) : len;
    char *orig = malloc(have ? have : 1);
    if (!orig)
        abort();
    size_t got = 0;
    while (got < have) {
        ssize_t r = pread(fd, orig + got, have - got, off + (off_t)got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    uint64_t rec[4] = {++seq, (uint64_t)off, (uint64_t)len, (uint64_t)got};
    if (put_all(lf, rec, sizeof rec) || put_all(lf, orig, got))
        abort();
    free(orig);
    close(lf);
}

static void synced(int fd) {
    char lp[PATH_MAX];
    if (log_path_fd(fd, lp, sizeof lp))
        truncate(lp, 0);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    init();
    pthread_mutex_lock(&lock);
    save(fd, off, n);
    ssize_t r = real_pwrite64(fd, buf, n, off);
    pthread_mutex_unlock(&lock);
    return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    init();
    pthread_mutex_lock(&lock);
    save(fd, off, n);
    ssize_t r = real_pwrite(fd, buf, n, off);
    pthread_mutex_unlock(&lock);
    return r;
}

ssize_t write(int fd, const void *buf, size_t n) {
    init();
    pthread_mutex_lock(&lock);
    off_t off = lseek(fd, 0, SEEK_CUR);
    if (off >= 0) {
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0 && (fl & O_APPEND)) {
            struct stat st;
            if (fstat(fd, &st) == 0)
                off = st.st_size;
        }
        save(fd, off, n);
    }
    ssize_t r = real_write(fd, buf, n);
    pthread_mutex_unlock(&lock);
    return r;
}

static int shrink(int fd, off_t len, int (*real)(int, off_t)) {
    pthread_mutex_lock(&lock);
    struct stat st;
    if (fstat(fd, &st) == 0 && len < st.st_size)
        save(fd, len, (size_t)(st.st_size - len));
    else if (fstat(fd, &st) == 0)
        save(fd, st.st_size, 0); /* starts the log: records the original size */
    int r = real(fd, len);
    pthread_mutex_unlock(&lock);
    return r;
}

int ftruncate(int fd, off_t len) {
    init();
    return shrink(fd, len, real_ftruncate);
}

int ftruncate64(int fd, off_t len) {
    init();
    return shrink(fd, len, real_ftruncate64);
}

static int sync_with(int fd, int (*real)(int)) {
    pthread_mutex_lock(&lock);
    int r = 0;
    if (!nosync()) {
        r = real(fd);
        if (r == 0)
            synced(fd);
    }
    pthread_mutex_unlock(&lock);
    return r;
}

int fsync(int fd) {
    init();
    return sync_with(fd, real_fsync);
}

int fdatasync(int fd) {
    init();
    return sync_with(fd, real_fdatasync);
}

/* A deleted file starts from nothing: its old log no longer applies. */
int unlink(const char *path) {
    init();
    pthread_mutex_lock(&lock);
    int r = real_unlink(path);
    char lp[PATH_MAX];
    if (r == 0 && log_path_for(path, lp, sizeof lp))
        real_unlink(lp);
    pthread_mutex_unlock(&lock);
    return r;
}
