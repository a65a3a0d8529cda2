/* rng: a counter-based generator (Philox 4x32-10). A random number is a pure
 * function of (seed, stream, counter): there is no hidden state to save, and
 * any rank can reproduce any draw. Streams separate uses (initialization of
 * layer i, dropout of step s, the epoch permutation, ...). */
#ifndef ARSENAL_RNG_H
#define ARSENAL_RNG_H

#include <stddef.h>
#include <stdint.h>

/* Named streams: the high 32 bits of a stream id say what it is for, the
 * low 32 bits which instance (layer index, epoch, step). */
enum {
    ARS_STREAM_INIT = 1,     /* parameter initialization, low bits = layer */
    ARS_STREAM_SHUFFLE = 2,  /* epoch permutation, low bits = epoch */
    ARS_STREAM_DROPOUT = 3,  /* dropout masks, low bits = layer; counter from step */
    ARS_STREAM_DATA = 4,     /* synthetic data sets */
    ARS_STREAM_LSUV = 5,     /* LSUV calibration batch */
    ARS_STREAM_AUGMENT = 6   /* image augmentation, low bits = epoch; counter = sample id */
};

static inline uint64_t ars_stream(uint32_t kind, uint32_t instance)
{
    return ((uint64_t)kind << 32) | instance;
}

/* Four 32-bit random words for (seed, stream, counter). */
void ars_philox(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t out[4]);

/* Uniform in (0, 1): never 0, never 1 (safe for log). 23 bits, so that
 * the largest value, 1 - 2^-24, is exactly representable in float. */
static inline float ars_u32_to_unit(uint32_t x)
{
    return ((float)(x >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

/* Fill n values; element i uses counter (offset + i/4 or /2): so a slice of
 * the sequence can be regenerated independently. */
void ars_rng_uniform(float *out, size_t n, float low, float high,
                     uint64_t seed, uint64_t stream, uint64_t offset);
void ars_rng_normal(float *out, size_t n, float mean, float std,
                    uint64_t seed, uint64_t stream, uint64_t offset);

/* Fisher-Yates permutation of 0..n-1 from (seed, stream). */
void ars_rng_permutation(uint32_t *perm, size_t n, uint64_t seed, uint64_t stream);

#endif
