/* clip: gradient norms (accumulated in double), global-norm and by-value
 * clipping with torch.nn.utils semantics, and the non-finite check. */
#include "arsenal/clip.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "simd.h"

/* Sixteen independent partial sums (simd.h), combined in a fixed tree:
 * double reductions cannot be reordered by the compiler without
 * -ffast-math, so the source gives it the parallelism (four AVX2 registers
 * of four doubles, enough to hide the adds' latency) and fixes the order,
 * which keeps the result the same at any vector width and with any flags. */
ARS_VECTOR_CLONES
double ars_sum_squares(const float *x, size_t n)
{
    double acc[ARS_PARTIAL_SUMS] = {0};
    size_t i = 0;
    for (; i + ARS_PARTIAL_SUMS <= n; i += ARS_PARTIAL_SUMS)
        for (int j = 0; j < ARS_PARTIAL_SUMS; j++) acc[j] += (double)x[i + j] * x[i + j];
    for (; i < n; i++) acc[0] += (double)x[i] * x[i];
    return ars_combine_partial_sums(acc);
}

double ars_l2_norm(const float *x, size_t n) { return sqrt(ars_sum_squares(x, n)); }

/* NaN and Inf are exactly the floats whose exponent bits are all ones. Test
 * the bits in blocks with no branch inside (vectorizes), and stop at the
 * first block that has one. */
int ars_has_nonfinite(const float *x, size_t n)
{
    enum { BLOCK = 1024 };
    for (size_t start = 0; start < n; start += BLOCK) {
        size_t end = n - start < BLOCK ? n : start + BLOCK;
        uint32_t found = 0;
        for (size_t i = start; i < end; i++) {
            uint32_t bits;
            memcpy(&bits, &x[i], sizeof bits);
            found |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
        }
        if (found) return 1;
    }
    return 0;
}

/* A non-finite norm gives scale 1: scaling by NaN or 0 would only hide
 * the problem, which the caller's non-finite policy handles. max_norm <= 0
 * disables clipping. */
float ars_clip_scale_for_norm(double norm, float max_norm)
{
    if (!(max_norm > 0.0f) || !isfinite(norm)) return 1.0f;
    double scale = (double)max_norm / (norm + 1e-6);
    return scale < 1.0 ? (float)scale : 1.0f;
}

void ars_scale(float *g, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) g[i] *= scale;
}

float ars_clip_global_norm(float *g, size_t n, float max_norm, double *norm)
{
    double total = ars_l2_norm(g, n);
    if (norm) *norm = total;
    float scale = ars_clip_scale_for_norm(total, max_norm);
    if (scale < 1.0f) ars_scale(g, n, scale);
    return scale;
}

/* Comparisons instead of fminf/fmaxf so NaN stays NaN (as torch.clamp). */
size_t ars_clip_by_value(float *g, size_t n, float limit)
{
    size_t clamped = 0;
    for (size_t i = 0; i < n; i++) {
        float v = g[i];
        int hi = v > limit, lo = v < -limit;
        clamped += (size_t)(hi | lo);
        g[i] = hi ? limit : lo ? -limit : v;
    }
    return clamped;
}
