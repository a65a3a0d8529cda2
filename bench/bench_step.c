/* bench_step: times full arsenal training steps (forward, loss, backward,
 * gradient sync hook, global-norm clip, optimizer: the calls of train_step
 * in src/train.c) on random data of Fashion-MNIST shape, against the same
 * matrix products done by raw cblas_sgemm (the "GEMM roofline": step time /
 * sum of raw GEMM times), and reports peak RSS against the analytic minimum.
 * --products adds, per dense or convolution product, its time inside the
 * step and raw sgemm GFLOP/s in the library's transposition and the
 * alternatives.
 * Output: one JSON line per measurement on stdout (see bench/README.md). */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "arsenal/clip.h"
#include "arsenal/config.h"
#include "arsenal/error.h"
#include "arsenal/init.h"
#include "arsenal/loss.h"
#include "arsenal/model.h"
#include "arsenal/optim.h"
#include "arsenal/rng.h"
#include "arsenal/train.h"
#include "../src/gemm.h"
#include "../src/gemm_bf16.h"
#include "../src/layers/conv_kernels.h"

enum { POOL = 8 };   /* distinct random batches, used round-robin */

typedef struct workload {
    char name[64];
    ars_layer_spec *specs;
    int count, capacity;
    int batch, in_dim;
    ars_shape input;   /* per sample: [784] or the image [1, 28, 28] (in_dim floats either way) */
    ars_optim_config optim;
    float clip_norm;
    ars_loss_kind loss;
} workload;

typedef struct options {
    const char *workload, *config;
    int steps, warmup, reps, threads, products, rounds, batch, in_dim, layers;
    int gemm_tuning;      /* 1: the products in their measured layouts (src/gemm.h), 0: as asked */
    double gemm_budget;   /* seconds per raw-GEMM sample */
    const char *precision;   /* of the step's products ([run] precision); the raw GEMMs stay fp32 */
} options;

/* One matrix product C[m,n] = op(A) op(B) as a layer calls it. */
typedef struct product {
    const char *role;     /* forward | grad_weight | grad_input */
    int m, n, k;
    int ta, tb;           /* 1 = Trans */
    float beta;
    int layer;            /* index of the first layer that makes it */
    int uses;             /* how many times one step makes it */
    double raw_seconds;   /* median raw sgemm time, this rep */
} product;

/* count calls of product `product` made by layer `layer` in pass slot
 * `slot` (0 forward, 1 grad_weight, 2 grad_input) of one step: a dense
 * layer makes one call per slot, a convolution one per sample (per_sample)
 * or per block of samples (batched), in up to two shapes or betas. */
typedef struct layer_call {
    int layer, slot, product, count;
} layer_call;

typedef struct bench {
    workload w;
    ars_model model;
    ars_optimizer opt;
    float *x[POOL], *dlogits, *targets[POOL];
    int32_t *labels[POOL];
    uint32_t *ids;
    uint64_t step;
    product *products;
    int product_count;
    int (*layer_products)[3];        /* per layer: its first forward, grad_weight, grad_input product or -1 */
    layer_call *calls;
    int call_count;
    double *layer_fwd, *layer_bwd;   /* per-layer accumulated seconds (profile) */
    double layer_mark;               /* profile: when the last layer's backward ended */
    double phase[5];                 /* forward, loss, backward+sync, norm+clip, optimizer */
    ars_gemm_choice *recorded;       /* the products one step made through ars_gemm, in their layouts */
    int *recorded_calls, recorded_count;
} bench;

/* "arsenal", or "arsenal-fixed" with --gemm-tuning off (every product as asked). */
static const char *impl_name = "arsenal";

/* The clock of the GEMM-roofline and profile timings: process CPU time at
 * 1 BLAS thread (all work is on the calling thread, and time spent
 * descheduled on a busy shared machine does not count), wall time at more
 * threads (CPU time would count the workers' spinning). */
static clockid_t timing_clock = CLOCK_MONOTONIC;

