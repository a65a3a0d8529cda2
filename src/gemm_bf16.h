/* gemm_bf16: the layers' products in bf16 with fp32 accumulation and fp32
 * output ([run] precision, docs/bf16.md). Internal to the library.
 *
 *   fp32           cblas_sgemm (OpenBLAS): the default and the fallback
 *   bf16           oneDNN matmul on bf16 operands (AVX512-BF16 / AMX-BF16)
 *   bf16_emulated  the operands rounded to bf16 (round to nearest even),
 *                  multiplied by cblas_sgemm: products of two bf16 values
 *                  are exact in fp32, so this gives bf16's numerics up to
 *                  the order of accumulation, on any CPU, slowly
 *
 * The precision is process-wide (ars_gemm has no context argument): the
 * trainer sets it for a run and puts fp32 back after. Only the matrix
 * products change; the caller's arrays (weights, gradients, optimizer
 * state, BatchNorm statistics) stay fp32.
 *
 * The weights are rounded once per forward pass, not once per product: the
 * model names its parameter array (ars_gemm_weights, from
 * ars_model_forward), and an operand inside it is read from a rounded copy
 * of the whole array made at its first product after that. Other operands
 * (activations, gradients) are rounded into scratch buffers that grow to
 * the largest operand and are then reused: no allocation per step. */
#ifndef ARSENAL_GEMM_BF16_H
#define ARSENAL_GEMM_BF16_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    ARS_PRECISION_FP32,
    ARS_PRECISION_BF16,
    ARS_PRECISION_BF16_EMULATED,
    /* tests only (not a run-file value): the oneDNN path with fp32
     * operands, so that its layouts, scales and caches are checked on CPUs
     * that cannot run its bf16 */
    ARS_PRECISION_ONEDNN_FP32
} ars_precision;

/* "fp32" | "bf16" | "bf16_emulated"; ARS_EINVAL for anything else. */
int ars_precision_parse(const char *text, ars_precision *out);
const char *ars_precision_name(ars_precision p);

/* 0 when p can run in this process; otherwise ARS_EINVAL with a message
 * saying what is missing: oneDNN in the build, the CPU feature (named,
 * with the CPU model), or oneDNN's own refusal to create a bf16 matmul. */
int ars_precision_check(ars_precision p);

/* Checks p (as above) and makes it the precision of every later ars_gemm. */
int ars_gemm_set_precision(ars_precision p);
ars_precision ars_gemm_precision(void);

/* One line for the run header: "bf16 (oneDNN 2.6.3, avx512_core_amx)". */
void ars_precision_describe(ars_precision p, char *out, size_t size);

/* The model's parameter array; products reading inside it use one rounded
 * copy until the next call. ars_gemm_forget_weights: the array is going
 * away (a later allocation at the same address is not weights). */
void ars_gemm_weights(const float *params, size_t count);
void ars_gemm_forget_weights(const float *params);

/* ars_gemm's branch for every precision but fp32. */
void ars_gemm_reduced(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                      const float *b, int ldb, float beta, float *c, int ldc);

/* x rounded to the nearest bf16 (ties to even; NaN stays NaN, quiet), as
 * an fp32 value; and the bf16 bits. */
float ars_bf16_round(float x);
uint16_t ars_bf16_bits(float x);

/* CPU features oneDNN's bf16 needs (cpuid and the OS's XSAVE state). */
typedef struct {
    int avx512_core;   /* AVX-512 F, BW, DQ, VL with ZMM state enabled */
    int avx512_bf16;
    int amx_bf16;      /* AMX-BF16 and AMX-TILE with tile state enabled */
    char model[64];    /* brand string */
} ars_cpu_bf16;
void ars_cpu_bf16_detect(ars_cpu_bf16 *cpu);

/* Tests: tries to create a small bf16 matmul with oneDNN whatever cpuid
 * says; 0 when it could, else ARS_EINVAL with oneDNN's status (and
 * ARS_EINVAL "built without oneDNN"). */
int ars_gemm_onednn_probe(void);
/* Tests: products run so far through oneDNN (all precisions). */
long ars_gemm_onednn_products(void);

#endif
