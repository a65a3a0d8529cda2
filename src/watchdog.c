/* watchdog: the collective timeout (see watchdog.h). One monitor thread per
 * process sleeps on a condition variable (CLOCK_MONOTONIC) while disarmed
 * and until the deadline while armed; enter/leave only take an uncontended
 * mutex, so arming every collective of every step costs nothing measurable.
 * When a deadline passes it writes its line with one write(2), starts a
 * reaper thread that _exits after the grace period, and calls the abort
 * function (MPI_Abort by default). */
#define _POSIX_C_SOURCE 200809L
#include "arsenal/watchdog.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mpi.h>

#include "arsenal/error.h"

struct ars_watchdog {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    ars_watchdog_options options;
    char host[256];
    int rank;
    int armed, stopping;
    struct timespec armed_at, deadline;
    int64_t step;
    char what[128];
};

static struct timespec monotonic_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}

static struct timespec add_seconds(struct timespec t, double seconds)
{
    time_t whole = (time_t)seconds;
    long nanos = (long)((seconds - (double)whole) * 1e9);
    t.tv_sec += whole;
    t.tv_nsec += nanos;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

static int reached(struct timespec now, struct timespec deadline)
{
    return now.tv_sec > deadline.tv_sec || (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec);
}

static double seconds_between(struct timespec a, struct timespec b)
{
    return (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
}

static void write_line(const char *text)
{
    size_t left = strlen(text);
    while (left > 0) {
        ssize_t n = write(STDERR_FILENO, text, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        text += n;
        left -= (size_t)n;
    }
}

static void mpi_abort(int code)
{
    int up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    if (up && !down) MPI_Abort(MPI_COMM_WORLD, code);
    _exit(code);
}

static void *reaper(void *arg)
{
    ars_watchdog *w = arg;
    struct timespec pause = {0, 0};
    pause = add_seconds(pause, w->options.abort_grace_seconds);
    while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {}
    char line[256];
    snprintf(line, sizeof line, "arsenal: watchdog: rank %d: the abort did not end the process within %g s; "
             "exiting\n", w->rank, w->options.abort_grace_seconds);
    write_line(line);
    _exit(w->options.exit_code);
    return NULL;
}

/* Called with the lock held, once: the armed section overran. Never returns. */
static void fire(ars_watchdog *w, struct timespec now)
{
    char line[768];
    snprintf(line, sizeof line,
             "arsenal: watchdog: rank %d on host %s: step %lld: %s did not complete within %g s "
             "(waited %.1f s; a peer rank is dead, hung or unreachable); ending the job\n",
             w->rank, w->host, (long long)w->step, w->what, w->options.timeout_seconds,
             seconds_between(w->armed_at, now));
    /* Progress lines still buffered in stdout come first, if the main
     * thread is not in the middle of writing them. */
    if (ftrylockfile(stdout) == 0) {
        fflush(stdout);
        funlockfile(stdout);
    }
    write_line(line);
    pthread_t thread;
    pthread_attr_t attr;
    int started = pthread_attr_init(&attr) == 0 &&
                  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
                  pthread_create(&thread, &attr, reaper, w) == 0;
    if (!started) alarm((unsigned)w->options.abort_grace_seconds + 1);   /* SIGALRM ends the process */
    w->options.abort_fn(w->options.exit_code);
    _exit(w->options.exit_code);   /* abort_fn returned: end here */
}

static void *monitor(void *arg)
{
    ars_watchdog *w = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);   /* signals go to the main thread */
    pthread_mutex_lock(&w->lock);
    while (!w->stopping) {
        if (!w->armed) {
            pthread_cond_wait(&w->wake, &w->lock);
            continue;
        }
        struct timespec deadline = w->deadline;
        int rc = pthread_cond_timedwait(&w->wake, &w->lock, &deadline);
        if (rc == ETIMEDOUT || rc == 0) {
            struct timespec now = monotonic_now();
            if (w->armed && !w->stopping && reached(now, w->deadline)) fire(w, now);
        }
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int ars_watchdog_start_with(ars_watchdog **out, const ars_watchdog_options *options)
{
    *out = NULL;
    if (!(options->timeout_seconds > 0)) return 0;
    if (options->timeout_seconds > 1e8)
        return ars_error(ARS_EINVAL, "watchdog: timeout %g s is too large", options->timeout_seconds);
    ars_watchdog *w = calloc(1, sizeof *w);
    if (!w) return ars_error(ARS_ENOMEM, "watchdog: out of memory");
    w->options = *options;
    if (w->options.exit_code == 0) w->options.exit_code = ARS_WATCHDOG_EXIT_CODE;
    if (!(w->options.abort_grace_seconds > 0)) w->options.abort_grace_seconds = 5;
    if (!w->options.abort_fn) w->options.abort_fn = mpi_abort;
    w->rank = options->rank;
    if (w->rank < 0) {
        int up = 0, down = 0;
        MPI_Initialized(&up);
        MPI_Finalized(&down);
        w->rank = 0;
        if (up && !down) MPI_Comm_rank(MPI_COMM_WORLD, &w->rank);
    }
    if (gethostname(w->host, sizeof w->host - 1) != 0) snprintf(w->host, sizeof w->host, "?");
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (!rc) rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (!rc) rc = pthread_cond_init(&w->wake, &attr);
    pthread_condattr_destroy(&attr);
    if (rc) {
        free(w);
        return ars_error(ARS_ENOMEM, "watchdog: cannot create its condition variable: %s", strerror(rc));
    }
    pthread_mutex_init(&w->lock, NULL);
    rc = pthread_create(&w->thread, NULL, monitor, w);
    if (rc) {
        pthread_cond_destroy(&w->wake);
        pthread_mutex_destroy(&w->lock);
        free(w);
        return ars_error(ARS_ENOMEM, "watchdog: cannot start its thread: %s", strerror(rc));
    }
    *out = w;
    return 0;
}

int ars_watchdog_start(ars_watchdog **out, double timeout_seconds, int rank)
{
    ars_watchdog_options options = {.timeout_seconds = timeout_seconds, .rank = rank};
    return ars_watchdog_start_with(out, &options);
}

void ars_watchdog_enter(ars_watchdog *w, int64_t step, const char *what)
{
    if (!w) return;
    pthread_mutex_lock(&w->lock);
    w->armed_at = monotonic_now();
    w->deadline = add_seconds(w->armed_at, w->options.timeout_seconds);
    w->step = step;
    snprintf(w->what, sizeof w->what, "%s", what ? what : "a collective");
    w->armed = 1;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

void ars_watchdog_leave(ars_watchdog *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->lock);
    w->armed = 0;   /* the monitor notices at its next wake; no signal needed */
    pthread_mutex_unlock(&w->lock);
}

void ars_watchdog_stop(ars_watchdog *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    w->armed = 0;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