static double clock_seconds(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double now(void) { return clock_seconds(timing_clock); }

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double current_rss_mb(void)
{
    long pages_total = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return NAN;
    int ok = fscanf(f, "%ld %ld", &pages_total, &resident) == 2;
    fclose(f);
    return ok ? (double)resident * (double)sysconf(_SC_PAGE_SIZE) / 1048576.0 : NAN;
}

static double peak_rss_mb(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_maxrss / 1024.0;   /* Linux: kilobytes */
}

static float *alloc_floats(size_t n)
{
    void *p = NULL;
    size_t bytes = ((n ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, bytes)) return NULL;
    memset(p, 0, bytes);
    return p;
}

/* ---- workloads ---------------------------------------------------------- */

static int push(workload *w, const char *kind, int units, const char *init)
{
    if (w->count == w->capacity) {
        int grown = w->capacity ? 2 * w->capacity : 64;
        ars_layer_spec *p = realloc(w->specs, sizeof *p * (size_t)grown);
        if (!p) return ars_error(ARS_ENOMEM, "out of memory");
        w->specs = p;
        w->capacity = grown;
    }
    ars_layer_spec *s = &w->specs[w->count++];
    ars_layer_spec_defaults(s, kind);
    s->units = units;
    if (init) strncpy(s->init, init, sizeof s->init - 1);
    return 0;
}

/* conv2d of kernel x kernel, "same" padding for an odd kernel, no bias (a
 * BatchNorm2d follows it in W5 and W6), He init with init_mode. */
static int push_conv(workload *w, int channels, int kernel, int stride, const char *init_mode)
{
    if (push(w, "conv2d", 0, "he_normal")) return ARS_ENOMEM;
    ars_layer_spec *s = &w->specs[w->count - 1];
    s->channels = channels;
    s->kernel[0] = s->kernel[1] = kernel;
    s->stride[0] = s->stride[1] = stride;
    s->padding[0] = s->padding[1] = kernel / 2;
    s->bias = 0;
    strncpy(s->init_mode, init_mode, sizeof s->init_mode - 1);
    return 0;
}

/* What a run file's [basic_block] expands into (src/layers/basic_block.c):
 * residual, conv2d 3x3 (stride), batchnorm2d, relu, conv2d 3x3,
 * batchnorm2d, residual_add (a 1x1 stride projection + BatchNorm2d where
 * the shape changes), relu; He init with fan_out, as torchvision. */
static int push_basic_block(workload *w, int channels, int stride)
{
    if (push(w, "residual", 0, NULL) || push_conv(w, channels, 3, stride, "fan_out") ||
        push(w, "batchnorm2d", 0, NULL) || push(w, "relu", 0, NULL) || push_conv(w, channels, 3, 1, "fan_out") ||
        push(w, "batchnorm2d", 0, NULL) || push(w, "residual_add", 0, "he_normal"))
        return ARS_ENOMEM;
    strcpy(w->specs[w->count - 1].init_mode, "fan_out");
    return push(w, "relu", 0, NULL);
}

/* x + Linear(ReLU(BatchNorm(x))), `blocks` times, at width `width`. */
static int push_residual_blocks(workload *w, int blocks, int width)
{
    for (int b = 0; b < blocks; b++) {
        if (push(w, "residual", 0, NULL) || push(w, "batchnorm", 0, NULL) || push(w, "relu", 0, NULL) ||
            push(w, "dense", width, "he_normal") || push(w, "residual_add", 0, NULL))
            return ARS_ENOMEM;
    }
    return 0;
}

static int build_workload(workload *w, const char *name)
{
    memset(w, 0, sizeof *w);
    snprintf(w->name, sizeof w->name, "%s", name);
    w->in_dim = 784;
    w->input = ars_shape_vector(784);
    w->loss = ARS_LOSS_CROSS_ENTROPY;
    ars_optim_config_defaults(&w->optim, ARS_OPT_ADAM);
    w->clip_norm = 1.0f;
    int rc = 0;
    if (strcmp(name, "W1") == 0) {   /* MLP 784-1024-1024-10, ReLU, Adam, clip 1 */
        w->batch = 128;
        rc = push(w, "dense", 1024, "he_normal") || push(w, "relu", 0, NULL) ||
             push(w, "dense", 1024, "he_normal") || push(w, "relu", 0, NULL) ||
             push(w, "dense", 10, "xavier_uniform");
    } else if (strcmp(name, "W2") == 0 || strcmp(name, "W3") == 0) {
        int width = name[1] == '2' ? 256 : 64, blocks = name[1] == '2' ? 48 : 1000;
        w->batch = name[1] == '2' ? 64 : 32;
        rc = push(w, "dense", width, "he_normal") || push_residual_blocks(w, blocks, width) ||
             push(w, "dense", 10, "xavier_uniform");
    } else if (strcmp(name, "W4") == 0) {   /* 784-256x20-10 sigmoid, plain SGD */
        w->batch = 128;
        ars_optim_config_defaults(&w->optim, ARS_OPT_SGD);
        w->optim.lr = 0.1f;
        w->clip_norm = 0;
        for (int i = 0; i < 20 && !rc; i++) rc = push(w, "dense", 256, NULL) || push(w, "sigmoid", 0, NULL);
        if (!rc) rc = push(w, "dense", 10, NULL);
    } else if (strcmp(name, "W5") == 0) {
        /* ResNet-20: examples/resnet-fmnist.cfg's layers (stem conv3x3 16 +
         * BN + ReLU, 3 stages of 3 basic blocks at 16/32/64 channels, stride
         * 2 where stages 2 and 3 start, global average pool, 64-10), with
         * Adam and clip 1.0 instead of its SGD */
        w->batch = 128;
        w->input = ars_shape_image(1, 28, 28);
        rc = push_conv(w, 16, 3, 1, "fan_out") || push(w, "batchnorm2d", 0, NULL) || push(w, "relu", 0, NULL);
        static const int stage_channels[3] = {16, 32, 64};
        for (int stage = 0; stage < 3 && !rc; stage++)
            for (int block = 0; block < 3 && !rc; block++)
                rc = push_basic_block(w, stage_channels[stage], stage > 0 && block == 0 ? 2 : 1);
        if (!rc) rc = push(w, "global_avgpool", 0, NULL) || push(w, "dense", 10, NULL);
    } else if (strcmp(name, "W6") == 0) {
        /* the small CNN of examples/cnn-fmnist.cfg: 3 x (conv3x3 + BN + ReLU +
         * maxpool 2) at 32/64/128 channels, flatten, 1152-256 without bias,
         * BatchNorm, ReLU, dropout 0.3, 256-10; Adam and clip 1.0 instead of
         * its clip 5 and lr 2e-3 (the speed is the same) */
        w->batch = 128;
        w->input = ars_shape_image(1, 28, 28);
        static const int stage_channels[3] = {32, 64, 128};
        for (int stage = 0; stage < 3 && !rc; stage++) {
            rc = push_conv(w, stage_channels[stage], 3, 1, "fan_in") || push(w, "batchnorm2d", 0, NULL) ||
                 push(w, "relu", 0, NULL) || push(w, "maxpool2d", 0, NULL);
            if (!rc) w->specs[w->count - 1].kernel[0] = w->specs[w->count - 1].kernel[1] = 2;
        }
        if (!rc) rc = push(w, "flatten", 0, NULL) || push(w, "dense", 256, "he_normal");
        if (!rc) {
            w->specs[w->count - 1].bias = 0;
            rc = push(w, "batchnorm", 0, NULL) || push(w, "relu", 0, NULL) || push(w, "dropout", 0, NULL);
        }
        if (!rc) {
            w->specs[w->count - 1].rate = 0.3f;
            rc = push(w, "dense", 10, NULL);
        }
    } else {
        return ars_error(ARS_EINVAL, "unknown workload '%s' (W1 ... W6, or --config FILE)", name);
    }
    return rc ? ars_error(ARS_ENOMEM, "out of memory building %s", name) : 0;
}

static int load_workload(workload *w, const char *path)
{
    memset(w, 0, sizeof *w);
    const char *base = strrchr(path, '/');
    snprintf(w->name, sizeof w->name, "%s", base ? base + 1 : path);
    ars_config config;
    ars_run_config run;
    int rc = ars_config_load_file(&config, path);
    if (!rc) rc = ars_config_expand(&config);
    if (!rc) rc = ars_run_config_load(&config, &run, &w->specs, &w->count);
    ars_config_free(&config);
    if (rc) return rc;
    w->capacity = w->count;
    w->batch = run.batch;
    w->in_dim = 784;
    /* as the trainer gives the model a Fashion-MNIST sample ([dense] reads it flat) */
    w->input = ars_shape_image(1, 28, 28);
    w->optim = run.optim;
    w->clip_norm = run.clip_norm;
    w->loss = run.loss;
    return 0;
}

/* ---- the step ----------------------------------------------------------- */

static int bench_setup(bench *b)
{
    const workload *w = &b->w;
    TRY(ars_model_create(&b->model, w->specs, w->count, w->input, w->batch));
    TRY(ars_init_model(&b->model, 1));
    TRY(ars_optimizer_create(&b->opt, &w->optim, b->model.param_count));
    b->dlogits = alloc_floats((size_t)w->batch * (size_t)b->model.out_dim);
    b->layer_fwd = calloc((size_t)b->model.layer_count, sizeof(double));
    b->layer_bwd = calloc((size_t)b->model.layer_count, sizeof(double));
    if (!b->dlogits || !b->layer_fwd || !b->layer_bwd) return ars_error(ARS_ENOMEM, "out of memory");
    return 0;
}

static int data_setup(bench *b, int out_dim)
{
    const workload *w = &b->w;
    const size_t rows = (size_t)w->batch;
    b->ids = malloc(sizeof(uint32_t) * rows);
    if (!b->ids) return ars_error(ARS_ENOMEM, "out of memory");
    for (size_t r = 0; r < rows; r++) b->ids[r] = (uint32_t)r;
    for (int p = 0; p < POOL; p++) {
        b->x[p] = alloc_floats(rows * (size_t)w->in_dim);
        b->labels[p] = malloc(sizeof(int32_t) * rows);
        b->targets[p] = alloc_floats(rows * (size_t)out_dim);
        if (!b->x[p] || !b->labels[p] || !b->targets[p]) return ars_error(ARS_ENOMEM, "out of memory");
        ars_rng_normal(b->x[p], rows * (size_t)w->in_dim, 0, 1, 7, ars_stream(ARS_STREAM_DATA, (uint32_t)p), 0);
        ars_rng_normal(b->targets[p], rows * (size_t)out_dim, 0, 1, 8, ars_stream(ARS_STREAM_DATA, (uint32_t)p), 0);
        uint32_t word[4];
        for (size_t r = 0; r < rows; r++) {
            ars_philox(9, ars_stream(ARS_STREAM_DATA, (uint32_t)p), r, word);
            b->labels[p][r] = (int32_t)(word[0] % (uint32_t)out_dim);
        }
    }
    return 0;
}

/* Backward hook of a profiled step (no dist: nothing to sync). */
static int time_layer_backward(void *context, const ars_layer *layer)
{
    bench *b = context;
    const double t = now();
    b->layer_bwd[layer->index] += t - b->layer_mark;
    b->layer_mark = t;
    return 0;
}

/* The body of train_step (src/train.c) without the trainer around it.
 * profile: time each layer's forward (the layer calls ars_model_forward
 * makes, without its prefetching) and backward (ars_model_backward itself,
 * timed from its hook), and the step's phases. */
static int train_step(bench *b, int profile)
{
    const workload *w = &b->w;
    ars_model *m = &b->model;
    const int p = (int)(b->step % POOL);
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = w->batch, .global_rows = w->batch, .sample_ids = b->ids,
                     .seed = 1, .step = b->step, .dist = NULL, .probe = 0};
    ars_dist *dist = NULL;
    double t0 = profile ? now() : 0, t1 = 0;
    if (!profile) {
        TRY(ars_model_forward(m, &pass, b->x[p]));
    } else {
        m->input = b->x[p];
        ars_gemm_weights(m->params, m->param_count);   /* as ars_model_forward: a new pass, new weights */
        const float *in = b->x[p];
        for (int i = 0; i < m->layer_count; i++) {
            ars_layer *layer = &m->layers[i];
            double s = now();
            TRY(layer->ops->forward(layer, &pass, in, layer->output));
            b->layer_fwd[i] += now() - s;
            in = layer->output;
        }
        t1 = now();
        b->phase[0] += t1 - t0;
        t0 = t1;
    }
    double loss_sum = 0;
    TRY(ars_loss_compute(w->loss, ars_model_output(m), w->batch, m->out_dim, b->labels[p], b->targets[p],
                         w->batch, &loss_sum, b->dlogits));
    TRY(ars_dist_start_side_sum(dist, &loss_sum, 1));
    if (profile) {
        t1 = now();
        b->phase[1] += t1 - t0;
        t0 = t1;
    }
    if (!profile) {
        TRY(ars_model_backward(m, &pass, b->dlogits, ars_dist_backward_hook, dist));
    } else {
        /* the library's own backward; a layer's time runs from the previous
         * layer's hook to its own (its gradient's sum of squares included) */
        b->layer_mark = now();
        TRY(ars_model_backward(m, &pass, b->dlogits, time_layer_backward, b));
    }
    TRY(ars_dist_finish_gradients(dist));   /* the loss sum was started before backward */
    if (profile) {
        t1 = now();
        b->phase[2] += t1 - t0;
        t0 = t1;
    }
    const size_t n = m->param_count;
    double norm = sqrt(ars_dist_grad_sum_squares(dist, m));   /* as train_step */
    double loss = loss_sum / w->batch;
    float lr = w->optim.lr;
    if (isfinite(norm) && isfinite(loss)) {
        /* as train_step on a step without probes: the clip scale goes into the optimizer's pass */
        float scale = w->clip_norm > 0 ? ars_clip_scale_for_norm(norm, w->clip_norm) : 1.0f;
        if (profile) {
            t1 = now();
            b->phase[3] += t1 - t0;
            t0 = t1;
        }
        ars_optimizer_step_scaled(&b->opt, m->params, m->grads, scale, lr);
        if (profile) b->phase[4] += now() - t0;
    }
    b->step++;
    return 0;
}

