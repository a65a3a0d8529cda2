/* clip: gradient clipping and the non-finite check, over flat buffers. Norms
 * accumulate in double: squaring tiny float gradients (1e-28 in a deep
 * sigmoid net) underflows in float. */
#ifndef ARSENAL_CLIP_H
#define ARSENAL_CLIP_H

#include <stddef.h>

/* L2 norm of x[0..n) accumulated in double. Inf/NaN propagate. */
double ars_l2_norm(const float *x, size_t n);

/* Sum of squares in double (for combining slices into one norm). */
double ars_sum_squares(const float *x, size_t n);

/* 1 if any element is NaN or Inf. */
int ars_has_nonfinite(const float *x, size_t n);

/* torch.nn.utils.clip_grad_norm_ semantics: total = ||g||; scale =
 * max_norm / (total + 1e-6); applied only when scale < 1. Returns the
 * scale applied (1 when none) and the norm before clipping in *norm
 * (norm may be NULL). A non-finite norm or max_norm <= 0 leaves g alone
 * (scale 1): non-finite gradients are the caller's policy to handle. */
float ars_clip_global_norm(float *g, size_t n, float max_norm, double *norm);

/* Same, when the norm was already computed (e.g. by the health probes). */
float ars_clip_scale_for_norm(double norm, float max_norm);
void ars_scale(float *g, size_t n, float scale);

/* Clamp each element to [-limit, limit] (limit >= 0; NaN stays NaN).
 * Returns how many were clamped. */
size_t ars_clip_by_value(float *g, size_t n, float limit);

#endif
