/* bench_ckpt: two costs that live outside the training step's GEMMs.
 *  1. Checkpoint write (ars_ckpt_write: parameters, gradients, Adam m and v,
 *     history) of a model of >= 50 M parameters against a raw fwrite + fsync
 *     of the same number of bytes, in the same directory, A/B interleaved;
 *     each file is deleted and the file system synced outside the timings.
 *  2. The health probes: a W1 training step (784-1024-1024-10, batch 128)
 *     with probe = 1 and the per-layer norms, update ratios and history
 *     record the trainer computes on a probe step, against probe = 0.
 * Usage: bench_ckpt [DIR] [REPETITIONS] [small]   (DIR default: /tmp; small:
 * a 2 M-parameter model, so that bench/run.sh --quick exercises it in CI) */
#define _XOPEN_SOURCE 700   /* sync */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arsenal/ckpt.h"
#include "arsenal/clip.h"
#include "arsenal/error.h"
#include "arsenal/init.h"
#include "arsenal/loss.h"
#include "arsenal/model.h"
#include "arsenal/optim.h"
#include "arsenal/rng.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, compare);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void die(const char *what)
{
    fprintf(stderr, "bench_ckpt: %s: %s\n", what, ars_error_message());
    exit(1);
}

static void build(ars_model *model, const int *widths, int layers, int in_dim, int rows)
{
    ars_layer_spec specs[16];
    int n = 0;
    for (int i = 0; i < layers; i++) {
        ars_layer_spec_defaults(&specs[n], "dense");
        specs[n].units = widths[i];
        strcpy(specs[n++].init, "he_normal");
        if (i + 1 < layers) ars_layer_spec_defaults(&specs[n++], "relu");
    }
    if (ars_model_create(model, specs, n, ars_shape_vector(in_dim), rows) || ars_init_model(model, 1)) die("model");
}

/* Removes a written file outside the timed regions, and lets the file
 * system finish with it (freeing its blocks: a TRIM on a disk mounted with
 * discard) before the next write is timed, so that neither write pays for
 * the other's deletion. */
static void forget(const char *path)
{
    unlink(path);
    sync();
}

static double raw_write(const char *path, const void *bytes, size_t size)
{
    double start = now();
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(bytes, 1, size, f) != size || fflush(f) || fsync(fileno(f))) {
        fprintf(stderr, "bench_ckpt: raw write of %s failed\n", path);
        exit(1);
    }
    fclose(f);
    double seconds = now() - start;
    forget(path);
    return seconds;
}

static void bench_checkpoint(const char *dir, int reps, int small)
{
    /* 784 -> 8192 -> 6144 -> 10: 56.7 M parameters (small: 784 -> 1024 -> 1024 -> 10, 1.9 M) */
    const int full_widths[] = {8192, 6144, 10}, small_widths[] = {1024, 1024, 10};
    ars_model model;
    build(&model, small ? small_widths : full_widths, 3, 784, 1);
    ars_optim_config config;
    ars_optim_config_defaults(&config, ARS_OPT_ADAM);
    ars_optimizer opt;
    if (ars_optimizer_create(&opt, &config, model.param_count)) die("optimizer");
    char names[8][40];
    for (int l = 0; l < model.layer_count; l++) memcpy(names[l], model.layers[l].name, 40);
    ars_history history;
    if (ars_history_init(&history, model.layer_count, (const char (*)[40])names, 0)) die("history");
    ars_ckpt_state state = {.step = 1, .steps_per_epoch = 1, .world_size = 1, .global_batch = 1, .seed = 1,
                            .config_text = "[run]\n"};
    const size_t tensor_bytes = model.param_count * sizeof(float) * 4;   /* params, grads, m, v */
    void *bytes = malloc(tensor_bytes);
    if (!bytes) die("memory");
    memset(bytes, 1, tensor_bytes);
    char path[512], raw[512];
    snprintf(path, sizeof path, "%s/bench-ckpt-%ld.h5", dir, (long)getpid());
    snprintf(raw, sizeof raw, "%s/bench-raw-%ld.bin", dir, (long)getpid());
    double ckpt[16], plain[16], ratio[16];
    for (int r = 0; r < reps; r++) {
        double start = now();
        if (ars_ckpt_write(path, &model, &opt, &history, &state)) die("checkpoint");
        ckpt[r] = now() - start;
        forget(path);
        plain[r] = raw_write(raw, bytes, tensor_bytes);
        ratio[r] = ckpt[r] / plain[r];
    }
    printf("{\"bench\":\"checkpoint\",\"params\":%zu,\"bytes\":%zu,\"ckpt_runs\":[", model.param_count,
           tensor_bytes);
    for (int r = 0; r < reps; r++) printf("%s%.3f", r ? "," : "", ckpt[r]);
    printf("],\"raw_runs\":[");
    for (int r = 0; r < reps; r++) printf("%s%.3f", r ? "," : "", plain[r]);
    /* after the lists: median sorts them */
    printf("],\"ckpt_s\":%.3f,\"raw_s\":%.3f,\"ratio\":%.3f}\n", median(ckpt, reps), median(plain, reps),
           median(ratio, reps));
    free(bytes);
    ars_history_free(&history);
    ars_optimizer_destroy(&opt);
    ars_model_destroy(&model);
}

