/* gemm_bf16: bf16 products with fp32 accumulation (see gemm_bf16.h). */
#include "gemm_bf16.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "simd.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#ifdef ARSENAL_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#ifdef ARSENAL_HAVE_OPENMP
#include <omp.h>
#endif
#endif

static ars_precision active = ARS_PRECISION_FP32;

int ars_precision_parse(const char *text, ars_precision *out)
{
    static const struct { const char *name; ars_precision p; } names[] = {
        {"fp32", ARS_PRECISION_FP32}, {"bf16", ARS_PRECISION_BF16}, {"bf16_emulated", ARS_PRECISION_BF16_EMULATED}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(text, names[i].name) == 0) {
            *out = names[i].p;
            return 0;
        }
    return ars_error(ARS_EINVAL, "unknown precision '%s' (expected fp32, bf16 or bf16_emulated)", text);
}

const char *ars_precision_name(ars_precision p)
{
    switch (p) {
    case ARS_PRECISION_BF16: return "bf16";
    case ARS_PRECISION_BF16_EMULATED: return "bf16_emulated";
    case ARS_PRECISION_ONEDNN_FP32: return "onednn_fp32";
    default: return "fp32";
    }
}

/* ---- bf16 rounding: the upper 16 bits of an fp32, rounded to nearest even ---- */

static inline uint16_t to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    /* a NaN's payload could round into Inf: keep it a (quiet) NaN */
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);
}