/* ---- raw GEMM ------------------------------------------------------------ */

typedef struct gemm_buffers {
    float *a, *b, *c;
    size_t size;   /* floats in each */
} gemm_buffers;

static int buffers_fit(gemm_buffers *g, size_t need)
{
    if (need <= g->size) return 0;
    free(g->a);
    free(g->b);
    free(g->c);
    g->a = alloc_floats(need);
    g->b = alloc_floats(need);
    g->c = alloc_floats(need);
    g->size = need;
    if (!g->a || !g->b || !g->c) return ars_error(ARS_ENOMEM, "out of memory for GEMM buffers");
    ars_rng_uniform(g->a, need, -1, 1, 3, 1, 0);
    ars_rng_uniform(g->b, need, -1, 1, 3, 2, 0);
    return 0;
}

/* C[m,n] = op(A) op(B), row-major, operands laid out as the transposition
 * flags say (A is [m,k] or [k,m]; B is [k,n] or [n,k]). */
static void run_gemm(const gemm_buffers *g, int m, int n, int k, int ta, int tb, float beta)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0f,
                g->a, ta ? m : k, g->b, tb ? k : n, beta, g->c, n);
}

/* Seconds per call: the calls are batched so one sample lasts about
 * `budget`; the median of `samples` samples. */
static double time_gemm(const gemm_buffers *g, int m, int n, int k, int ta, int tb, float beta, double budget,
                        int samples)
{
    run_gemm(g, m, n, k, ta, tb, beta);
    double s = now();
    run_gemm(g, m, n, k, ta, tb, beta);
    double once = fmax(now() - s, 1e-7);
    int iters = (int)fmin(fmax(budget / once, 1), 100000);
    double t[16];
    if (samples > 16) samples = 16;
    for (int j = 0; j < samples; j++) {
        s = now();
        for (int i = 0; i < iters; i++) run_gemm(g, m, n, k, ta, tb, beta);
        t[j] = (now() - s) / iters;
    }
    return median(t, samples);
}

static double gflops(int m, int n, int k, double seconds) { return 2.0 * m * n * k / seconds * 1e-9; }

/* count calls of C[m,n] = op(A) op(B) by layer `layer` in pass slot `slot`. */
static int add_product(bench *b, int slot, int m, int n, int k, int ta, int tb, float beta, int layer, int count)
{
    static const char *const roles[3] = {"forward", "grad_weight", "grad_input"};
    const char *role = roles[slot];
    int index = -1;
    for (int i = 0; i < b->product_count && index < 0; i++) {
        product *p = &b->products[i];
        if (p->m == m && p->n == n && p->k == k && p->ta == ta && p->tb == tb && p->beta == beta &&
            strcmp(p->role, role) == 0)
            index = i;
    }
    if (index < 0) {
        product *grown = realloc(b->products, sizeof *grown * (size_t)(b->product_count + 1));
        if (!grown) return ars_error(ARS_ENOMEM, "out of memory");
        b->products = grown;
        b->products[b->product_count] = (product){.role = role, .m = m, .n = n, .k = k, .ta = ta, .tb = tb,
                                                  .beta = beta, .layer = layer, .uses = 0};
        index = b->product_count++;
    }
    b->products[index].uses += count;
    if (b->layer_products[layer][slot] < 0) b->layer_products[layer][slot] = index;
    layer_call *calls = realloc(b->calls, sizeof *calls * (size_t)(b->call_count + 1));
    if (!calls) return ars_error(ARS_ENOMEM, "out of memory");
    b->calls = calls;
    b->calls[b->call_count++] = (layer_call){.layer = layer, .slot = slot, .product = index, .count = count};
    return 0;
}

/* The sgemm calls of one convolution on `rows` samples as conv_kernels.c
 * makes them (per group; per_sample: one per sample, the first sample's
 * weight-gradient product with beta 0, the others accumulating; batched:
 * one per block of ars_conv2d_chunk samples, the last block maybe smaller;
 * per_sample's dx product is W_t col(dy) where conv_kernels.c computes dx
 * as a convolution, W^T dY otherwise).
 * bias: the forward product accumulates onto the preloaded bias
 * (per_sample). need_dx: 0 for the first layer. */
