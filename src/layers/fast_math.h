/* fast_math: exp, tanh, sigmoid, expm1 and the normal CDF for the inner
 * loops of the layers (activations, attention's softmax, the RNN's
 * recurrence), written as plain arithmetic and integer selects so that GCC
 * vectorizes the loops that call them: a libm call per element cost more
 * than all the GEMMs of a sigmoid MLP, of attention at time = 200 and of the
 * RNN at any length. Float compares are
 * avoided on purpose: under the default -ftrapping-math they keep a loop
 * scalar; for floats of one sign, the bits compare like the values. */
#ifndef ARSENAL_FAST_MATH_H
#define ARSENAL_FAST_MATH_H

#include <stdint.h>

#include "../simd.h"

static inline int32_t ars_float_bits(float v)
{
    union { float f; int32_t i; } u = {.f = v};
    return u.i;
}

static inline float ars_bits_float(int32_t i)
{
    union { int32_t i; float f; } u = {.i = i};
    return u.f;
}

/* exp(-d) for d >= 0, within 2 ulp of expf: -d = n ln2 + r, |r| <= ln2/2,
 * exp(r) by Cephes' degree-6 polynomial, 2^n from the exponent bits. d is
 * first clamped to [0, 87] on its bits (exp(-87) ~ 2e-38: the result never
 * underflows; a negative d or NaN counts as 0 or 87, never reaching the
 * float-to-int conversion out of range). */
static inline float ars_exp_neg(float d)
{
    const int32_t limit = 0x42ae0000;   /* the bits of 87.0f */
    int32_t bits = ars_float_bits(d);
    bits = bits < 0 ? 0 : bits;
    const float x = -ars_bits_float(bits < limit ? bits : limit);
    const float round = 12582912.0f;   /* adding 1.5 * 2^23 rounds to an integer */
    const float n = (x * 1.44269504088896341f + round) - round;
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;   /* ln2 in two parts */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * ars_bits_float(((int32_t)n + 127) << 23);
}

/* tanh within a few ulp of tanhf: Cephes' odd polynomial below |x| = 0.625
 * (where 1 - e would cancel), (1 - e) / (1 + e) with e = exp(-2|x|) above;
 * the sign put back from x's bits. NaN stays NaN (the trainer's non-finite
 * guard must see it), tanh(+-inf) = +-1. */
static inline float ars_tanh(float x)
{
    const int32_t bits = ars_float_bits(x), sign = bits & INT32_MIN, abs_bits = bits & INT32_MAX;
    const float a = ars_bits_float(abs_bits), z = a * a;
    const float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                          1.33314422036e-1f) * z - 3.33332819422e-1f) * z * a + a;
    const float e = ars_exp_neg(2.0f * a);
    const float large = (1.0f - e) / (1.0f + e);
    /* selects by masks, not ?: (GCC would branch around the division) */
    const int32_t use_small = -(int32_t)(abs_bits < 0x3f200000), is_nan = -(int32_t)(abs_bits > 0x7f800000);
    int32_t r = (ars_float_bits(small) & use_small) | (ars_float_bits(large) & ~use_small);   /* 0.625f */
    r = (abs_bits & is_nan) | (r & ~is_nan);
    return ars_bits_float(r | sign);
}

/* Selects on a mask of all ones / all zeros (as GCC vectorizes them). */
static inline float ars_select(int32_t mask, float if_set, float if_clear)
{
    return ars_bits_float((ars_float_bits(if_set) & mask) | (ars_float_bits(if_clear) & ~mask));
}

/* All ones when v is NaN, else 0. */
static inline int32_t ars_nan_mask(float v)
{
    return -(int32_t)((ars_float_bits(v) & INT32_MAX) > 0x7f800000);
}

/* 1 / (1 + exp(-x)), within a few ulp of the libm form: e = exp(-|x|) never
 * overflows, and for x < 0 the result is e / (1 + e). NaN stays NaN. */
static inline float ars_sigmoid(float x)
{
    const int32_t bits = ars_float_bits(x), negative = bits >> 31;   /* all ones when x < 0 */
    const float e = ars_exp_neg(ars_bits_float(bits & INT32_MAX));
    const float inv = 1.0f / (1.0f + e);
    return ars_select(ars_nan_mask(x), x, ars_select(negative, e * inv, inv));
}

/* exp(x) - 1 for x <= 0 (ELU's and SELU's negative side; for x > 0 it
 * returns 0, and the caller selects x there). Near 0, where exp(x) - 1
 * would cancel, the Taylor series to x^8 (relative error < 3e-8 for
 * |x| < 0.5); below, exp(x) - 1 itself. NaN stays NaN. */
static inline float ars_expm1_neg(float x)
{
    const int32_t abs_bits = ars_float_bits(x) & INT32_MAX;
    const float a = ars_bits_float(abs_bits);
    const float d = -a;   /* x for x <= 0 */
    float p = 1.0f / 40320.0f;
    p = p * d + 1.0f / 5040.0f;
    p = p * d + 1.0f / 720.0f;
    p = p * d + 1.0f / 120.0f;
    p = p * d + 1.0f / 24.0f;
    p = p * d + 1.0f / 6.0f;
    p = p * d + 0.5f;
    p = p * d * d + d;
    const float far = ars_exp_neg(a) - 1.0f;
    const int32_t near = -(int32_t)(abs_bits < 0x3f000000);   /* |x| < 0.5 */
    const int32_t positive = ~(ars_float_bits(x) >> 31) & -(int32_t)(abs_bits != 0);
    float r = ars_select(near, p, far);
    r = ars_select(positive, 0.0f, r);
    return ars_select(ars_nan_mask(x), x, r);
}

/* The standard normal CDF Phi(x) = (1 + erf(x / sqrt 2)) / 2 for the exact
 * GELU, through erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2) (the
 * Chebyshev fit of Numerical Recipes' erfcc, relative error < 1.2e-7 for
 * every z >= 0), so that the tail stays accurate: Phi(x) = erfc(|z|)/2 for
 * x < 0 and 1 - erfc(|z|)/2 for x >= 0. NaN stays NaN. */
static inline float ars_normal_cdf(float x)
{
    const int32_t bits = ars_float_bits(x), negative = bits >> 31;
    const float z = ars_bits_float(bits & INT32_MAX) * 0.70710678118654752f;
    const float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    /* z^2 - P(t) >= 0 up to 3e-8 at z = 0: exp_neg's clamp at 0 costs nothing */
    const float half_erfc = 0.5f * t * ars_exp_neg(z * z - p);
    return ars_select(ars_nan_mask(x), x, ars_select(negative, half_erfc, 1.0f - half_erfc));
}

/* The standard normal density exp(-x^2 / 2) / sqrt(2 pi). */
static inline float ars_normal_pdf(float x)
{
    return 0.39894228040143268f * ars_exp_neg(0.5f * x * x);
}

#endif
