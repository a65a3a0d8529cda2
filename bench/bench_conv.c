/* bench_conv: times the conv2d kernels of src/layers/conv_kernels.c under
 * each strategy (ARS_CONV_PER_SAMPLE, ARS_CONV_BATCHED) on the convolutions
 * of a ResNet-20 for 28x28 Fashion-MNIST (16/32/64 channels, 3x3, stride 1
 * and 2, 1x1 stride-2 projections) and of a small CNN (1->32->64->128 at
 * 28, 14 and 7 pixels as in examples/cnn-fmnist.cfg, and 5x5 kernels),
 * batch 128, against the raw cblas_sgemm calls of the same products (same
 * shapes, same buffers, without im2col, col2im, copies and bias):
 * "x raw" = kernel time / raw GEMM time of its own products; "x best raw"
 * = kernel time / the cheaper of the two strategies' raw GEMM times. Each
 * figure is the median over --reps rounds; in a round every variant of a
 * shape runs back to back (interleaved), each one repeated for at least
 * --min-ms. Also prints what ars_conv_plan_choose picks and how long it
 * took, and the ResNet-20 convolutions of one step summed with each
 * strategy and with the per-shape choice.
 *
 *   OPENBLAS_NUM_THREADS=1 build/bench_conv [--reps 5] [--batch 128] [--min-ms 30] [--wall] [--only TEXT] */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arsenal/error.h"
#include "../src/layers/conv_kernels.h"

typedef struct shape {
    const char *name;
    int c, hw, o, k, stride, pad;
    int need_dx;     /* 0: a first layer, backward without dx */
    int resnet20;    /* how many of these one ResNet-20 forward makes */
} shape;

static const shape SHAPES[] = {
    {"resnet stem 1->16 3x3 28", 1, 28, 16, 3, 1, 1, 0, 1},
    {"resnet s1 16->16 3x3 28", 16, 28, 16, 3, 1, 1, 1, 6},
    {"resnet s2 16->32 3x3/2 28", 16, 28, 32, 3, 2, 1, 1, 1},
    {"resnet s2 proj 16->32 1x1/2", 16, 28, 32, 1, 2, 0, 1, 1},
    {"resnet s2 32->32 3x3 14", 32, 14, 32, 3, 1, 1, 1, 5},
    {"resnet s3 32->64 3x3/2 14", 32, 14, 64, 3, 2, 1, 1, 1},
    {"resnet s3 proj 32->64 1x1/2", 32, 14, 64, 1, 2, 0, 1, 1},
    {"resnet s3 64->64 3x3 7", 64, 7, 64, 3, 1, 1, 1, 5},
    {"cnn 1->32 3x3 28", 1, 28, 32, 3, 1, 1, 0, 0},
    {"cnn 32->64 3x3 14", 32, 14, 64, 3, 1, 1, 1, 0},
    {"cnn 64->128 3x3 7", 64, 7, 128, 3, 1, 1, 1, 0},
    {"cnn 1->32 5x5 28", 1, 28, 32, 5, 1, 2, 0, 0},
    {"cnn 32->64 5x5 14", 32, 14, 64, 5, 1, 2, 1, 0},
    {"pointwise 16->32 1x1 28", 16, 28, 32, 1, 1, 0, 1, 0},
};
enum { SHAPE_COUNT = sizeof SHAPES / sizeof SHAPES[0], S = ARS_CONV_STRATEGIES };
enum { FWD = 0, BWD = 1, PASSES = 2 };
enum { KERNEL = 0, RAW = 1, KINDS = 2 };

typedef struct buffers {
    float *x, *w, *b, *y, *dy, *dw, *db, *dx, *ws;
} buffers;

/* CPU time of the process by default: on a shared machine a wall clock
 * also counts the time the scheduler gave to someone else (--wall: the
 * elapsed time; with more than one OpenBLAS thread, CPU time is the sum). */