static int add_conv_products(bench *b, const ars_conv_geometry *g, ars_conv_strategy strategy, int rows, int bias,
                             int need_dx, int layer)
{
    const int G = g->groups, Og = g->out_channels / G;
    const int K = g->in_channels / G * g->kernel_h * g->kernel_w, P = g->out_h * g->out_w;
    if (strategy == ARS_CONV_PER_SAMPLE) {
        TRY(add_product(b, 0, Og, P, K, 0, 0, bias ? 1.0f : 0.0f, layer, rows * G));
        TRY(add_product(b, 1, Og, K, P, 0, 1, 0.0f, layer, G));
        if (rows > 1) TRY(add_product(b, 1, Og, K, P, 0, 1, 1.0f, layer, (rows - 1) * G));
        if (need_dx && ars_conv2d_dx_as_convolution(g))   /* dx = W_t col(dy), of the input's size */
            TRY(add_product(b, 2, g->in_channels / G, g->in_h * g->in_w, Og * g->kernel_h * g->kernel_w, 0, 0, 0.0f,
                            layer, rows * G));
        else if (need_dx)
            TRY(add_product(b, 2, K, P, Og, 1, 0, 0.0f, layer, rows * G));
        return 0;
    }
    const int B = ars_conv2d_chunk(g, rows, ARS_CONV_BATCHED), full = rows / B, rest = rows % B;
    for (int part = 0; part < 2; part++) {
        const int blocks = part == 0 ? full : (rest ? 1 : 0), cols = (part == 0 ? B : rest) * P;
        if (!blocks) continue;
        TRY(add_product(b, 0, Og, cols, K, 0, 0, 0.0f, layer, blocks * G));
        if (part == 0) {
            TRY(add_product(b, 1, Og, K, cols, 0, 1, 0.0f, layer, G));
            if (blocks > 1) TRY(add_product(b, 1, Og, K, cols, 0, 1, 1.0f, layer, (blocks - 1) * G));
        } else {
            TRY(add_product(b, 1, Og, K, cols, 0, 1, 1.0f, layer, G));
        }
        if (need_dx) TRY(add_product(b, 2, K, cols, Og, 1, 0, 0.0f, layer, blocks * G));
    }
    return 0;
}

/* A conv2d layer, or a residual_add whose shortcut is a 1x1 convolution. */
static int is_conv_layer(const ars_layer *l)
{
    return strcmp(l->ops->kind, "conv2d") == 0 ||
           (strcmp(l->ops->kind, "residual_add") == 0 && l->param_count > 0 && l->out_shape.rank == 3);
}

/* A layer's convolution geometry: a conv2d's from its spec and input; an
 * image residual_add's projection (src/layers/residual.c: 1x1, the stride
 * that maps the block's input size onto its output size, no bias). */
static int conv_geometry_of(const ars_layer *l, ars_conv_geometry *g)
{
    if (strcmp(l->ops->kind, "conv2d") == 0) {
        const ars_layer_spec *s = &l->spec;
        *g = (ars_conv_geometry){.in_channels = l->in_shape.dims[0], .in_h = l->in_shape.dims[1],
                                 .in_w = l->in_shape.dims[2], .out_channels = s->channels, .kernel_h = s->kernel[0],
                                 .kernel_w = s->kernel[1], .stride_h = s->stride[0], .stride_w = s->stride[1],
                                 .pad_h = s->padding[0], .pad_w = s->padding[1], .dilation_h = s->dilation[0],
                                 .dilation_w = s->dilation[1], .groups = s->groups};
        return ars_conv_geometry_init(g);
    }
    const ars_shape *skip = &l->partner->out_shape, *out = &l->out_shape;
    int stride = 0;
    for (int st = 1; st <= skip->dims[1] && !stride; st++)
        if ((skip->dims[1] - 1) / st + 1 == out->dims[1] && (skip->dims[2] - 1) / st + 1 == out->dims[2]) stride = st;
    *g = (ars_conv_geometry){.in_channels = skip->dims[0], .in_h = skip->dims[1], .in_w = skip->dims[2],
                             .out_channels = out->dims[0], .kernel_h = 1, .kernel_w = 1, .stride_h = stride,
                             .stride_w = stride, .dilation_h = 1, .dilation_w = 1, .groups = 1};
    return ars_conv_geometry_init(g);
}

/* The sgemm calls one step makes: dense.c, conv_kernels.c (conv2d layers
 * in the layout each chose, layer->tuning) and residual.c's projections
 * (a dense product for vectors, a 1x1 convolution for images), with the
 * shapes and transpositions they pass. */
static int list_products(bench *b)
{
    const int rows = b->w.batch;
    b->layer_products = malloc(sizeof *b->layer_products * (size_t)b->model.layer_count);
    if (!b->layer_products) return ars_error(ARS_ENOMEM, "out of memory");
    for (int i = 0; i < b->model.layer_count; i++) {
        const ars_layer *l = &b->model.layers[i];
        b->layer_products[i][0] = b->layer_products[i][1] = b->layer_products[i][2] = -1;
        int in = l->in_dim, out = l->out_dim;
        const int is_add = strcmp(l->ops->kind, "residual_add") == 0;
        if (is_conv_layer(l)) {
            ars_conv_geometry g;
            TRY(conv_geometry_of(l, &g));
            const ars_conv_strategy strategy = l->tuning == ARS_CONV_BATCHED + 1 ? ARS_CONV_BATCHED : ARS_CONV_PER_SAMPLE;
            TRY(add_conv_products(b, &g, strategy, rows, !is_add && l->spec.bias, is_add || i > 0, i));
            continue;
        }
        if (is_add) {
            if (l->param_count == 0) continue;
            in = l->partner->in_dim;
        } else if (strcmp(l->ops->kind, "dense") != 0) {
            continue;
        }
        int bias = strcmp(l->ops->kind, "dense") == 0 ? l->spec.bias : 1;
        TRY(add_product(b, 0, rows, out, in, 0, 1, bias ? 1.0f : 0.0f, i, 1));
        TRY(add_product(b, 1, out, in, rows, 1, 0, 0.0f, i, 1));
        if (i > 0 || is_add) TRY(add_product(b, 2, rows, in, out, 0, 0, 0.0f, i, 1));
    }
    return 0;
}

static double square_gflops(gemm_buffers *g, int size, double budget);

/* Raw time of every product of one step, in the library's transposition.
 * peaks (may be NULL): the square-GEMM rate measured just before each
 * product, so a busy moment on a shared machine hits both alike. */
static int time_products(bench *b, gemm_buffers *g, double budget, double *total, double *peaks)
{
    *total = 0;
    for (int i = 0; i < b->product_count; i++) {
        product *p = &b->products[i];
        if (peaks) peaks[i] = square_gflops(g, 1024, budget);
        size_t need = (size_t)p->m * (size_t)p->k;
        if ((size_t)p->k * (size_t)p->n > need) need = (size_t)p->k * (size_t)p->n;
        if ((size_t)p->m * (size_t)p->n > need) need = (size_t)p->m * (size_t)p->n;
        TRY(buffers_fit(g, need));
        p->raw_seconds = time_gemm(g, p->m, p->n, p->k, p->ta, p->tb, p->beta, budget, 3);
        *total += p->raw_seconds * p->uses;
    }
    return 0;
}

/* Raw time of the products one step made through ars_gemm (recorded, so
 * the baseline is exactly the step's calls, leading dimensions included),
 * each in the layout the step ran it in: the copies of a layout that
 * copies count, so the baseline is the fastest way to make these products
 * that arsenal knows, the strict comparison. */
