/* onnx_forward: the reference side of tests/cli_onnx.sh. Loads a
 * checkpoint's model as `arsenal export` does (src/export/ckpt_model.c)
 * and runs arsenal's own evaluation-mode forward on ROWS seeded random
 * samples, in batches of at most 16 rows, writing the samples and the
 * outputs as raw little-endian float32 for tests/onnx_check.py:
 *     onnx_forward [--standardize MEAN STD] CKPT.h5 ROWS SEED PREFIX
 * writes PREFIX.input.f32 [ROWS, input count] and PREFIX.logits.f32 [ROWS,
 * output count]. --standardize first records MEAN and STD as the
 * checkpoint's root attributes data_mean and data_std (what a run that
 * records its data standardization writes), changing CKPT.h5 in place. */
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/export/ckpt_model.h"
#include "arsenal/error.h"

static int fail(const char *what)
{
    fprintf(stderr, "onnx_forward: %s\n", what);
    return 1;
}

static int write_floats(const char *prefix, const char *suffix, const float *v, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s.%s.f32", prefix, suffix);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(v, sizeof *v, n, f) == n;
    if (f) ok = fclose(f) == 0 && ok;
    if (!ok) fprintf(stderr, "onnx_forward: cannot write %s\n", path);
    return ok ? 0 : 1;
}

static int record_standardization(const char *path, double mean, double std)
{
    hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (file < 0) return fail("cannot open the checkpoint for writing");
    const char *names[2] = {"data_mean", "data_std"};
    const double values[2] = {mean, std};
    int rc = 0;
    for (int i = 0; i < 2 && !rc; i++) {
        if (H5Aexists(file, names[i]) > 0) H5Adelete(file, names[i]);
        hid_t space = H5Screate(H5S_SCALAR);
        hid_t attr = H5Acreate2(file, names[i], H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT);
        rc = attr < 0 || H5Awrite(attr, H5T_NATIVE_DOUBLE, &values[i]) < 0;
        if (attr >= 0) H5Aclose(attr);
        H5Sclose(space);
    }
    H5Fclose(file);
    return rc ? fail("cannot write data_mean / data_std") : 0;
}

/* Standard normal samples from a seeded xorshift64* (Box-Muller). */
static uint64_t state;
static double uniform(void)
{
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return ((state * 2685821657736338717ULL) >> 11) * 0x1.0p-53 + 0x1.0p-54;
}

int main(int argc, char **argv)
{
    int arg = 1;
    if (argc > 4 && strcmp(argv[1], "--standardize") == 0) {
        if (record_standardization(argv[4], atof(argv[2]), atof(argv[3]))) return 1;
        arg = 4;
    }
    if (argc - arg != 4) {
        fprintf(stderr, "usage: onnx_forward [--standardize MEAN STD] CKPT.h5 ROWS SEED PREFIX\n");
        return 2;
    }
    const char *ckpt = argv[arg], *prefix = argv[arg + 3];
    const int rows = atoi(argv[arg + 1]);
    state = strtoull(argv[arg + 2], NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
    if (rows < 1) return fail("ROWS must be positive");

    ars_ckpt_model m;
    if (ars_ckpt_model_load(&m, ckpt, NULL, 16)) {
        fprintf(stderr, "onnx_forward: %s\n", ars_error_message());
        return 1;
    }
    const size_t in = (size_t)m.model.in_dim, out = (size_t)m.model.out_dim;
    float *x = malloc(sizeof *x * rows * in), *y = malloc(sizeof *y * rows * out);
    if (!x || !y) {
        free(x);
        free(y);
        ars_ckpt_model_free(&m);
        return fail("out of memory");
    }
    /* raw samples: standard normal, shifted and scaled by the recorded
     * standardization so that the model sees inputs of unit scale */
    const double mean = m.standardized ? m.data_mean : 0, scale = m.standardized && m.data_std > 0 ? m.data_std : 1;
    for (size_t i = 0; i < rows * in; i++)
        x[i] = (float)(mean + scale * sqrt(-2 * log(uniform())) * cos(6.283185307179586 * uniform()));
    int rc = ars_ckpt_model_predict(&m, x, rows, y);
    if (rc) fprintf(stderr, "onnx_forward: %s\n", ars_error_message());
    if (!rc) rc = write_floats(prefix, "input", x, rows * in) || write_floats(prefix, "logits", y, rows * out);
    printf("onnx_forward: %d samples of %zu values -> %zu outputs%s\n", rows, in, out,
           m.standardized ? " (standardized by the checkpoint's data_mean / data_std)" : "");
    free(x);
    free(y);
    ars_ckpt_model_free(&m);
    return rc ? 1 : 0;
}
