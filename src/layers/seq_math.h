/* seq_math: exp and tanh for the inner loops of the sequence layers
 * (attention's softmax, the RNN's recurrence), written as plain arithmetic
 * and integer selects so that GCC vectorizes the loops that call them: a
 * libm call per element cost more than all the GEMMs of those layers
 * (attention at time = 200, the RNN at any length). Float compares are
 * avoided on purpose: under the default -ftrapping-math they keep a loop
 * scalar; for floats of one sign, the bits compare like the values. */
#ifndef ARSENAL_SEQ_MATH_H
#define ARSENAL_SEQ_MATH_H

#include <stdint.h>

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

#endif