static int time_recorded(bench *b, gemm_buffers *g, double budget, double *total)
{
    *total = 0;
    for (int i = 0; i < b->recorded_count; i++) {
        const ars_gemm_choice *c = &b->recorded[i];
        size_t need = (size_t)(c->trans_a ? c->k : c->m) * (size_t)c->lda;
        size_t nb = (size_t)(c->trans_b ? c->n : c->k) * (size_t)c->ldb, nc = (size_t)c->m * (size_t)c->ldc;
        if (nb > need) need = nb;
        if (nc > need) need = nc;
        TRY(buffers_fit(g, need));
        const int layout = ars_gemm_enabled() ? c->layout : ARS_GEMM_AS_ASKED;
        const float beta = c->beta_zero ? 0.0f : 1.0f;
        ars_gemm_in_layout(layout, c->trans_a, c->trans_b, c->m, c->n, c->k, 1.0f, g->a, c->lda, g->b, c->ldb, beta,
                           g->c, c->ldc);
        double s = now();
        ars_gemm_in_layout(layout, c->trans_a, c->trans_b, c->m, c->n, c->k, 1.0f, g->a, c->lda, g->b, c->ldb, beta,
                           g->c, c->ldc);
        double once = fmax(now() - s, 1e-7);
        int iters = (int)fmin(fmax(budget / once, 1), 100000);
        double t[3];
        for (int j = 0; j < 3; j++) {
            s = now();
            for (int r = 0; r < iters; r++)
                ars_gemm_in_layout(layout, c->trans_a, c->trans_b, c->m, c->n, c->k, 1.0f, g->a, c->lda, g->b, c->ldb,
                                   beta, g->c, c->ldc);
            t[j] = (now() - s) / iters;
        }
        *total += median(t, 3) * b->recorded_calls[i];
    }
    return 0;
}

/* ---- output -------------------------------------------------------------- */

static void json_head(const char *kind, const bench *b, int threads)
{
    printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"workload\":\"%s\",\"threads\":%d,\"batch\":%d", kind,
           impl_name, b->w.name, threads, b->w.batch);
    if (ars_gemm_precision() != ARS_PRECISION_FP32)
        printf(",\"precision\":\"%s\"", ars_precision_name(ars_gemm_precision()));
}

static const char *trans_name(int ta, int tb)
{
    static const char *const names[4] = {"NN", "NT", "TN", "TT"};
    return names[ta * 2 + tb];
}

/* Per product shape: the 4 transpositions of C = op(A) op(B) and the 4 of
 * the transposed form C^T = op(B^T) op(A^T), interleaved in rounds; each
 * variant's speed relative to the library's is the median of per-round
 * ratios, so a busy moment on a shared machine hits all variants alike. */
static int report_product_variants(bench *b, gemm_buffers *g, int threads, double budget, int rounds,
                                   double peak)
{
    double *t = malloc(sizeof(double) * 8 * (size_t)rounds), *ratio = malloc(sizeof(double) * (size_t)rounds);
    if (!t || !ratio) {
        free(t);
        free(ratio);
        return ars_error(ARS_ENOMEM, "out of memory");
    }
    for (int i = 0; i < b->product_count; i++) {
        const product *p = &b->products[i];
        size_t need = (size_t)p->m * (size_t)p->k;
        if ((size_t)p->k * (size_t)p->n > need) need = (size_t)p->k * (size_t)p->n;
        if ((size_t)p->m * (size_t)p->n > need) need = (size_t)p->m * (size_t)p->n;
        if (buffers_fit(g, need)) break;
        for (int r = 0; r < rounds; r++)
            for (int v = 0; v < 8; v++) {
                int swap = v >= 4, ta = (v >> 1) & 1, tb = v & 1;
                t[v * rounds + r] = swap ? time_gemm(g, p->n, p->m, p->k, ta, tb, p->beta, budget, 1)
                                         : time_gemm(g, p->m, p->n, p->k, ta, tb, p->beta, budget, 1);
            }
        const int library = p->ta * 2 + p->tb;
        for (int v = 0; v < 8; v++) {
            for (int r = 0; r < rounds; r++) ratio[r] = t[v * rounds + r] / t[library * rounds + r];
            double vs = median(ratio, rounds);
            double s = median(t + v * rounds, rounds);
            json_head("gemm_variant", b, threads);
            printf(",\"role\":\"%s\",\"layer\":\"%s\",\"uses\":%d,\"m\":%d,\"n\":%d,\"k\":%d,"
                   "\"variant\":\"%s%s\",\"library\":%s,\"ms\":%.6f,\"gflops\":%.3f,\"of_peak\":%.4f,"
                   "\"time_vs_library\":%.4f}\n",
                   p->role, b->model.layers[p->layer].name, p->uses, p->m, p->n, p->k, v >= 4 ? "T:" : "",
                   trans_name((v >> 1) & 1, v & 1), v == library ? "true" : "false", s * 1e3,
                   gflops(p->m, p->n, p->k, s), gflops(p->m, p->n, p->k, s) / peak, vs);
        }
        fflush(stdout);
    }
    free(t);
    free(ratio);
    return 0;
}

static double square_gflops(gemm_buffers *g, int size, double budget)
{
    if (buffers_fit(g, (size_t)size * (size_t)size)) return NAN;
    return gflops(size, size, size, time_gemm(g, size, size, size, 0, 0, 0.0f, budget, 1));
}

/* Raw seconds (raw: one round's time per product) and flops of layer
 * `layer`'s products in pass slots [from, to] over one step. */
static double layer_raw(const bench *b, const double *raw, int layer, int from, int to)
{
    double s = 0;
    for (int i = 0; i < b->call_count; i++) {
        const layer_call *c = &b->calls[i];
        if (c->layer == layer && c->slot >= from && c->slot <= to) s += c->count * raw[c->product];
    }
    return s;
}

static double layer_flops(const bench *b, int layer, int from, int to)
{
    double s = 0;
    for (int i = 0; i < b->call_count; i++) {
        const layer_call *c = &b->calls[i];
        const product *p = &b->products[c->product];
        if (c->layer == layer && c->slot >= from && c->slot <= to) s += c->count * 2.0 * p->m * p->n * p->k;
    }
    return s;
}

/* Where the time goes, in `rounds` interleaved rounds of: the square-GEMM
 * rate, `steps` profiled steps (per layer, per phase), the raw products.
 * Reports medians; ratios are medians of per-round ratios. */
