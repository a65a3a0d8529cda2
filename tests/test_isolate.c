/* test_isolate: the checking child (src/isolate.c) that the checkpoint
 * reader, the HDF5 data loader and predict's HDF5 input run first. Each
 * way a child can end is told apart and becomes the error users see:
 *   - a verdict sent back whole (larger than a pipe's buffer too);
 *   - a crash (SIGSEGV): "crashed with signal 11";
 *   - a hang: killed at the wall-clock limit, "did not finish in 1 s";
 *   - a memory bomb: the address-space limit makes malloc fail (not under
 *     AddressSanitizer, which reserves terabytes and so runs unlimited);
 *   - an exit without a verdict: "exited with status 7 before its verdict". */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../src/isolate.h"
#include "arsenal/error.h"

typedef struct verdict {
    int value;
    char big[100000];   /* more than a pipe holds at once */
    int last;
} verdict;

static void answers(void *context, void *out)
{
    verdict *v = out;
    v->value = *(int *)context;
    memset(v->big, 'a', sizeof v->big);
    v->last = 42;
}

static void crashes(void *context, void *out)
{
    (void)context;
    (void)out;
    raise(SIGSEGV);
}

static void hangs(void *context, void *out)
{
    (void)context;
    (void)out;
    for (;;) pause();
}

static void exits(void *context, void *out)
{
    (void)context;
    (void)out;
    _exit(7);
}

/* 64 MiB of limit: 1 GiB more is refused, and the verdict says so */
static void allocates(void *context, void *out)
{
    (void)context;
    verdict *v = out;
    char *p = malloc((size_t)1 << 30);
    v->value = p == NULL;
    free(p);
}

static verdict v;

static void test_verdict_comes_back_whole(void **state)
{
    (void)state;
    int value = 1234;
    ars_isolated how;
    ARS_ASSERT_OK(ars_isolated_run("x.h5", 64 << 20, 10, answers, &value, &v, sizeof v, &how));
    assert_int_equal(how.end, ARS_ISOLATED_DONE);
    assert_int_equal(v.value, 1234);
    assert_int_equal(v.last, 42);
    assert_int_equal(v.big[sizeof v.big - 1], 'a');
}

static void test_crash_is_an_error(void **state)
{
    (void)state;
    ars_isolated how;
    ARS_ASSERT_OK(ars_isolated_run("bad.h5", 64 << 20, 10, crashes, NULL, &v, sizeof v, &how));
    assert_int_equal(how.end, ARS_ISOLATED_SIGNAL);
    assert_int_equal(how.signal, SIGSEGV);
    assert_int_equal(ars_isolated_error(&how, "bad.h5", "HDF5 file"), ARS_EFORMAT);
    assert_non_null(strstr(ars_error_message(), "bad.h5: corrupted HDF5 file (the HDF5 reader crashed with signal 11"));
}

static void test_hang_is_cut_at_the_limit(void **state)
{
    (void)state;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ars_isolated how;
    ARS_ASSERT_OK(ars_isolated_run("slow.h5", 64 << 20, 1, hangs, NULL, &v, sizeof v, &how));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    assert_int_equal(how.end, ARS_ISOLATED_TIMEOUT);
    assert_true(seconds >= 0.9 && seconds < 5);
    ars_isolated_error(&how, "slow.h5", "checkpoint");
    assert_string_equal(ars_error_message(), "slow.h5: corrupted checkpoint (the HDF5 reader did not finish in 1 s)");
}

static void test_exit_without_verdict(void **state)
{
    (void)state;
    ars_isolated how;
    ARS_ASSERT_OK(ars_isolated_run("x.h5", 64 << 20, 10, exits, NULL, &v, sizeof v, &how));
    assert_int_equal(how.end, ARS_ISOLATED_SILENT);
    assert_int_equal(how.exit_status, 7);
    ars_isolated_error(&how, "x.h5", "HDF5 file");
    assert_non_null(strstr(ars_error_message(), "exited with status 7 before its verdict; more than 64 MiB"));
}

static void test_memory_is_limited(void **state)
{
    (void)state;
    if (getenv("ARSENAL_SANITIZED") && strcmp(getenv("ARSENAL_SANITIZED"), "1") == 0) skip();
    ars_isolated how;
    ARS_ASSERT_OK(ars_isolated_run("x.h5", 64 << 20, 10, allocates, NULL, &v, sizeof v, &how));
    assert_int_equal(how.end, ARS_ISOLATED_DONE);
    assert_int_equal(v.value, 1);   /* malloc of 1 GiB failed */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verdict_comes_back_whole),
        cmocka_unit_test(test_crash_is_an_error),
        cmocka_unit_test(test_hang_is_cut_at_the_limit),
        cmocka_unit_test(test_exit_without_verdict),
        cmocka_unit_test(test_memory_is_limited),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
