/* testutil: helpers shared by the cmocka tests. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arsenal/error.h"

void ars_test_tempdir(char *out, size_t size, const char *tag)
{
    const char *base = getenv("TMPDIR");
    snprintf(out, size, "%s/arsenal-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    if (!mkdtemp(out)) fail_msg("mkdtemp %s failed", out);
}

void ars_test_write_file(const char *path, const void *bytes, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot create %s", path);
    if (size && fwrite(bytes, 1, size, f) != size) fail_msg("short write to %s", path);
    fclose(f);
}

double ars_test_max_abs_diff(const float *a, const float *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > worst || isnan(d)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}