static int report_profile(bench *b, gemm_buffers *g, int threads, int steps, int rounds, double budget,
                          double *peak_out)
{
    const int L = b->model.layer_count, P = b->product_count;
    double *peak = calloc((size_t)rounds, sizeof(double));
    double *ppeak = calloc((size_t)rounds * (P ? P : 1), sizeof(double));   /* square rate next to each product */
    double *fwd = calloc((size_t)rounds * L, sizeof(double)), *bwd = calloc((size_t)rounds * L, sizeof(double));
    double *raw = calloc((size_t)rounds * (P ? P : 1), sizeof(double));
    double *phase = calloc((size_t)rounds * 5, sizeof(double)), *tmp = calloc((size_t)rounds, sizeof(double));
    int rc = !peak || !ppeak || !fwd || !bwd || !raw || !phase || !tmp ? ars_error(ARS_ENOMEM, "out of memory") : 0;
    for (int r = 0; r < rounds && !rc; r++) {
        memset(b->phase, 0, sizeof b->phase);
        memset(b->layer_fwd, 0, sizeof(double) * (size_t)L);
        memset(b->layer_bwd, 0, sizeof(double) * (size_t)L);
        for (int i = 0; i < steps && !rc; i++) rc = train_step(b, 1);
        double total;
        if (!rc) rc = time_products(b, g, budget, &total, ppeak + (size_t)r * P);
        for (int p = 0; p < P; p++) peak[r] += ppeak[r * P + p] / P;   /* the round's square rate */
        for (int l = 0; l < L; l++) {
            fwd[r * L + l] = b->layer_fwd[l] / steps;
            bwd[r * L + l] = b->layer_bwd[l] / steps;
        }
        for (int p = 0; p < P; p++) raw[r * P + p] = b->products[p].raw_seconds;
        for (int i = 0; i < 5; i++) phase[r * 5 + i] = b->phase[i] / steps;
    }
    if (!rc) {
        double peak_gflops;
        for (int r = 0; r < rounds; r++) tmp[r] = peak[r];
        peak_gflops = median(tmp, rounds);
        *peak_out = peak_gflops;
        json_head("square_gemm", b, threads);
        printf(",\"size\":1024,\"gflops\":%.3f}\n", peak_gflops);
        static const char *const names[5] = {"forward", "loss", "backward", "norm_clip", "optimizer"};
        for (int i = 0; i < 5; i++) {
            for (int r = 0; r < rounds; r++) tmp[r] = phase[r * 5 + i];
            json_head("phase", b, threads);
            printf(",\"phase\":\"%s\",\"ms\":%.4f}\n", names[i], median(tmp, rounds) * 1e3);
        }
        for (int p = 0; p < P; p++) {
            const product *pr = &b->products[p];
            for (int r = 0; r < rounds; r++) tmp[r] = raw[r * P + p];
            double s = median(tmp, rounds);
            for (int r = 0; r < rounds; r++) tmp[r] = gflops(pr->m, pr->n, pr->k, raw[r * P + p]) / ppeak[r * P + p];
            json_head("product", b, threads);
            printf(",\"role\":\"%s\",\"layer\":\"%s\",\"uses\":%d,\"m\":%d,\"n\":%d,\"k\":%d,\"trans\":\"%s\","
                   "\"raw_ms\":%.6f,\"gflops\":%.3f,\"of_peak\":%.4f}\n",
                   pr->role, b->model.layers[pr->layer].name, pr->uses, pr->m, pr->n, pr->k,
                   trans_name(pr->ta, pr->tb), s * 1e3, gflops(pr->m, pr->n, pr->k, s), median(tmp, rounds));
        }
        /* Layers alike (kind, widths, products) form one line, times per layer. */
        char *done = calloc((size_t)L, 1);
        double *gf = calloc((size_t)rounds, sizeof(double)), *gb = calloc((size_t)rounds, sizeof(double));
        if (!done || !gf || !gb) rc = ars_error(ARS_ENOMEM, "out of memory");
        for (int l = 0; l < L && !rc; l++) {
            if (done[l]) continue;
            const ars_layer *layer = &b->model.layers[l];
            const int *lp = b->layer_products[l];
            int count = 0;
            memset(gf, 0, sizeof(double) * (size_t)rounds);
            memset(gb, 0, sizeof(double) * (size_t)rounds);
            for (int j = l; j < L; j++) {
                const ars_layer *o = &b->model.layers[j];
                const int *op = b->layer_products[j];
                if (done[j] || strcmp(o->ops->kind, layer->ops->kind) != 0 || o->in_dim != layer->in_dim ||
                    o->out_dim != layer->out_dim || op[0] != lp[0] || op[1] != lp[1] || op[2] != lp[2])
                    continue;
                done[j] = 1;
                count++;
                for (int r = 0; r < rounds; r++) {
                    gf[r] += fwd[r * L + j];
                    gb[r] += bwd[r * L + j];
                }
            }
            for (int r = 0; r < rounds; r++) {
                gf[r] /= count;
                gb[r] /= count;
            }
            for (int r = 0; r < rounds; r++) tmp[r] = gf[r];
            double f = median(tmp, rounds);
            for (int r = 0; r < rounds; r++) tmp[r] = gb[r];
            double bw = median(tmp, rounds);
            json_head("layer", b, threads);
            printf(",\"layer\":\"%s\",\"layers\":%d,\"kind\":\"%s\",\"spec\":\"%s\",\"in\":%d,\"out\":%d,"
                   "\"forward_ms\":%.6f,\"backward_ms\":%.6f",
                   layer->name, count, layer->ops->kind, layer->spec.kind, layer->in_dim, layer->out_dim, f * 1e3,
                   bw * 1e3);
            ars_conv_geometry cg;
            if (is_conv_layer(layer) && conv_geometry_of(layer, &cg) == 0)
                printf(",\"conv\":\"%d->%d %dx%d/%d %dx%d\",\"layout\":\"%s\"", cg.in_channels, cg.out_channels,
                       cg.kernel_h, cg.kernel_w, cg.stride_h, cg.in_h, cg.in_w,
                       ars_conv_strategy_name(layer->tuning == ARS_CONV_BATCHED + 1 ? ARS_CONV_BATCHED
                                                                                  : ARS_CONV_PER_SAMPLE));
            if (lp[0] >= 0) {
                /* raw products of this layer: forward; grad_weight + grad_input */
                const double flops_f = layer_flops(b, l, 0, 0), flops_b = layer_flops(b, l, 1, 2);
                for (int r = 0; r < rounds; r++) tmp[r] = layer_raw(b, raw + (size_t)r * P, l, 0, 0);
                double rf = median(tmp, rounds);
                for (int r = 0; r < rounds; r++) tmp[r] = layer_raw(b, raw + (size_t)r * P, l, 1, 2);
                double rb = median(tmp, rounds);
                for (int r = 0; r < rounds; r++) tmp[r] = gf[r] / layer_raw(b, raw + (size_t)r * P, l, 0, 0);
                double over_f = median(tmp, rounds);
                for (int r = 0; r < rounds; r++) tmp[r] = gb[r] / layer_raw(b, raw + (size_t)r * P, l, 1, 2);
                double over_b = median(tmp, rounds);
                for (int r = 0; r < rounds; r++) tmp[r] = flops_f / gf[r] * 1e-9 / peak[r];
                double peak_f = median(tmp, rounds);
                for (int r = 0; r < rounds; r++) tmp[r] = flops_b / gb[r] * 1e-9 / peak[r];
                double peak_b = median(tmp, rounds);
                printf(",\"raw_forward_ms\":%.6f,\"raw_backward_ms\":%.6f,\"forward_over_raw\":%.4f,"
                       "\"backward_over_raw\":%.4f,\"forward_of_peak\":%.4f,\"backward_of_peak\":%.4f,"
                       "\"forward_gflop\":%.6f,\"backward_gflop\":%.6f",
                       rf * 1e3, rb * 1e3, over_f, over_b, peak_f, peak_b, flops_f * 1e-9, flops_b * 1e-9);
            }
            printf("}\n");
        }
        free(done);
        free(gf);
        free(gb);
        fflush(stdout);
    }
    free(peak);
    free(ppeak);
    free(fwd);
    free(bwd);
    free(raw);
    free(phase);
    free(tmp);
    return rc;
}

/* --layers: every layer's forward and backward time in model order (not
 * grouped) with its parameter count and offset, and the step's phases:
 * medians over `rounds` blocks of `steps` profiled steps. bench/scaling.py
 * takes from them when each gradient bucket is ready during backward. */
