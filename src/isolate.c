/* isolate: a reader in a forked child with limits (isolate.h). */
#define _POSIX_C_SOURCE 200809L
#include "isolate.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "arsenal/error.h"

#if defined(__SANITIZE_ADDRESS__)
#define ARS_ISOLATE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARS_ISOLATE_ASAN 1
#endif
#endif

static double seconds_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#ifndef ARS_ISOLATE_ASAN
static uint64_t address_space_now(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long pages = 0;
    if (f) {
        if (fscanf(f, "%llu", &pages) != 1) pages = 0;
        fclose(f);
    }
    return (uint64_t)pages * (uint64_t)sysconf(_SC_PAGESIZE);
}
#endif

/* The child: limits, the work, its verdict. Never returns; no atexit
 * handler runs (_exit). */
static void run_child(int out, uint64_t memory, double seconds, ars_isolated_work work, void *context, void *verdict,
                      size_t verdict_size)
{
    /* A crash is the verdict, told by the parent: no backtrace from the
     * handlers of Open MPI or a sanitizer, no core file, no output. */
    static const int signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGXCPU, SIGTERM, SIGINT};
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) signal(signals[i], SIG_DFL);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
    }
    struct rlimit limit = {0, 0};
    setrlimit(RLIMIT_CORE, &limit);
    limit.rlim_cur = (rlim_t)ceil(seconds) + 1;   /* CPU: a backstop; the parent's clock comes first */
    limit.rlim_max = limit.rlim_cur + 1;
    setrlimit(RLIMIT_CPU, &limit);
#ifndef ARS_ISOLATE_ASAN   /* AddressSanitizer reserves terabytes of address space */
    uint64_t now = address_space_now();
    if (now > 0) {
        limit.rlim_cur = limit.rlim_max = (rlim_t)(now + memory);
        setrlimit(RLIMIT_AS, &limit);
    }
#else
    (void)memory;
#endif
    memset(verdict, 0, verdict_size);
    work(context, verdict);
    const char *bytes = verdict;
    size_t left = verdict_size;
    while (left > 0) {
        ssize_t n = write(out, bytes, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        bytes += n;
        left -= (size_t)n;
    }
    _exit(0);
}

int ars_isolated_run(const char *path, uint64_t memory, double seconds, ars_isolated_work work, void *context,
                     void *verdict, size_t verdict_size, ars_isolated *how)
{
    memset(how, 0, sizeof *how);
    how->memory = memory;
    how->seconds = seconds;
    int fds[2];
    if (pipe(fds) != 0) return ars_error(ARS_EIO, "%s: cannot check it in a child process: pipe: %s", path,
                                         strerror(errno));
    fflush(NULL);   /* nothing buffered is written twice */
    pid_t child = fork();
    if (child < 0) {
        close(fds[0]);
        close(fds[1]);
        return ars_error(ARS_EIO, "%s: cannot check it in a child process: fork: %s", path, strerror(errno));
    }
    if (child == 0) {
        close(fds[0]);
        run_child(fds[1], memory, seconds, work, context, verdict, verdict_size);
    }
    close(fds[1]);
    size_t got = 0;
    int timed_out = 0;
    const double deadline = seconds_now() + seconds;
    while (got < verdict_size) {
        double left = deadline - seconds_now();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        struct pollfd wait_for = {fds[0], POLLIN, 0};
        int ready = poll(&wait_for, 1, (int)(left * 1000.0) + 1);
        if (ready < 0 && errno != EINTR) break;
        if (ready <= 0) continue;
        ssize_t n = read(fds[0], (char *)verdict + got, verdict_size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;   /* the child ended before its verdict */
        got += (size_t)n;
    }
    close(fds[0]);
    if (timed_out) kill(child, SIGKILL);
    int status = 0;
    pid_t waited;
    while ((waited = waitpid(child, &status, 0)) < 0 && errno == EINTR) {}
    if (timed_out) {
        how->end = ARS_ISOLATED_TIMEOUT;
    } else if (waited == child && WIFSIGNALED(status)) {
        how->signal = WTERMSIG(status);
        /* RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one */
        how->end = how->signal == SIGXCPU || how->signal == SIGKILL ? ARS_ISOLATED_CPU : ARS_ISOLATED_SIGNAL;
    } else if (got < verdict_size) {
        how->end = ARS_ISOLATED_SILENT;
        how->exit_status = waited == child && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    } else {
        how->end = ARS_ISOLATED_DONE;
    }
    return 0;
}

int ars_isolated_error(const ars_isolated *how, const char *path, const char *noun)
{
    switch (how->end) {
    case ARS_ISOLATED_TIMEOUT:
        return ars_error(ARS_EFORMAT, "%s: corrupted %s (the HDF5 reader did not finish in %.0f s)", path, noun,
                         how->seconds);
    case ARS_ISOLATED_CPU:
        return ars_error(ARS_EFORMAT, "%s: corrupted %s (the HDF5 reader did not finish in %.0f s of CPU time)", path,
                         noun, ceil(how->seconds) + 1);
    case ARS_ISOLATED_SIGNAL:
        return ars_error(ARS_EFORMAT, "%s: corrupted %s (the HDF5 reader crashed with signal %d, %s)", path, noun,
                         how->signal, strsignal(how->signal));
    case ARS_ISOLATED_SILENT:
        return ars_error(ARS_EFORMAT, "%s: corrupted %s (the HDF5 reader crashed: it exited with status %d before "
                         "its verdict; more than %llu MiB of memory?)", path, noun, how->exit_status,
                         (unsigned long long)(how->memory >> 20));
    case ARS_ISOLATED_DONE:
        break;
    }
    return ars_error(ARS_EFORMAT, "%s: internal: the checking child of a %s sent its verdict", path, noun);
}
