/* test_watchdog: the collective timeout, without MPI. Each case forks a
 * child that arms the watchdog like the trainer does; the parent captures
 * the child's stderr and checks how and when it ended:
 *   - a section that never completes ends the child with status 3 within
 *     timeout + margin, with one line naming rank, host, step and what;
 *   - sections that complete in time (and re-armed phases) survive;
 *   - an abort that hangs is cut short by the _exit fallback;
 *   - timeout 0 is off; stop while armed does not fire. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "arsenal/error.h"
#include "arsenal/watchdog.h"

typedef struct {
    int exited, status, signal;   /* how the child ended */
    double seconds;               /* how long it ran */
    char err[4096];               /* what it wrote to stderr */
} outcome;

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void sleep_seconds(double s)
{
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
}

/* Runs body(arg) in a child whose stderr goes to a pipe; kills it after
 * limit seconds (a hang is a failure, not a stuck test). */
static void run_child(void (*body)(void *), void *arg, double limit, outcome *out)
{
    memset(out, 0, sizeof *out);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stdout);
    fflush(stderr);
    double start = now_seconds();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        close(fds[1]);
        body(arg);
        _exit(0);
    }
    close(fds[1]);
    int status = 0;
    for (;;) {
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid) break;
        if (now_seconds() - start > limit) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            close(fds[0]);
            fail_msg("the child did not end within %.1f s", limit);
        }
        sleep_seconds(0.01);
    }
    out->seconds = now_seconds() - start;
    size_t used = 0;
    ssize_t n;
    while (used < sizeof out->err - 1 && (n = read(fds[0], out->err + used, sizeof out->err - 1 - used)) > 0)
        used += (size_t)n;
    close(fds[0]);
    out->exited = WIFEXITED(status);
    out->status = out->exited ? WEXITSTATUS(status) : -1;
    out->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

typedef struct {
    double timeout, grace;
    int rank;
    void (*abort_fn)(int);
} setup;

static ars_watchdog *start_or_die(const setup *s)
{
    ars_watchdog_options options = {.timeout_seconds = s->timeout, .rank = s->rank,
                                    .abort_grace_seconds = s->grace, .abort_fn = s->abort_fn};
    ars_watchdog *w = NULL;
    if (ars_watchdog_start_with(&w, &options) != 0) {
        fprintf(stderr, "start failed: %s\n", ars_error_message());
        _exit(90);
    }
    return w;
}

static void never_leaves(void *arg)
{
    ars_watchdog *w = start_or_die(arg);
    ars_watchdog_enter(w, 42, "gradient all-reduce");
    for (;;) pause();   /* a peer that never answers */
}

static void test_a_hung_collective_ends_the_process(void **state)
{
    setup s = {.timeout = 1.0, .rank = 5};
    outcome o;
    run_child(never_leaves, &s, 20, &o);
    printf("hung section: child ended after %.2f s (timeout %.1f s), status %d\n", o.seconds, s.timeout,
           o.status);
    assert_true(o.exited);
    assert_int_equal(o.status, ARS_WATCHDOG_EXIT_CODE);
    assert_true(o.seconds >= s.timeout);
    assert_true(o.seconds < s.timeout + 2.0);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    char expected[512];
    snprintf(expected, sizeof expected, "arsenal: watchdog: rank 5 on host %s: step 42: gradient all-reduce "
             "did not complete within 1 s", host);
    if (!strstr(o.err, expected)) fail_msg("expected '%s' in:\n%s", expected, o.err);
    /* exactly one line */
    const char *newline = strchr(o.err, '\n');
    assert_non_null(newline);
    assert_int_equal(newline[1], '\0');
}

static void leaves_in_time(void *arg)
{
    ars_watchdog *w = start_or_die(arg);
    for (int step = 1; step <= 12; step++) {   /* 12 x 0.2 s: well past one timeout in total */
        ars_watchdog_enter(w, step, "gradient all-reduce");
        sleep_seconds(0.2);
        ars_watchdog_leave(w);
        sleep_seconds(0.05);
    }
    ars_watchdog_stop(w);
}

static void test_collectives_in_time_survive(void **state)
{
    setup s = {.timeout = 1.0, .rank = 0};
    outcome o;
    run_child(leaves_in_time, &s, 20, &o);
    assert_true(o.exited);
    assert_int_equal(o.status, 0);
    assert_string_equal(o.err, "");
    assert_true(o.seconds > 2.5);
}