static clockid_t bench_clock = CLOCK_PROCESS_CPUTIME_ID;

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(bench_clock, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *alloc_floats(size_t n, unsigned seed)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));
    if (!v) {
        fprintf(stderr, "bench_conv: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) v[i] = (float)(((i * 2654435761u + seed) >> 8) & 1023) / 1024.0f - 0.5f;
    return v;
}

/* The cblas_sgemm calls conv_kernels.c makes for one pass, with the same
 * arguments, on the same buffers (the column matrix left as the last
 * kernel call filled it): the products alone. */
static void raw_products(const ars_conv_geometry *g, ars_conv_strategy s, int n, int pass, int need_dx,
                         const buffers *m)
{
    const int G = g->groups, Cg = g->in_channels / G, Og = g->out_channels / G;
    const int K = Cg * g->kernel_h * g->kernel_w, P = g->out_h * g->out_w;
    const size_t in = ars_conv2d_in_floats(g), out = ars_conv2d_out_floats(g), plane = (size_t)g->in_h * g->in_w;
    const int direct = g->kernel_h == 1 && g->kernel_w == 1 && g->stride_h == 1 && g->stride_w == 1 &&
                       g->pad_h == 0 && g->pad_w == 0;
    const int transposed = ars_conv2d_dx_as_convolution(g), Kt = Og * g->kernel_h * g->kernel_w;
    if (s == ARS_CONV_PER_SAMPLE) {
        for (int i = 0; i < n; i++)
            for (int gi = 0; gi < G; gi++) {
                const float *col = direct ? m->x + i * in + (size_t)gi * Cg * plane : m->ws;
                const float *wg = m->w + (size_t)gi * Og * K;
                const float *dyg = m->dy + i * out + (size_t)gi * Og * P;
                if (pass == FWD) {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Og, P, K, 1.0f, wg, K, col, P, 1.0f,
                                m->y + i * out + (size_t)gi * Og * P, P);
                    continue;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Og, K, P, 1.0f, dyg, P, col, P,
                            i == 0 ? 0.0f : 1.0f, m->dw + (size_t)gi * Og * K, K);
                if (need_dx && transposed)   /* dx = W_t [Cg, Og kh kw] col(dy) [Og kh kw, H W] */
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Cg, (int)plane, Kt, 1.0f, m->w, Kt,
                                m->ws, (int)plane, 0.0f, m->dx + i * in + (size_t)gi * Cg * plane, (int)plane);
                else if (need_dx)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, P, Og, 1.0f, wg, K, dyg, P, 0.0f,
                                direct ? m->dx + i * in + (size_t)gi * Cg * plane : m->ws, P);
            }
        return;
    }
    const int B = ars_conv2d_chunk(g, n, s);
    for (int i0 = 0; i0 < n; i0 += B) {
        const int nb = n - i0 < B ? n - i0 : B, cols = nb * P;
        float *col = m->ws, *res = m->ws + (size_t)K * cols;
        for (int gi = 0; gi < G; gi++) {
            const float *wg = m->w + (size_t)gi * Og * K;
            if (pass == FWD) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Og, cols, K, 1.0f, wg, K, col, cols, 0.0f, res,
                            cols);
                continue;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Og, K, cols, 1.0f, res, cols, col, cols,
                        i0 == 0 ? 0.0f : 1.0f, m->dw + (size_t)gi * Og * K, K);
            if (need_dx)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, cols, Og, 1.0f, wg, K, res, cols, 0.0f, col,
                            cols);
        }
    }
}

static void run_once(const ars_conv_geometry *g, ars_conv_strategy s, int n, int pass, int kind, int need_dx,
                     const buffers *m)
{
    if (kind == RAW) raw_products(g, s, n, pass, need_dx, m);
    else if (pass == FWD) ars_conv2d_forward(g, s, n, m->x, m->w, m->b, m->y, m->ws);
    else ars_conv2d_backward(g, s, n, m->x, m->w, m->dy, m->dw, m->db, need_dx ? m->dx : NULL, m->ws);
}

