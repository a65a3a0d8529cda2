/* testutil: helpers shared by the cmocka tests (includes cmocka in the
 * order it needs). */
#ifndef ARSENAL_TESTUTIL_H
#define ARSENAL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "arsenal/dist.h"
#include "arsenal/train.h"

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

/* The layer specs of a run file's text (expanded: [transformer] blocks
 * become their layers); fails the test on an error. Caller frees. */
ars_layer_spec *ars_test_load_specs(const char *text, int *count);

/* ---- data-parallel equivalence (tests/mpi_*equivalence.c) ----------------
 * N ranks with local batch b must end with the parameters of 1 rank with
 * batch N*b. */

/* Float rounding of a different summation order between 1 and N ranks
 * (GEMM blocking over more or fewer rows, all-reduce order), ~1e-7
 * relative per step, grown by 14 Adam steps: measured ~2e-6. */
#define ARS_TEST_EQUIVALENCE_TOLERANCE 1e-5
/* 203 = 12 x 16 + 11 = 8 x 24 + 11: within 14 steps the partial last batch
 * comes on 2 ranks (8 + 3 rows) and on 3 ranks (8 + 3 + 0 rows). */
enum { ARS_TEST_LOCAL_BATCH = 8, ARS_TEST_TRAIN_SAMPLES = 203, ARS_TEST_STEPS = 14 };
#define ARS_TEST_CLIP_NORM 0.05f

/* The [run] both equivalence tests share: TRAIN_SAMPLES samples, STEPS
 * Adam steps of global_batch rows (a global batch), constant LR, active
 * global-norm clipping (CLIP_NORM, well below the gradient norm),
 * overlapped all-reduce, consistency checks, probes and histograms. The
 * caller sets data, loss, seed, lr and bucket sizes. */
void ars_test_equivalence_run(ars_run_config *run, int global_batch);

/* One training run on dist (NULL: this process alone) with global_batch
 * rows per step, params and state exported into *result. */
typedef void (*ars_test_train_fn)(const void *model, ars_dist *dist, int global_batch, ars_train_result *result);

typedef struct ars_test_equivalence {
    ars_train_result single;     /* this process alone, the global batch */
    ars_train_result parallel;   /* every rank of world, local batch LOCAL_BATCH */
    double param_diff, state_diff;
} ars_test_equivalence;

/* Trains model both ways and checks (failing the test otherwise): the
 * same parameters and layer state within the tolerance, the same last
 * training loss and test loss, clipping active, every rank bit-identical.
 * Prints the figures on rank 0 under label. Free with
 * ars_test_equivalence_free. */
void ars_test_check_equivalence(ars_dist *world, const char *label, ars_test_train_fn train, const void *model,
                                ars_test_equivalence *out);
void ars_test_equivalence_free(ars_test_equivalence *e);
void ars_test_result_free(ars_train_result *result);

/* main() of an MPI test: MPI_Init, world over MPI_COMM_WORLD, the cmocka
 * tests, then MPI_Finalize, or MPI_Abort when one failed (never leave the
 * other ranks waiting). */
int ars_test_mpi_main(int *argc, char ***argv, ars_dist *world, const struct CMUnitTest *tests, size_t count);
/* The same with a temporary directory for the tests' files: rank 0 makes
 * it (ars_test_tempdir with tag), every rank gets its name in dir, rank 0
 * removes it at the end. */
int ars_test_mpi_main_in_tempdir(int *argc, char ***argv, ars_dist *world, const char *tag, char *dir, size_t size,
                                 const struct CMUnitTest *tests, size_t count);

#endif