static void rearms_per_phase(void *arg)
{
    ars_watchdog *w = start_or_die(arg);
    /* Three phases of 0.6 s each: each is within the 1 s timeout, though
     * they add up to 1.8 s without a leave in between. */
    ars_watchdog_enter(w, 7, "forward (SyncBatchNorm)");
    sleep_seconds(0.6);
    ars_watchdog_enter(w, 7, "backward (gradient buckets)");
    sleep_seconds(0.6);
    ars_watchdog_enter(w, 7, "gradient all-reduce");
    sleep_seconds(0.6);
    ars_watchdog_leave(w);
    sleep_seconds(1.5);   /* disarmed: nothing watched */
    ars_watchdog_stop(w);
}

static void test_enter_rearms(void **state)
{
    setup s = {.timeout = 1.0};
    outcome o;
    run_child(rearms_per_phase, &s, 20, &o);
    assert_true(o.exited);
    assert_int_equal(o.status, 0);
    assert_string_equal(o.err, "");
}

static void hanging_abort(int code)
{
    (void)code;
    for (;;) pause();   /* like MPI_Abort when it cannot reach the lost peer */
}

static void never_leaves_abort_hangs(void *arg)
{
    ars_watchdog *w = start_or_die(arg);
    ars_watchdog_enter(w, 9, "loss all-reduce");
    for (;;) pause();
}

static void test_a_hanging_abort_falls_back_to_exit(void **state)
{
    setup s = {.timeout = 0.5, .grace = 0.5, .rank = 2, .abort_fn = hanging_abort};
    outcome o;
    run_child(never_leaves_abort_hangs, &s, 20, &o);
    printf("hanging abort: child ended after %.2f s (timeout 0.5 s + grace 0.5 s)\n", o.seconds);
    assert_true(o.exited);
    assert_int_equal(o.status, ARS_WATCHDOG_EXIT_CODE);
    assert_true(o.seconds >= 1.0);
    assert_true(o.seconds < 3.0);
    assert_non_null(strstr(o.err, "step 9: loss all-reduce did not complete"));
    assert_non_null(strstr(o.err, "the abort did not end the process"));
}

static void stop_while_armed(void *arg)
{
    ars_watchdog *w = start_or_die(arg);
    ars_watchdog_enter(w, 1, "gradient all-reduce");
    sleep_seconds(0.2);
    ars_watchdog_stop(w);
    sleep_seconds(1.0);   /* past the deadline: the stopped watchdog stays quiet */
}

static void test_stop_while_armed_is_quiet(void **state)
{
    setup s = {.timeout = 0.5};
    outcome o;
    run_child(stop_while_armed, &s, 20, &o);
    assert_true(o.exited);
    assert_int_equal(o.status, 0);
    assert_string_equal(o.err, "");
}

static void test_timeout_zero_is_off(void **state)
{
    ars_watchdog *w = (ars_watchdog *)&w;
    ARS_ASSERT_OK(ars_watchdog_start(&w, 0, 0));
    assert_null(w);
    ars_watchdog_enter(w, 1, "anything");   /* NULL: no-ops */
    ars_watchdog_leave(w);
    ars_watchdog_stop(w);
    ARS_ASSERT_OK(ars_watchdog_start(&w, -1, 0));
    assert_null(w);
}

static void test_start_and_stop_in_process(void **state)
{
    /* No fork: the thread starts, arms, disarms and joins cleanly (for
     * sanitizer and leak checks). */
    ars_watchdog *w = NULL;
    ARS_ASSERT_OK(ars_watchdog_start(&w, 30, -1));
    assert_non_null(w);
    for (int i = 0; i < 1000; i++) {
        ars_watchdog_enter(w, i, "gradient all-reduce");
        ars_watchdog_leave(w);
    }
    ars_watchdog_stop(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_hung_collective_ends_the_process),
        cmocka_unit_test(test_collectives_in_time_survive),
        cmocka_unit_test(test_enter_rearms),
        cmocka_unit_test(test_a_hanging_abort_falls_back_to_exit),
        cmocka_unit_test(test_stop_while_armed_is_quiet),
        cmocka_unit_test(test_timeout_zero_is_off),
        cmocka_unit_test(test_start_and_stop_in_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