/* seconds per call, calls repeated for at least min_seconds */
static double time_calls(const ars_conv_geometry *g, ars_conv_strategy s, int n, int pass, int kind, int need_dx,
                         const buffers *m, double min_seconds)
{
    int calls = 0;
    const double t0 = now_seconds();
    double t;
    do {
        run_once(g, s, n, pass, kind, need_dx, m);
        calls++;
    } while ((t = now_seconds() - t0) < min_seconds);
    return t / calls;
}

static int compare_doubles(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), compare_doubles);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void print_machine(void)
{
    char line[256], model[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10)) {
                const char *colon = strchr(line, ':');
                if (colon) {
                    snprintf(model, sizeof model, "%s", colon + 2);
                    model[strcspn(model, "\n")] = '\0';
                }
                break;
            }
        fclose(f);
    }
    printf("cpu: %s\nopenblas: core %s, %d thread(s), %s\n", model, openblas_get_corename(),
           openblas_get_num_threads(), openblas_get_config());
}

int main(int argc, char **argv)
{
    int reps = 5, batch = 128;
    double min_ms = 30;
    const char *only = NULL;   /* shapes whose name contains this */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--min-ms") && i + 1 < argc) min_ms = atof(argv[++i]);
        else if (!strcmp(argv[i], "--wall")) bench_clock = CLOCK_MONOTONIC;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "usage: bench_conv [--reps R] [--batch N] [--min-ms MS] [--wall] [--only TEXT]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 99 || batch < 1) {
        fprintf(stderr, "bench_conv: --reps 1..99, --batch >= 1\n");
        return 2;
    }
    print_machine();
    printf("batch %d, %d rounds (median), >= %.0f ms per measurement, %s time, ARS_CONV_BLOCK_FLOATS %d\n\n",
           batch, reps, min_ms, bench_clock == CLOCK_MONOTONIC ? "wall" : "process CPU", (int)ARS_CONV_BLOCK_FLOATS);
    printf("%-28s %-10s %5s %8s %8s %6s %8s %8s %6s %8s %6s %6s %6s\n", "shape", "strategy", "block", "fwd ms",
           "raw ms", "x raw", "bwd ms", "raw ms", "x raw", "total", "x raw", "xbest", "GF/s");

    double resnet[S + 1] = {0};   /* per strategy, then as ars_conv_plan_choose picks */
    double resnet_raw = 0;        /* the cheaper layout's raw GEMMs per shape */
    for (int si = 0; si < SHAPE_COUNT; si++) {
        const shape *sh = &SHAPES[si];
        if (only && !strstr(sh->name, only)) continue;
        ars_conv_geometry g = {.in_channels = sh->c, .in_h = sh->hw, .in_w = sh->hw, .out_channels = sh->o,
                               .kernel_h = sh->k, .kernel_w = sh->k, .stride_h = sh->stride, .stride_w = sh->stride,
                               .pad_h = sh->pad, .pad_w = sh->pad, .dilation_h = 1, .dilation_w = 1, .groups = 1};
        if (ars_conv_geometry_init(&g)) {
            fprintf(stderr, "bench_conv: %s: %s\n", sh->name, ars_error_message());
            return 1;
        }
        const size_t in = (size_t)batch * ars_conv2d_in_floats(&g), out = (size_t)batch * ars_conv2d_out_floats(&g);
        const size_t wn = ars_conv2d_weight_floats(&g);
        size_t ws = 0;
        for (int s = 0; s < S; s++) {
            const size_t n = ars_conv2d_workspace_floats(&g, batch, (ars_conv_strategy)s);
            if (n > ws) ws = n;
        }
        buffers m = {alloc_floats(in, 1), alloc_floats(wn, 2), alloc_floats((size_t)g.out_channels, 3),
                     alloc_floats(out, 4), alloc_floats(out, 5), alloc_floats(wn, 6),
                     alloc_floats((size_t)g.out_channels, 7), alloc_floats(in, 8), alloc_floats(ws, 9)};
        /* forward, dW and (when needed) dx: 2 O K P flops each per sample */
        const double flops = 2.0 * batch * g.out_channels * (double)(g.in_channels * g.kernel_h * g.kernel_w) *
                             g.out_h * g.out_w * (sh->need_dx ? 3 : 2);

        double t[S][PASSES][KINDS][99];
        for (int s = 0; s < S; s++)   /* warm-up: OpenBLAS buffers, page faults */
            for (int p = 0; p < PASSES; p++) run_once(&g, (ars_conv_strategy)s, batch, p, KERNEL, sh->need_dx, &m);
        for (int r = 0; r < reps; r++)
            for (int s = 0; s < S; s++)
                for (int p = 0; p < PASSES; p++)
                    for (int k = 0; k < KINDS; k++)
                        t[s][p][k][r] = time_calls(&g, (ars_conv_strategy)s, batch, p, k, sh->need_dx, &m, 1e-3 * min_ms);
        double med[S][PASSES][KINDS], total[S], raw_total[S];
        for (int s = 0; s < S; s++) {
            for (int p = 0; p < PASSES; p++)
                for (int k = 0; k < KINDS; k++) med[s][p][k] = median(t[s][p][k], reps);
            /* the total of a round, then the median: fwd and bwd ran side by side */
            double tot[99], raw[99];
            for (int r = 0; r < reps; r++) {
                tot[r] = t[s][FWD][KERNEL][r] + t[s][BWD][KERNEL][r];
                raw[r] = t[s][FWD][RAW][r] + t[s][BWD][RAW][r];
            }
            total[s] = median(tot, reps);
            raw_total[s] = median(raw, reps);
        }
        const double best_raw = raw_total[0] < raw_total[1] ? raw_total[0] : raw_total[1];
        for (int s = 0; s < S; s++)
            printf("%-28s %-10s %5d %8.3f %8.3f %6.2f %8.3f %8.3f %6.2f %8.3f %6.2f %6.2f %6.1f\n", s ? "" : sh->name,
                   ars_conv_strategy_name((ars_conv_strategy)s), ars_conv2d_chunk(&g, batch, (ars_conv_strategy)s),
                   1e3 * med[s][FWD][KERNEL], 1e3 * med[s][FWD][RAW], med[s][FWD][KERNEL] / med[s][FWD][RAW],
                   1e3 * med[s][BWD][KERNEL], 1e3 * med[s][BWD][RAW], med[s][BWD][KERNEL] / med[s][BWD][RAW],
                   1e3 * total[s], total[s] / raw_total[s], total[s] / best_raw, 1e-9 * flops / total[s]);
        ars_conv_strategy pick;
        double pick_seconds[S];
        const double t0 = now_seconds();
        if (ars_conv_plan_choose(&g, batch, &pick, pick_seconds)) {
            fprintf(stderr, "bench_conv: %s\n", ars_error_message());
            return 1;
        }
        const double took = now_seconds() - t0;
        const int faster = total[1] < total[0];
        printf("%-28s faster at batch %d: %s (%.2fx); ars_conv_plan_choose: %s in %.1f ms\n", "",
               batch, ars_conv_strategy_name((ars_conv_strategy)faster), total[1 - faster] / total[faster],
               ars_conv_strategy_name(pick), 1e3 * took);
        for (int s = 0; s < S; s++) resnet[s] += sh->resnet20 * total[s];
        resnet[S] += sh->resnet20 * total[pick];
        resnet_raw += sh->resnet20 * best_raw;
        free(m.x), free(m.w), free(m.b), free(m.y), free(m.dy), free(m.dw), free(m.db), free(m.dx), free(m.ws);
    }
    if (resnet_raw > 0)
        printf("\nResNet-20 convolutions of one step (forward + backward, batch %d): per_sample %.1f ms, batched %.1f ms, "
               "as ars_conv_plan_choose picks %.1f ms = %.2fx the raw sgemm time of the same products (%.1f ms)\n",
               batch, 1e3 * resnet[0], 1e3 * resnet[1], 1e3 * resnet[S], resnet[S] / resnet_raw, 1e3 * resnet_raw);
    return 0;
}
