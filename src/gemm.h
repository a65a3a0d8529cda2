/* gemm: the one door every matrix product of the layers goes through.
 *
 * Row-major C = alpha * op(A) op(B) + beta * C, with the arguments of
 * cblas_sgemm(CblasRowMajor, ...). Having one door lets the product be run
 * in the layout this CPU does fastest, or in another precision, without
 * touching the layers. */
#ifndef ARSENAL_GEMM_H
#define ARSENAL_GEMM_H

#include <stdbool.h>

void ars_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc);

#endif
