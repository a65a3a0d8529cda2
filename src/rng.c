/* rng: Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as
 * 1, 2, 3", SC 2011) and the fills built on it. */
#include "arsenal/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo)
{
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

void ars_philox(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32);
    uint32_t c2 = (uint32_t)stream, c3 = (uint32_t)(stream >> 32);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo(PHILOX_M0, c0, &hi0, &lo0);
        mulhilo(PHILOX_M1, c2, &hi1, &lo1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

void ars_rng_uniform(float *out, size_t n, float low, float high,
                     uint64_t seed, uint64_t stream, uint64_t offset)
{
    uint32_t r[4];
    for (size_t i = 0; i < n; i += 4) {
        ars_philox(seed, stream, offset + i / 4, r);
        for (size_t j = 0; j < 4 && i + j < n; j++)
            out[i + j] = low + (high - low) * ars_u32_to_unit(r[j]);
    }
}

/* Box-Muller in double: two normals per pair of words. */
void ars_rng_normal(float *out, size_t n, float mean, float std,
                    uint64_t seed, uint64_t stream, uint64_t offset)
{
    uint32_t r[4];
    const double two_pi = 6.283185307179586;
    for (size_t i = 0; i < n; i += 4) {
        ars_philox(seed, stream, offset + i / 4, r);
        for (size_t pair = 0; pair < 2; pair++) {
            double u1 = ((double)r[2 * pair] + 0.5) / 4294967296.0;
            double u2 = ((double)r[2 * pair + 1] + 0.5) / 4294967296.0;
            double radius = sqrt(-2.0 * log(u1));
            size_t k = i + 2 * pair;
            if (k < n) out[k] = (float)(mean + std * radius * cos(two_pi * u2));
            if (k + 1 < n) out[k + 1] = (float)(mean + std * radius * sin(two_pi * u2));
        }
    }
}

void ars_rng_permutation(uint32_t *perm, size_t n, uint64_t seed, uint64_t stream)
{
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    uint32_t r[4];
    for (size_t i = n; i > 1; i--) {
        ars_philox(seed, stream, i, r);
        uint64_t wide = ((uint64_t)r[0] << 32) | r[1];
        size_t j = (size_t)(wide % i);   /* bias < i / 2^64: negligible */
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}
