/* clip: gradient norms (accumulated in double), global-norm and by-value
 * clipping with torch.nn.utils semantics, and the non-finite check. */
#include "arsenal/clip.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Four independent partial sums: double reductions cannot be reordered by
 * the compiler without -ffast-math, so give it the parallelism explicitly
 * (and keep the result independent of flags). */
double ars_sum_squares(const float *x, size_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        double a = x[i], b = x[i + 1], c = x[i + 2], d = x[i + 3];
        s0 += a * a;
        s1 += b * b;
        s2 += c * c;
        s3 += d * d;
    }
    for (; i < n; i++) s0 += (double)x[i] * x[i];
    return (s0 + s1) + (s2 + s3);
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