static inline float from_bf16(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

uint16_t ars_bf16_bits(float x) { return to_bf16(x); }
float ars_bf16_round(float x) { return from_bf16(to_bf16(x)); }

/* Integer operations only: every clone gives the same bits. */
ARS_VECTOR_CLONES static void round_row_bf16(const float *restrict x, uint16_t *restrict out, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = to_bf16(x[i]);
}

ARS_VECTOR_CLONES static void round_row_fp32(const float *restrict x, float *restrict out, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = from_bf16(to_bf16(x[i]));
}

/* The operand format of a precision: what a rounded copy holds. */
typedef enum { COPY_BF16, COPY_ROUNDED_FP32, COPY_FP32 } copy_kind;

static copy_kind copy_kind_of(ars_precision p)
{
    return p == ARS_PRECISION_BF16 ? COPY_BF16 : p == ARS_PRECISION_BF16_EMULATED ? COPY_ROUNDED_FP32 : COPY_FP32;
}

static size_t element_size(copy_kind kind) { return kind == COPY_BF16 ? 2 : 4; }

static void round_span(copy_kind kind, const float *x, size_t n, void *out)
{
    if (kind == COPY_BF16) round_row_bf16(x, out, n);
    else if (kind == COPY_ROUNDED_FP32) round_row_fp32(x, out, n);
    else memcpy(out, x, sizeof(float) * n);
}

/* rows x cols at x (leading dimension ld) -> out, dense (ld = cols) */
static void round_rows(copy_kind kind, const float *x, int rows, int cols, int ld, void *out)
{
    const size_t width = (size_t)cols, size = element_size(kind);
    if (ld == cols) {
        round_span(kind, x, (size_t)rows * width, out);
        return;
    }
    for (int r = 0; r < rows; r++)
        round_span(kind, x + (size_t)r * (size_t)ld, width, (char *)out + (size_t)r * width * size);
}

/* ars_gemm returns nothing, so a failure here cannot be passed up: it ends
 * the process with the reason rather than return a wrong product. */
_Noreturn static void fatal(const char *what)
{
    fprintf(stderr, "arsenal: %s precision products: %s\n", ars_precision_name(active), what);
    fflush(stderr);
    abort();
}

typedef struct {
    void *data;
    size_t bytes;
} scratch;

static void *scratch_reserve(scratch *s, size_t bytes)
{
    if (bytes > s->bytes) {
        void *p = realloc(s->data, bytes);
        if (!p) fatal("out of memory for an operand's rounded copy");
        s->data = p;
        s->bytes = bytes;
    }
    return s->data;
}

static scratch scratch_a, scratch_b;

/* The model's parameters and their rounded copy (see the header). */
static struct {
    const float *base;
    size_t count;
    scratch copy;
    int fresh;            /* copy holds base as rounded for `kind` */
    copy_kind kind;
} weights;

void ars_gemm_weights(const float *params, size_t count)
{
    weights.base = params;
    weights.count = count;
    weights.fresh = 0;
}

void ars_gemm_forget_weights(const float *params)
{
    if (weights.base == params) ars_gemm_weights(NULL, 0);
}

/* The rows x cols matrix at p (leading dimension ld) in the active
 * operand format: inside the weights' rounded copy (same ld), or rounded
 * into s (ld = cols). */
static const void *operand(copy_kind kind, const float *p, int rows, int cols, int ld, scratch *s, int *ld_out)
{
    const uintptr_t at = (uintptr_t)p, base = (uintptr_t)weights.base;
    const size_t span = rows > 0 ? ((size_t)(rows - 1) * (size_t)ld + (size_t)cols) * sizeof(float) : 0;
    if (weights.base && at >= base && at + span <= base + weights.count * sizeof(float)) {
        if (!weights.fresh || weights.kind != kind) {
            void *copy = scratch_reserve(&weights.copy, element_size(kind) * (weights.count ? weights.count : 1));
            round_span(kind, weights.base, weights.count, copy);
            weights.fresh = 1;
            weights.kind = kind;
        }
        *ld_out = ld;
        return (const char *)weights.copy.data + (size_t)(p - weights.base) * element_size(kind);
    }
    void *out = scratch_reserve(s, element_size(kind) * (size_t)rows * (size_t)cols + 1);
    round_rows(kind, p, rows, cols, ld, out);
    *ld_out = cols;
    return out;
}

/* ---- CPU features ---- */

void ars_cpu_bf16_detect(ars_cpu_bf16 *cpu)
{
    memset(cpu, 0, sizeof *cpu);
    snprintf(cpu->model, sizeof cpu->model, "unknown CPU");
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (__get_cpuid_max(0x80000000u, NULL) >= 0x80000004u) {
        unsigned brand[12];
        for (unsigned i = 0; i < 3; i++)
            __get_cpuid(0x80000002u + i, &brand[4 * i], &brand[4 * i + 1], &brand[4 * i + 2], &brand[4 * i + 3]);
        char text[49];
        memcpy(text, brand, 48);
        text[48] = '\0';
        const char *start = text;
        while (*start == ' ') start++;
        snprintf(cpu->model, sizeof cpu->model, "%s", start);
        for (size_t n = strlen(cpu->model); n > 0 && cpu->model[n - 1] == ' ';) cpu->model[--n] = '\0';
    }
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return;   /* no OSXSAVE: no AVX state */
    unsigned xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    const unsigned long long xcr0 = ((unsigned long long)xcr0_hi << 32) | xcr0_lo;
    const int zmm_state = (xcr0 & 0xe6) == 0xe6;              /* SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM */
    const int tile_state = (xcr0 & (3ull << 17)) == (3ull << 17);   /* XTILECFG, XTILEDATA */
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned core = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31);   /* F, DQ, BW, VL */
    cpu->avx512_core = zmm_state && (b & core) == core;
    cpu->amx_bf16 = tile_state && (d & (1u << 22)) && (d & (1u << 24));
    const unsigned max_sub = a;
    if (max_sub >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        cpu->avx512_bf16 = cpu->avx512_core && (a & (1u << 5));
    }
#endif
}

/* ---- oneDNN ---- */

static long onednn_products;
long ars_gemm_onednn_products(void) { return onednn_products; }

#ifdef ARSENAL_HAVE_DNNL

/* One primitive per distinct product (shape, transpositions, leading
 * dimensions, scales, operand type), made at its first call and reused;
 * its memory objects are re-pointed at each call's arrays. */
typedef struct {
    int trans_a, trans_b, m, n, k, lda, ldb, ldc;
    float alpha, beta;
    dnnl_data_type_t type;
    dnnl_primitive_t primitive;
    dnnl_memory_t a, b, c;
} plan;

static struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    plan *plans;
    int count, capacity, last;
} dnnl;

static int dnnl_fail(dnnl_status_t status, const char *what)
{
    return ars_error(ARS_EINVAL, "oneDNN %d.%d.%d: %s: %s", dnnl_version()->major, dnnl_version()->minor,
                     dnnl_version()->patch, what, dnnl_status2str(status));
}

static int dnnl_start(void)
{
    if (dnnl.engine) return 0;
#ifdef ARSENAL_HAVE_OPENMP
    /* oneDNN threads through OpenMP here: as many as OpenBLAS uses (one per
     * rank in data-parallel runs), unless OMP_NUM_THREADS says otherwise */
    if (!getenv("OMP_NUM_THREADS")) omp_set_num_threads(openblas_get_num_threads());
#endif
    dnnl_status_t s = dnnl_engine_create(&dnnl.engine, dnnl_cpu, 0);
    if (s != dnnl_success) return dnnl_fail(s, "cannot create the CPU engine");
    s = dnnl_stream_create(&dnnl.stream, dnnl.engine, dnnl_stream_default_flags);
    if (s != dnnl_success) {
        dnnl_engine_destroy(dnnl.engine);
        dnnl.engine = NULL;
        return dnnl_fail(s, "cannot create a stream");
    }
    return 0;
}

/* A row-major rows x cols matrix, stored transposed when trans, with
 * leading dimension ld. */
static void matrix_desc(dnnl_memory_desc_t *md, int rows, int cols, int trans, int ld, dnnl_data_type_t type)
{
    dnnl_dims_t dims = {rows, cols};
    dnnl_dims_t strides = {trans ? 1 : ld, trans ? ld : 1};
    dnnl_memory_desc_init_by_strides(md, 2, dims, type, strides);
}

static int plan_create(plan *p)
{
    dnnl_memory_desc_t a, b, c;
    matrix_desc(&a, p->m, p->k, p->trans_a, p->lda, p->type);
    matrix_desc(&b, p->k, p->n, p->trans_b, p->ldb, p->type);
    matrix_desc(&c, p->m, p->n, 0, p->ldc, dnnl_f32);
    dnnl_matmul_desc_t desc;
    dnnl_status_t s = dnnl_matmul_desc_init(&desc, &a, &b, NULL, &c);
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post = NULL;
    if (s == dnnl_success) s = dnnl_primitive_attr_create(&attr);
    if (s == dnnl_success && p->alpha != 1.0f) s = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &p->alpha);
    if (s == dnnl_success && p->beta != 0.0f) {   /* C = alpha AB + beta C: the sum post-op */
        s = dnnl_post_ops_create(&post);
        if (s == dnnl_success) s = dnnl_post_ops_append_sum(post, p->beta);
        if (s == dnnl_success) s = dnnl_primitive_attr_set_post_ops(attr, post);
    }
    dnnl_primitive_desc_t pd = NULL;
    if (s == dnnl_success) s = dnnl_primitive_desc_create(&pd, &desc, attr, dnnl.engine, NULL);
    if (s == dnnl_success) s = dnnl_primitive_create(&p->primitive, pd);
    if (s == dnnl_success) s = dnnl_memory_create(&p->a, &a, dnnl.engine, DNNL_MEMORY_NONE);
    if (s == dnnl_success) s = dnnl_memory_create(&p->b, &b, dnnl.engine, DNNL_MEMORY_NONE);
    if (s == dnnl_success) s = dnnl_memory_create(&p->c, &c, dnnl.engine, DNNL_MEMORY_NONE);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (post) dnnl_post_ops_destroy(post);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success) {
        if (p->primitive) dnnl_primitive_destroy(p->primitive);
        if (p->a) dnnl_memory_destroy(p->a);
        if (p->b) dnnl_memory_destroy(p->b);
        char what[160];
        snprintf(what, sizeof what, "cannot create a %s matmul %dx%dx%d (%s%s)",
                 p->type == dnnl_bf16 ? "bf16" : "fp32", p->m, p->n, p->k, p->trans_a ? "T" : "N",
                 p->trans_b ? "T" : "N");
        return dnnl_fail(s, what);
    }
    return 0;
}