static int report_layer_order(bench *b, int threads, int steps, int rounds)
{
    const int L = b->model.layer_count;
    double *fwd = calloc((size_t)rounds * L, sizeof(double)), *bwd = calloc((size_t)rounds * L, sizeof(double));
    double *phase = calloc((size_t)rounds * 5, sizeof(double)), *tmp = calloc((size_t)rounds, sizeof(double));
    int rc = !fwd || !bwd || !phase || !tmp ? ars_error(ARS_ENOMEM, "out of memory") : 0;
    for (int r = 0; r < rounds && !rc; r++) {
        memset(b->phase, 0, sizeof b->phase);
        memset(b->layer_fwd, 0, sizeof(double) * (size_t)L);
        memset(b->layer_bwd, 0, sizeof(double) * (size_t)L);
        for (int i = 0; i < steps && !rc; i++) rc = train_step(b, 1);
        for (int l = 0; l < L; l++) {
            fwd[r * L + l] = b->layer_fwd[l] / steps;
            bwd[r * L + l] = b->layer_bwd[l] / steps;
        }
        for (int i = 0; i < 5; i++) phase[r * 5 + i] = b->phase[i] / steps;
    }
    static const char *const names[5] = {"forward", "loss", "backward", "norm_clip", "optimizer"};
    for (int i = 0; i < 5 && !rc; i++) {
        for (int r = 0; r < rounds; r++) tmp[r] = phase[r * 5 + i];
        json_head("phase", b, threads);
        printf(",\"phase\":\"%s\",\"ms\":%.4f,\"clock\":\"%s\"}\n", names[i], median(tmp, rounds) * 1e3,
               timing_clock == CLOCK_MONOTONIC ? "wall" : "cpu");
    }
    for (int l = 0; l < L && !rc; l++) {
        const ars_layer *layer = &b->model.layers[l];
        for (int r = 0; r < rounds; r++) tmp[r] = fwd[r * L + l];
        double f = median(tmp, rounds);
        for (int r = 0; r < rounds; r++) tmp[r] = bwd[r * L + l];
        json_head("layer_order", b, threads);
        printf(",\"index\":%d,\"layer\":\"%s\",\"kind\":\"%s\",\"params\":%zu,\"param_offset\":%zu,"
               "\"forward_ms\":%.6f,\"backward_ms\":%.6f}\n",
               l, layer->name, layer->ops->kind, layer->param_size, layer->param_offset, f * 1e3,
               median(tmp, rounds) * 1e3);
    }
    fflush(stdout);
    free(fwd);
    free(bwd);
    free(phase);
    free(tmp);
    return rc;
}

static void usage(FILE *to)
{
    fprintf(to,
            "usage: bench_step [--workload W1|...|W6 | --config FILE] [--steps N] [--warmup N]\n"
            "                  [--reps N] [--threads N] [--batch N] [--in-dim N]\n"
            "                  [--products [--rounds N]] [--layers] [--gemm-budget SECONDS]\n"
            "                  [--gemm-tuning on|off] [--precision fp32|bf16|bf16_emulated]\n"
            "Times full training steps and the same products made raw (the calls one step made\n"
            "through ars_gemm, each in the layout the step used); one JSON line per measurement\n"
            "on stdout. --products: per-layer and per-phase times and every product against raw\n"
            "sgemm in 8 layouts, in N interleaved rounds. --layers: every layer's forward and\n"
            "backward time in model order, and the phases (N rounds). --gemm-tuning off: every\n"
            "product as asked (run.gemm_tuning = off), reported as impl \"arsenal-fixed\".\n"
            "--precision: the step's products as [run] precision (docs/bf16.md); where it cannot\n"
            "run, one line {\"bench\":\"step\",...,\"skipped\":REASON} and exit status 0.\n");
}

static int parse(int argc, char **argv, options *o)
{
    *o = (options){.workload = "W1", .steps = 0, .warmup = 3, .reps = 3, .threads = 0, .rounds = 3,
                    .gemm_budget = 0.02, .gemm_tuning = 1, .precision = "fp32"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--products") == 0) { o->products = 1; continue; }
        if (strcmp(a, "--layers") == 0) { o->layers = 1; continue; }
        if (strcmp(a, "--gemm-tuning") == 0 && v && (strcmp(v, "on") == 0 || strcmp(v, "off") == 0)) {
            o->gemm_tuning = strcmp(v, "on") == 0;
            i++;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) { usage(stdout); exit(0); }
        if (!v) { usage(stderr); return ars_error(ARS_EINVAL, "%s needs a value", a); }
        i++;
        if (strcmp(a, "--workload") == 0) o->workload = v;
        else if (strcmp(a, "--config") == 0) o->config = v;
        else if (strcmp(a, "--steps") == 0) o->steps = atoi(v);
        else if (strcmp(a, "--warmup") == 0) o->warmup = atoi(v);
        else if (strcmp(a, "--reps") == 0) o->reps = atoi(v);
        else if (strcmp(a, "--threads") == 0) o->threads = atoi(v);
        else if (strcmp(a, "--rounds") == 0) o->rounds = atoi(v);
        else if (strcmp(a, "--batch") == 0) o->batch = atoi(v);
        else if (strcmp(a, "--in-dim") == 0) o->in_dim = atoi(v);
        else if (strcmp(a, "--gemm-budget") == 0) o->gemm_budget = atof(v);
        else if (strcmp(a, "--precision") == 0) o->precision = v;
        else { usage(stderr); return ars_error(ARS_EINVAL, "unknown option %s", a); }
    }
    if (o->reps < 1 || o->rounds < 1 || o->warmup < 0 || o->steps < 0 || o->gemm_budget <= 0)
        return ars_error(ARS_EINVAL, "--reps and --rounds must be >= 1, --steps/--warmup >= 0, --gemm-budget > 0");
    return 0;
}

/* Steps per timed block when --steps is not given: about a second. */
static int default_steps(const char *name)
{
    if (strcmp(name, "W5") == 0) return 3;
    if (strcmp(name, "W6") == 0) return 5;
    if (strcmp(name, "W3") == 0) return 5;
    if (strcmp(name, "W2") == 0) return 20;
    return 30;
}

