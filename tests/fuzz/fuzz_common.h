/* fuzz_common: helpers shared by the fuzz targets (tests/fuzz/fuzz_*.c), the
 * replay driver and the checkpoint seed generator: a private scratch
 * directory for the temporary files the readers are fed from, writing
 * bytes (plain or gzip) to a file, the small fixed model the checkpoint
 * target loads into, and a property check that aborts (so libFuzzer keeps
 * the input) with a message. Header-only: each target is one translation
 * unit plus this file. */
#ifndef ARSENAL_FUZZ_COMMON_H
#define ARSENAL_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "arsenal/error.h"
#include "arsenal/init.h"
#include "arsenal/model.h"
#include "arsenal/optim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A violated property: print it with the library's last error and abort,
 * which libFuzzer (and the replay test) report as a crash. */
#define FUZZ_CHECK(cond, ...)                                                          \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "fuzz property failed at %s:%d: %s\n  ", __FILE__, __LINE__, \
                    #cond);                                                            \
            fprintf(stderr, __VA_ARGS__);                                              \
            fprintf(stderr, "\n  last arsenal error: %s\n", ars_error_message());      \
            abort();                                                                   \
        }                                                                              \
    } while (0)

static char fuzz_dir_path[256];

static inline void fuzz_remove_dir(void)
{
    static const char *const names[] = {"input.cfg", "input.idx", "input.idx.gz", "input.h5", "input.csv",
                                        "again.csv", "x.npy", "y.npy"};
    char path[400];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", fuzz_dir_path, names[i]);
        unlink(path);
    }
    rmdir(fuzz_dir_path);
}

/* A scratch directory of this process (in /dev/shm when there is one:
 * every input is written to a file, so a RAM disk keeps runs fast),
 * removed at exit. */
static inline const char *fuzz_dir(void)
{
    if (fuzz_dir_path[0]) return fuzz_dir_path;
    const char *base = getenv("ARSENAL_FUZZ_TMPDIR");
    struct stat st;
    if (!base || !*base) base = stat("/dev/shm", &st) == 0 && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NULL;
    if (!base) base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/arsenal-fuzz-XXXXXX", base);
    if (!mkdtemp(fuzz_dir_path)) {
        perror("arsenal fuzz: mkdtemp");
        abort();
    }
    atexit(fuzz_remove_dir);
    return fuzz_dir_path;
}

/* dir/name, written with the bytes; aborts when it cannot (that is the
 * harness failing, not the code under test). */
static inline const char *fuzz_write_file(const char *name, const uint8_t *data, size_t size)
{
    static char path[400];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(path);
        abort();
    }
    return path;
}

/* Copies a scratch path into a fixed-size field (a user data spec's). */
static inline void fuzz_set_path(char *out, size_t size, const char *path)
{
    size_t n = strlen(path);
    FUZZ_CHECK(n < size, "scratch path %s longer than %zu", path, size - 1);
    memcpy(out, path, n + 1);
}

/* The same, gzip-compressed. */
static inline const char *fuzz_write_gzip(const char *name, const uint8_t *data, size_t size)
{
    static char path[400];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    gzFile f = gzopen(path, "wb1");
    if (!f) {
        perror(path);
        abort();
    }
    size_t done = 0;
    while (done < size) {
        unsigned chunk = size - done > (1u << 30) ? 1u << 30 : (unsigned)(size - done);
        if (gzwrite(f, data + done, chunk) != (int)chunk) {
            fprintf(stderr, "%s: gzwrite failed\n", path);
            abort();
        }
        done += chunk;
    }
    if (gzclose(f) != Z_OK) {
        fprintf(stderr, "%s: gzclose failed\n", path);
        abort();
    }
    return path;
}

/* The fixed model of the checkpoint target and its seed corpus (the model
 * of tests/test_ckpt.c): 5 inputs -> dense 8 -> batchnorm -> relu ->
 * dense 3, batches of up to 4 rows, Adam. */
enum { FUZZ_CKPT_IN = 5, FUZZ_CKPT_HIDDEN = 8, FUZZ_CKPT_OUT = 3, FUZZ_CKPT_ROWS = 4, FUZZ_CKPT_LAYERS = 4 };

static inline int fuzz_ckpt_model(ars_model *model, ars_optimizer *opt, ars_optimizer_kind kind)
{
    ars_layer_spec specs[FUZZ_CKPT_LAYERS];
    ars_layer_spec_defaults(&specs[0], "dense");
    specs[0].units = FUZZ_CKPT_HIDDEN;
    ars_layer_spec_defaults(&specs[1], "batchnorm");
    ars_layer_spec_defaults(&specs[2], "relu");
    ars_layer_spec_defaults(&specs[3], "dense");
    specs[3].units = FUZZ_CKPT_OUT;
    int rc = ars_model_create(model, specs, FUZZ_CKPT_LAYERS, ars_shape_vector(FUZZ_CKPT_IN), FUZZ_CKPT_ROWS);
    if (!rc) rc = ars_init_model(model, 11);
    ars_optim_config config;
    ars_optim_config_defaults(&config, kind);
    if (!rc) rc = ars_optimizer_create(opt, &config, model->param_count);
    return rc;
}

#endif
