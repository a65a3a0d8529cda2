/* gemm: the one door every matrix product of the layers goes through.
 *
 * Row-major C = alpha * op(A) op(B) + beta * C, with the arguments of
 * cblas_sgemm(CblasRowMajor, ...). Having one door lets the product be run
 * in the layout this CPU does fastest, or in another precision, without
 * touching the layers.
 *
 * Layouts. A product can be computed in several equivalent ways that give
 * the same values up to float rounding but run at different speeds,
 * depending on the BLAS kernels of the CPU at hand (see docs/performance.md):
 *   - as asked (layout 0);
 *   - the transposed product handed to BLAS as column-major (layout 8, "cm":
 *     the same memory, no copy; OpenBLAS maps it onto the same kernel call
 *     except where its row-major entry point has a special path);
 *   - with A and/or B transposed into a scratch copy first (flips its
 *     transposition flag), and/or with the product computed as C^T into a
 *     scratch and transposed back ("T:"): layouts 1-7 = bit 2 output
 *     transposed, bit 1 A copied, bit 0 B copied. The copies are part of
 *     what is measured.
 * Each distinct product (flags, m, n, k, the leading dimensions, beta = 0
 * or not) is measured once per process, while the model is built
 * (ars_model_tune_gemm runs one pass with ars_gemm_record_start(1)), and
 * kept in a table; a product not in it runs as asked. */
#ifndef ARSENAL_GEMM_H
#define ARSENAL_GEMM_H

#include <stdbool.h>
#include <stdint.h>

void ars_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc);

enum { ARS_GEMM_AS_ASKED = 0, ARS_GEMM_COLUMN_MAJOR = 8, ARS_GEMM_LAYOUTS = 9 };

/* One distinct product and the layout chosen for it: ten int32, the row
 * layout of the checkpoint attribute /model gemm_tuning (docs/checkpoint-format.md). */
typedef struct ars_gemm_choice {
    int32_t trans_a, trans_b, m, n, k, lda, ldb, ldc, beta_zero, layout;
} ars_gemm_choice;
enum { ARS_GEMM_CHOICE_FIELDS = 10 };

/* The process's switch: off, every product runs as asked whatever the
 * table holds (run.gemm_tuning = off). On by default. */
void ars_gemm_set_enabled(bool enabled);
bool ars_gemm_enabled(void);

/* Puts choices into the table (replacing the same products' entries) and
 * sizes the scratch the layouts need, so that no step allocates. Refuses a
 * layout out of range or a shape that is not a valid product. */
int ars_gemm_install(const ars_gemm_choice *choices, int count);
/* Forgets every choice (tests). */
void ars_gemm_reset(void);

/* Records the distinct products made from now on, in call order, with
 * their calls counted. measure: a product not yet in the table is timed in
 * every layout right there, on its real operands (C is restored between
 * trials), and the fastest goes into the table. Not reentrant. */
int ars_gemm_record_start(bool measure);
/* Stops recording: *choices (malloc'd, NULL for none; the caller frees),
 * *count distinct products with the layouts the table holds for them;
 * calls (may be NULL): malloc'd, the calls of each; *seconds and
 * *cpu_seconds (either may be NULL): the wall and process CPU time spent
 * measuring. Returns the first error of the recording. */
int ars_gemm_record_stop(ars_gemm_choice **choices, int **calls, int *count, double *seconds, double *cpu_seconds);

/* The layout the table holds for a product (ARS_GEMM_AS_ASKED if none or
 * disabled). */
int ars_gemm_layout_of(bool trans_a, bool trans_b, int m, int n, int k, int lda, int ldb, int ldc, float beta);

/* Runs the product in a given layout (benches, tests); the scratch must
 * have been sized by ars_gemm_install or a measurement for it (else the
 * product runs as asked). */
void ars_gemm_in_layout(int layout, bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
                        int lda, const float *b, int ldb, float beta, float *c, int ldc);

/* The layout's short name: "as asked" flags of the BLAS call it makes, as
 * cblas row-major letters, with "T:" when it computes C^T ("NT", "T:TN",
 * "cm"); into text (size >= 8). */
const char *ars_gemm_layout_name(const ars_gemm_choice *choice, char *text, int size);

/* "NN 128x1024x1024 T:NT, TN 1024x1024x128 NT" for the choices that are not
 * as asked ("all as asked" if none), into text. */
void ars_gemm_describe(const ars_gemm_choice *choices, int count, char *text, int size);

#endif