/* One W1 step; on a probe step also what the trainer's probes compute. */
static double step(ars_model *m, ars_optimizer *opt, const float *x, const int32_t *labels, float *dlogits,
                   float *before, double *row, int probe)
{
    double start = now();
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = 128, .global_rows = 128, .seed = 1, .probe = probe};
    double loss;
    if (ars_model_forward(m, &pass, x)) die("forward");
    ars_loss_compute(ARS_LOSS_CROSS_ENTROPY, ars_model_output(m), 128, 10, labels, NULL, 128, &loss, dlogits);
    if (ars_model_backward(m, &pass, dlogits, NULL, NULL)) die("backward");
    double norm;
    ars_clip_global_norm(m->grads, m->param_count, 1.0f, &norm);
    if (probe) memcpy(before, m->params, sizeof(float) * m->param_count);
    ars_optimizer_step(opt, m->params, m->grads, 1e-3f);
    if (probe) {
        for (int l = 0; l < m->layer_count; l++) {
            const ars_layer *layer = &m->layers[l];
            row[l] = ars_l2_norm(layer->grad, layer->param_size) + ars_l2_norm(layer->param, layer->param_size);
            double update = 0;
            for (size_t i = 0; i < layer->param_size; i++) {
                double d = (double)layer->param[i] - before[layer->param_offset + i];
                update += d * d;
            }
            row[l] += sqrt(update);
        }
    }
    return now() - start;
}

static void bench_probes(int reps)
{
    const int widths[] = {1024, 1024, 10};
    ars_model m;
    build(&m, widths, 3, 784, 128);
    ars_optim_config config;
    ars_optim_config_defaults(&config, ARS_OPT_ADAM);
    ars_optimizer opt;
    if (ars_optimizer_create(&opt, &config, m.param_count)) die("optimizer");
    float *x = malloc(sizeof(float) * 128 * 784), *dlogits = malloc(sizeof(float) * 128 * 10);
    float *before = malloc(sizeof(float) * m.param_count);
    int32_t labels[128];
    double row[16];
    ars_rng_normal(x, 128 * 784, 0, 1, 1, 9, 0);
    for (int i = 0; i < 128; i++) labels[i] = i % 10;
    for (int i = 0; i < 5; i++) step(&m, &opt, x, labels, dlogits, before, row, 0);
    double off[16], on[16];
    const int steps = 20;
    for (int r = 0; r < reps; r++) {
        double a = 0, b = 0;
        for (int s = 0; s < steps; s++) {   /* interleaved: off, on, off, on ... */
            a += step(&m, &opt, x, labels, dlogits, before, row, 0);
            b += step(&m, &opt, x, labels, dlogits, before, row, 1);
        }
        off[r] = a / steps;
        on[r] = b / steps;
    }
    double t_off = median(off, reps), t_on = median(on, reps);
    /* the trainer probes every probe_every (default 10) steps */
    printf("{\"bench\":\"probes\",\"step_ms\":%.3f,\"probe_step_ms\":%.3f,\"probe_step_overhead\":%.4f,"
           "\"overhead_at_probe_every_10\":%.4f}\n",
           1e3 * t_off, 1e3 * t_on, t_on / t_off - 1, (t_on / t_off - 1) / 10);
    free(x);
    free(dlogits);
    free(before);
    ars_optimizer_destroy(&opt);
    ars_model_destroy(&m);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    int reps = argc > 2 ? atoi(argv[2]) : 3;
    if (reps < 1 || reps > 16) reps = 3;
    int small = argc > 3 && strcmp(argv[3], "small") == 0;
    bench_probes(reps);
    bench_checkpoint(dir, reps, small);
    return 0;
}
