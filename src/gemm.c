/* gemm: the layers' matrix products, today straight to OpenBLAS. */
#include "gemm.h"

#include <cblas.h>

#include "gemm_bf16.h"

void ars_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc)
{
    if (ars_gemm_precision() != ARS_PRECISION_FP32) {   /* [run] precision = bf16 | bf16_emulated */
        ars_gemm_reduced(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
                alpha, a, lda, b, ldb, beta, c, ldc);
}
