/* testutil: helpers shared by the cmocka tests (includes cmocka in the
 * order it needs). */
#ifndef ARSENAL_TESTUTIL_H
#define ARSENAL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* Fails the test with the library's error message when rc != 0. */
#define ARS_ASSERT_OK(expr)                                                        \
    do {                                                                           \
        int ars_rc_ = (expr);                                                      \
        if (ars_rc_ != 0) fail_msg("%s returned %d: %s", #expr, ars_rc_,          \
                                   ars_error_message());                           \
    } while (0)

/* A fresh empty directory under $TMPDIR (or /tmp); caller owns the path. */
void ars_test_tempdir(char *out, size_t size, const char *tag);

/* Removes a directory tree made by ars_test_tempdir (best effort). */
void ars_test_remove_tree(const char *path);

/* Writes bytes to a file; fails the test on error. */
void ars_test_write_file(const char *path, const void *bytes, size_t size);

/* Max |a - b| over n floats. */
double ars_test_max_abs_diff(const float *a, const float *b, size_t n);

#endif