static int same_plan(const plan *p, const plan *q)
{
    return p->trans_a == q->trans_a && p->trans_b == q->trans_b && p->m == q->m && p->n == q->n && p->k == q->k &&
           p->lda == q->lda && p->ldb == q->ldb && p->ldc == q->ldc && p->alpha == q->alpha && p->beta == q->beta &&
           p->type == q->type;
}

static int plan_find(const plan *key, plan **out)
{
    if (dnnl.count && same_plan(&dnnl.plans[dnnl.last], key)) {   /* a layer's products come in runs */
        *out = &dnnl.plans[dnnl.last];
        return 0;
    }
    for (int i = 0; i < dnnl.count; i++)
        if (same_plan(&dnnl.plans[i], key)) {
            dnnl.last = i;
            *out = &dnnl.plans[i];
            return 0;
        }
    TRY(dnnl_start());
    if (dnnl.count == dnnl.capacity) {
        int grown = dnnl.capacity ? 2 * dnnl.capacity : 32;
        plan *p = realloc(dnnl.plans, sizeof *p * (size_t)grown);
        if (!p) return ars_error(ARS_ENOMEM, "out of memory for %d oneDNN matmul plans", grown);
        dnnl.plans = p;
        dnnl.capacity = grown;
    }
    plan *p = &dnnl.plans[dnnl.count];
    *p = *key;
    p->primitive = NULL;
    p->a = p->b = p->c = NULL;
    TRY(plan_create(p));
    dnnl.last = dnnl.count++;
    *out = p;
    return 0;
}

static void gemm_onednn(copy_kind kind, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                        const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    int lda_r, ldb_r;
    const void *ar = operand(kind, a, trans_a ? k : m, trans_a ? m : k, lda, &scratch_a, &lda_r);
    const void *br = operand(kind, b, trans_b ? n : k, trans_b ? k : n, ldb, &scratch_b, &ldb_r);
    plan key = {trans_a, trans_b, m, n, k, lda_r, ldb_r, ldc, alpha, beta, kind == COPY_BF16 ? dnnl_bf16 : dnnl_f32,
                NULL, NULL, NULL, NULL};
    plan *p = NULL;
    if (plan_find(&key, &p)) fatal(ars_error_message());
    dnnl_memory_set_data_handle(p->a, (void *)ar);
    dnnl_memory_set_data_handle(p->b, (void *)br);
    dnnl_memory_set_data_handle(p->c, c);
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, p->a}, {DNNL_ARG_WEIGHTS, p->b}, {DNNL_ARG_DST, p->c}};
    dnnl_status_t s = dnnl_primitive_execute(p->primitive, dnnl.stream, 3, args);
    if (s == dnnl_success) s = dnnl_stream_wait(dnnl.stream);
    if (s != dnnl_success) {
        dnnl_fail(s, "matmul failed");
        fatal(ars_error_message());
    }
    onednn_products++;
}

int ars_gemm_onednn_probe(void)
{
    TRY(dnnl_start());
    plan p = {0, 1, 16, 16, 32, 32, 32, 16, 1.0f, 0.0f, dnnl_bf16, NULL, NULL, NULL, NULL};
    TRY(plan_create(&p));
    dnnl_primitive_destroy(p.primitive);
    dnnl_memory_destroy(p.a);
    dnnl_memory_destroy(p.b);
    dnnl_memory_destroy(p.c);
    return 0;
}

static const char *onednn_isa(void) { return dnnl_cpu_isa2str(dnnl_get_effective_cpu_isa()); }

#else

int ars_gemm_onednn_probe(void)
{
    return ars_error(ARS_EINVAL, "this arsenal was built without oneDNN (install the Debian package libdnnl-dev "
                     "and configure again; scripts/setup.sh installs it)");
}

#endif

/* ---- the precision of the products ---- */

