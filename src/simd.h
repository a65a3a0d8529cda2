/* simd: ARS_VECTOR_CLONES, put before a hot elementwise kernel: GCC
 * compiles it three times, for the x86-64 baseline (SSE2), x86-64-v3 (AVX2)
 * and x86-64-v4 (AVX-512), and picks one when the program loads (an ifunc),
 * so one portable binary runs 8 or 16 floats per instruction where the CPU
 * allows it. Elsewhere it is nothing.
 *
 * All clones give bitwise the same results: each element goes through the
 * same IEEE operations (add, mul, div, sqrt: correctly rounded at any vector
 * width) in the same order, and ISO C mode (-std=c11) keeps GCC from
 * contracting a*b+c into an FMA. That is what lets the optimizer use it:
 * ranks on different CPU generations still make identical updates
 * (tests/cli_clones.sh trains with the clones and with ARSENAL_NO_CLONES and
 * compares). Do not put a reduction whose order depends on the vector width
 * behind it. */
#ifndef ARSENAL_SIMD_H
#define ARSENAL_SIMD_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__gnu_linux__) && \
    !defined(ARSENAL_NO_CLONES)
#define ARS_VECTOR_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define ARS_VECTOR_CLONES
#endif

/* The kernels that sum squares keep sixteen independent partial sums (the
 * parallelism GCC may not invent for a double reduction without
 * -ffast-math) and combine them in this one fixed tree, so that every
 * clone, and every kernel, gives the same bits for the same values. */
enum { ARS_PARTIAL_SUMS = 16 };
static inline double ars_combine_partial_sums(double acc[ARS_PARTIAL_SUMS])
{
    for (int width = ARS_PARTIAL_SUMS / 2; width >= 1; width /= 2)
        for (int j = 0; j < width; j++) acc[j] += acc[j + width];
    return acc[0];
}

#endif