static int run(const options *o)
{
    bench b;
    memset(&b, 0, sizeof b);
    if (o->threads > 0) openblas_set_num_threads(o->threads);
    const int threads = openblas_get_num_threads();
    if (threads == 1) timing_clock = CLOCK_PROCESS_CPUTIME_ID;
    TRY(o->config ? load_workload(&b.w, o->config) : build_workload(&b.w, o->workload));
    if (o->batch > 0) b.w.batch = o->batch;
    if (o->in_dim > 0) {
        b.w.in_dim = o->in_dim;
        b.w.input = ars_shape_vector(o->in_dim);
    }
    const int steps = o->steps > 0 ? o->steps : default_steps(b.w.name);
    ars_precision precision;
    TRY(ars_precision_parse(o->precision, &precision));
    if (ars_gemm_set_precision(precision)) {   /* not on this machine: say why, for the report */
        printf("{\"bench\":\"step\",\"impl\":\"arsenal\",\"workload\":\"%s\",\"threads\":%d,\"batch\":%d,"
               "\"precision\":\"%s\",\"skipped\":\"", b.w.name, threads, b.w.batch, o->precision);
        for (const char *c = ars_error_message(); *c; c++) {
            if (*c == '"' || *c == '\\') putchar('\\');
            putchar(*c);
        }
        printf("\"}\n");
        free(b.w.specs);
        return 0;
    }

    /* Baseline: data and a first sgemm (OpenBLAS's buffers) before the model. */
    gemm_buffers g = {0};
    TRY(buffers_fit(&g, 256 * 256));
    run_gemm(&g, 256, 256, 256, 0, 0, 0.0f);
    int out_dim = b.w.specs[b.w.count - 1].units > 0 ? b.w.specs[b.w.count - 1].units : 10;
    TRY(data_setup(&b, out_dim));
    double baseline = current_rss_mb();
    if (!o->gemm_tuning) impl_name = "arsenal-fixed";
    ars_gemm_set_enabled(o->gemm_tuning);
    TRY(bench_setup(&b));
    /* as the trainer builds the model: the products' layouts measured once */
    double tune_wall = clock_seconds(CLOCK_MONOTONIC);
    if (o->gemm_tuning) TRY(ars_model_tune_gemm(&b.model, 1));
    tune_wall = clock_seconds(CLOCK_MONOTONIC) - tune_wall;
    char layouts[2048] = "all as asked";
    if (o->gemm_tuning) ars_gemm_describe(b.model.gemm_plan, b.model.gemm_plan_count, layouts, sizeof layouts);
    if (b.model.out_dim != out_dim) return ars_error(ARS_EINVAL, "model output width %d, expected %d",
                                                     b.model.out_dim, out_dim);
    TRY(list_products(&b));

    printf("{\"bench\":\"meta\",\"impl\":\"%s\",\"workload\":\"%s\",\"threads\":%d,\"batch\":%d,"
           "\"params\":%zu,\"layers\":%d,\"openblas\":\"%s\",\"corename\":\"%s\",\"gemm_tuning\":\"%s\","
           "\"gemm_products\":%d,\"gemm_tune_ms\":%.1f,\"gemm_tune_cpu_ms\":%.1f,\"gemm_layouts\":\"%s\"}\n",
           impl_name, b.w.name, threads, b.w.batch, b.model.param_count, b.model.layer_count, openblas_get_config(),
           openblas_get_corename(), o->gemm_tuning ? "on" : "off", b.model.gemm_plan_count, tune_wall * 1e3,
           b.model.gemm_tune_cpu_seconds * 1e3, layouts);

    for (int i = 0; i < o->warmup; i++) TRY(train_step(&b, 0));
    /* the products of one step as the layers made them */
    TRY(ars_gemm_record_start(false));
    int recorded_rc = train_step(&b, 0);
    int stop_rc = ars_gemm_record_stop(&b.recorded, &b.recorded_calls, &b.recorded_count, NULL, NULL);
    TRY(recorded_rc ? recorded_rc : stop_rc);

    /* Peak RSS once the model has trained (before any raw-GEMM buffer). */
    for (int i = 0; i < 2; i++) TRY(train_step(&b, 0));
    double peak = peak_rss_mb();
    size_t slots = 2 + (b.opt.m ? 1 : 0) + (b.opt.v ? 1 : 0);
    double activations = (double)b.w.batch * b.w.in_dim;
    for (int i = 0; i < b.model.layer_count; i++)
        if (strcmp(b.model.layers[i].ops->kind, "residual") != 0)
            activations += (double)b.w.batch * b.model.layers[i].out_dim;
    double minimum = 4.0 * ((double)b.model.param_count * slots + b.model.state_count + activations) / 1048576.0;
    json_head("memory", &b, threads);
    printf(",\"params\":%zu,\"param_slots\":%zu,\"peak_rss_mb\":%.2f,\"baseline_rss_mb\":%.2f,"
           "\"model_rss_mb\":%.2f,\"minimum_mb\":%.2f,\"params_mb\":%.2f,\"activations_mb\":%.2f,"
           "\"rss_over_minimum\":%.3f}\n",
           b.model.param_count, slots, peak, baseline, peak - baseline, minimum,
           4.0 * b.model.param_count * slots / 1048576.0, 4.0 * activations / 1048576.0,
           (peak - baseline) / minimum);
    fflush(stdout);

    /* Interleaved: a block of steps, then the same products as raw sgemm. */
    double *ratios = malloc(sizeof(double) * (size_t)o->reps);
    double *step_ms = malloc(sizeof(double) * (size_t)o->reps);
    if (!ratios || !step_ms) return ars_error(ARS_ENOMEM, "out of memory");
    for (int r = 0; r < o->reps; r++) {
        double s = now(), wall = clock_seconds(CLOCK_MONOTONIC), cpu = clock_seconds(CLOCK_PROCESS_CPUTIME_ID);
        for (int i = 0; i < steps; i++) TRY(train_step(&b, 0));
        double per_step = (now() - s) / steps;
        wall = (clock_seconds(CLOCK_MONOTONIC) - wall) / steps;
        cpu = (clock_seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu) / steps;
        double gemm_total, listed_total;
        TRY(time_recorded(&b, &g, o->gemm_budget, &gemm_total));
        /* the reconstruction of the products (list_products, as asked): the earlier baseline */
        TRY(time_products(&b, &g, o->gemm_budget, &listed_total, NULL));
        ratios[r] = per_step / gemm_total;
        step_ms[r] = wall * 1e3;
        json_head("step", &b, threads);
        printf(",\"rep\":%d,\"steps\":%d,\"ms_per_step\":%.4f,\"cpu_ms_per_step\":%.4f,\"gemm_ms\":%.4f,"
               "\"roofline\":%.4f,\"roofline_clock\":\"%s\",\"samples_per_s\":%.1f,\"gemm_calls\":%d,"
               "\"gemm_listed_ms\":%.4f,\"roofline_listed\":%.4f}\n",
               r, steps, wall * 1e3, cpu * 1e3, gemm_total * 1e3, per_step / gemm_total,
               timing_clock == CLOCK_MONOTONIC ? "wall" : "cpu", b.w.batch / wall, b.recorded_count,
               listed_total * 1e3, per_step / listed_total);
        fflush(stdout);
    }
    if (o->reps > 1) {
        json_head("step_median", &b, threads);
        printf(",\"reps\":%d,\"ms_per_step\":%.4f,\"roofline\":%.4f}\n", o->reps, median(step_ms, o->reps),
               median(ratios, o->reps));
    }
    free(ratios);
    free(step_ms);

    if (o->layers) TRY(report_layer_order(&b, threads, steps, o->rounds));
    if (o->products) {
        double peak_gflops = NAN;
        TRY(report_profile(&b, &g, threads, steps, o->rounds, o->gemm_budget, &peak_gflops));
        TRY(report_product_variants(&b, &g, threads, o->gemm_budget, o->rounds, peak_gflops));
    }

    free(g.a);
    free(g.b);
    free(g.c);
    for (int p = 0; p < POOL; p++) {
        free(b.x[p]);
        free(b.labels[p]);
        free(b.targets[p]);
    }
    free(b.ids);
    free(b.dlogits);
    free(b.layer_fwd);
    free(b.layer_bwd);
    free(b.products);
    free(b.layer_products);
    free(b.calls);
    free(b.recorded);
    free(b.recorded_calls);
    ars_optimizer_destroy(&b.opt);
    ars_model_destroy(&b.model);
    free(b.w.specs);
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse(argc, argv, &o);
    if (!rc) rc = run(&o);
    if (rc) {
        fprintf(stderr, "bench_step: %s\n", ars_error_message());
        return 1;
    }
    return 0;
}