int ars_precision_check(ars_precision p)
{
    if (p == ARS_PRECISION_FP32 || p == ARS_PRECISION_BF16_EMULATED) return 0;
#ifndef ARSENAL_HAVE_DNNL
    return ars_error(ARS_EINVAL, "[run] precision = %s runs on oneDNN, and this arsenal was built without it: install "
                     "the Debian package libdnnl-dev and configure again (scripts/setup.sh does both); "
                     "bf16_emulated gives bf16's numerics on any CPU, slowly", ars_precision_name(p));
#else
    if (p == ARS_PRECISION_ONEDNN_FP32) return dnnl_start();
    ars_cpu_bf16 cpu;
    ars_cpu_bf16_detect(&cpu);
    if (!cpu.avx512_core)
        return ars_error(ARS_EINVAL, "[run] precision = bf16 needs a CPU with AVX512-BF16 or AMX-BF16 (and AVX-512 "
                         "F/BW/DQ/VL, oneDNN's avx512_core), and this one (%s) has no AVX-512: run fp32 here; "
                         "bf16_emulated gives bf16's numerics on any CPU, slowly", cpu.model);
    if (!cpu.avx512_bf16 && !cpu.amx_bf16)
        return ars_error(ARS_EINVAL, "[run] precision = bf16 needs a CPU with AVX512-BF16 or AMX-BF16, and this one (%s) "
                         "has AVX-512 without either: oneDNN would emulate bf16 more slowly than fp32 runs; run "
                         "fp32 here (bf16_emulated studies bf16's numerics on any CPU)", cpu.model);
    if (ars_gemm_onednn_probe())
        return ars_error_context(ARS_EINVAL, "[run] precision = bf16 on %s (oneDNN's ISA here: %s)", cpu.model,
                                 onednn_isa());
    return 0;
#endif
}

int ars_gemm_set_precision(ars_precision p)
{
    TRY(ars_precision_check(p));
    active = p;
    weights.fresh = 0;
    return 0;
}

ars_precision ars_gemm_precision(void) { return active; }

void ars_precision_describe(ars_precision p, char *out, size_t size)
{
    const char *rest = "fp32 weights, optimizer, gradient sum, norms";
    if (p == ARS_PRECISION_BF16) {
#ifdef ARSENAL_HAVE_DNNL
        snprintf(out, size, "bf16 products, fp32 accumulation (oneDNN %d.%d.%d, %s); %s", dnnl_version()->major,
                 dnnl_version()->minor, dnnl_version()->patch, onednn_isa(), rest);
#else
        snprintf(out, size, "bf16 (not in this build)");
#endif
    } else if (p == ARS_PRECISION_BF16_EMULATED) {
        snprintf(out, size, "bf16_emulated: operands rounded to bf16, products in fp32 by OpenBLAS (slow, for "
                 "numerics); %s", rest);
    } else if (p == ARS_PRECISION_ONEDNN_FP32) {
        snprintf(out, size, "fp32 products through oneDNN (tests)");
    } else {
        snprintf(out, size, "fp32 (OpenBLAS)");
    }
}

void ars_gemm_reduced(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                      const float *b, int ldb, float beta, float *c, int ldc)
{
    const copy_kind kind = copy_kind_of(active);
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {   /* no operands to round: C = beta C, as sgemm does */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, 0, alpha, a, 1, b, n, beta, c, ldc);
        return;
    }
#ifdef ARSENAL_HAVE_DNNL
    if (active == ARS_PRECISION_BF16 || active == ARS_PRECISION_ONEDNN_FP32) {
        gemm_onednn(kind, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
#endif
    if (active != ARS_PRECISION_BF16_EMULATED) fatal("this precision needs oneDNN, which is not in this build");
    int lda_r, ldb_r;
    const float *ar = operand(kind, a, trans_a ? k : m, trans_a ? m : k, lda, &scratch_a, &lda_r);
    const float *br = operand(kind, b, trans_b ? n : k, trans_b ? k : n, ldb, &scratch_b, &ldb_r);
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
                alpha, ar, lda_r, br, ldb_r, beta, c, ldc);
}
