/* bench_allreduce: data-parallel figures of workload W1 (MLP 784-1024-
 * 1024-10, batch 128 per rank, Adam, clip 1.0), run under mpirun -np 2:
 *   sync    the gradient sum through arsenal's dist in the trainer's default
 *           mode (hook after each layer, finish; in shared memory that
 *           includes the sum of squares for the clip norm) vs one raw
 *           MPI_Allreduce of the same bytes;
 *   buckets a bucket-size sweep (sync alone and full training steps);
 *   scaling samples/s of W1 training on 1 rank (the others idle) vs all ranks;
 *   overlap training steps with each gradient sum (overlapped buckets, one
 *           all-reduce, shared memory) and without communication (every
 *           rank computing alone): the share of the communication cost
 *           that overlap hides, and what each sum costs.
 * Every repetition runs all variants back to back (interleaved), so a busy
 * moment hits them alike; run.sh takes medians. One JSON line per
 * measurement on rank 0's stdout. */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mpi.h>

#include "arsenal/clip.h"
#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "arsenal/init.h"
#include "arsenal/loss.h"
#include "arsenal/model.h"
#include "arsenal/optim.h"
#include "arsenal/rng.h"

enum { POOL = 4, BATCH = 128, IN_DIM = 784, CLASSES = 10 };

typedef struct options {
    int steps, warmup, reps, threads, sync_iters;
} options;

typedef struct trainer {
    ars_model model;
    ars_optimizer opt;
    ars_dist dist;        /* over all ranks */
    float *x[POOL], *dlogits;
    int32_t *labels[POOL];
    uint32_t *ids;
    uint64_t step;
    double wait_seconds;  /* dist->sync_seconds summed over timed steps */
} trainer;

static int rank_, world_;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int setup(trainer *t)
{
    ars_layer_spec specs[5];
    ars_layer_spec_defaults(&specs[0], "dense");
    specs[0].units = 1024;
    strcpy(specs[0].init, "he_normal");
    ars_layer_spec_defaults(&specs[1], "relu");
    specs[2] = specs[0];
    specs[3] = specs[1];
    ars_layer_spec_defaults(&specs[4], "dense");
    specs[4].units = CLASSES;
    TRY(ars_model_create(&t->model, specs, 5, ars_shape_vector(IN_DIM), BATCH));
    TRY(ars_init_model(&t->model, 1));   /* same seed: replicas start equal */
    ars_optim_config adam;
    ars_optim_config_defaults(&adam, ARS_OPT_ADAM);
    TRY(ars_optimizer_create(&t->opt, &adam, t->model.param_count));
    TRY(ars_dist_create(&t->dist, MPI_COMM_WORLD));
    t->dlogits = calloc((size_t)BATCH * CLASSES, sizeof(float));
    t->ids = malloc(sizeof(uint32_t) * BATCH);
    if (!t->dlogits || !t->ids) return ars_error(ARS_ENOMEM, "out of memory");
    for (int r = 0; r < BATCH; r++) t->ids[r] = (uint32_t)r;
    for (int p = 0; p < POOL; p++) {
        t->x[p] = malloc(sizeof(float) * BATCH * IN_DIM);
        t->labels[p] = malloc(sizeof(int32_t) * BATCH);
        if (!t->x[p] || !t->labels[p]) return ars_error(ARS_ENOMEM, "out of memory");
        uint32_t stream = (uint32_t)(rank_ * POOL + p);   /* each rank its own shard */
        ars_rng_normal(t->x[p], (size_t)BATCH * IN_DIM, 0, 1, 7, ars_stream(ARS_STREAM_DATA, stream), 0);
        uint32_t word[4];
        for (int r = 0; r < BATCH; r++) {
            ars_philox(9, ars_stream(ARS_STREAM_DATA, stream), (uint64_t)r, word);
            t->labels[p][r] = (int32_t)(word[0] % CLASSES);
        }
    }
    return 0;
}

static void teardown(trainer *t)
{
    for (int p = 0; p < POOL; p++) {
        free(t->x[p]);
        free(t->labels[p]);
    }
    free(t->dlogits);
    free(t->ids);
    ars_optimizer_destroy(&t->opt);
    ars_dist_destroy(&t->dist);
    ars_model_destroy(&t->model);
}

/* The body of train_step (src/train.c). dist NULL: this rank alone. */
static int train_step(trainer *t, ars_dist *dist)
{
    ars_model *m = &t->model;
    const int p = (int)(t->step % POOL), world = dist ? dist->size : 1;
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = BATCH, .global_rows = BATCH * world, .sample_ids = t->ids,
                     .seed = 1, .step = t->step, .dist = dist};
    TRY(ars_model_forward(m, &pass, t->x[p]));
    double loss_sum = 0;
    TRY(ars_loss_compute(ARS_LOSS_CROSS_ENTROPY, ars_model_output(m), BATCH, m->out_dim, t->labels[p], NULL,
                         pass.global_rows, &loss_sum, t->dlogits));
    TRY(ars_dist_start_side_sum(dist, &loss_sum, 1));   /* summed during backward */
    TRY(ars_model_backward(m, &pass, t->dlogits, ars_dist_backward_hook, dist));
    TRY(ars_dist_finish_gradients(dist));
    if (dist) t->wait_seconds += dist->sync_seconds;
    double norm = sqrt(ars_dist_grad_sum_squares(dist, m));
    if (isfinite(norm) && isfinite(loss_sum)) {
        float scale = ars_clip_scale_for_norm(norm, 1.0f);   /* applied in the optimizer's pass */
        ars_optimizer_step_scaled(&t->opt, m->params, m->grads, scale, 1e-3f);
    }
    t->step++;
    return 0;
}

/* Seconds per step of `steps` steps on every rank (the slowest rank's). */
static int time_steps(trainer *t, ars_dist *dist, int steps, double *seconds)
{
    MPI_Barrier(MPI_COMM_WORLD);
    double s = now();
    for (int i = 0; i < steps; i++) TRY(train_step(t, dist));
    double mine = (now() - s) / steps;
    MPI_Allreduce(&mine, seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return 0;
}

/* Rank 0 trains alone while the others sleep (polling every 0.5 ms, so
 * they take no core from it). */
static int time_one_rank(trainer *t, int steps, double *seconds)
{
    MPI_Barrier(MPI_COMM_WORLD);
    double result = 0;
    if (rank_ == 0) {
        double s = now();
        for (int i = 0; i < steps; i++) TRY(train_step(t, NULL));
        result = (now() - s) / steps;
        for (int r = 1; r < world_; r++) MPI_Send(&result, 1, MPI_DOUBLE, r, 7, MPI_COMM_WORLD);
    } else {
        MPI_Request request;
        MPI_Irecv(&result, 1, MPI_DOUBLE, 0, 7, MPI_COMM_WORLD, &request);
        int done = 0;
        struct timespec nap = {0, 500000};
        while (!done) {
            MPI_Test(&request, &done, MPI_STATUS_IGNORE);
            if (!done) nanosleep(&nap, NULL);
        }
    }
    *seconds = result;
    return 0;
}

/* The gradient sync alone, no compute: the hook after each layer in
 * backward order, then finish. */
static int time_dist_sync(trainer *t, int iters, double *seconds)
{
    MPI_Barrier(MPI_COMM_WORLD);
    double s = now();
    for (int i = 0; i < iters; i++) {
        for (int l = t->model.layer_count - 1; l >= 0; l--)
            TRY(ars_dist_backward_hook(&t->dist, &t->model.layers[l]));
        TRY(ars_dist_finish_gradients(&t->dist));
    }
    double mine = (now() - s) / iters;
    MPI_Allreduce(&mine, seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return 0;
}

static int time_raw_allreduce(trainer *t, int iters, double *seconds)
{
    MPI_Barrier(MPI_COMM_WORLD);
    double s = now();
    for (int i = 0; i < iters; i++)
        if (MPI_Allreduce(MPI_IN_PLACE, t->model.grads, (int)t->model.param_count, MPI_FLOAT, MPI_SUM,
                          MPI_COMM_WORLD) != MPI_SUCCESS)
            return ars_error(ARS_EMPI, "MPI_Allreduce failed");
    double mine = (now() - s) / iters;
    MPI_Allreduce(&mine, seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return 0;
}

static int plan(trainer *t, double bucket_mb, double first_mb, ars_grad_sync mode)
{
    return ars_dist_plan_buckets(&t->dist, &t->model, (size_t)(bucket_mb * 1048576.0),
                                 (size_t)(first_mb * 1048576.0), mode);
}

/* 1 - part/whole as a JSON number, or null when whole <= 0 (a few noisy
 * steps can make the communication look free: no share to report). */
static const char *json_share(double whole, double part, char buf[32])
{
    if (!(whole > 0)) return "null";
    snprintf(buf, 32, "%.4f", 1.0 - part / whole);
    return buf;
}

static void head(const char *kind, int threads)
{
    printf("{\"bench\":\"%s\",\"impl\":\"arsenal\",\"workload\":\"W1\",\"ranks\":%d,\"threads\":%d,\"batch\":%d",
           kind, world_, threads, BATCH);
}

static int run(const options *o)
{
    if (o->threads > 0) openblas_set_num_threads(o->threads);
    const int threads = openblas_get_num_threads();
    trainer t;
    memset(&t, 0, sizeof t);
    TRY(setup(&t));
    const double bytes = 4.0 * (double)t.model.param_count;
    static const double sweep_mb[] = {0.03, 0.5, 4, 32};
    const int sweeps = (int)(sizeof sweep_mb / sizeof sweep_mb[0]);

    if (rank_ == 0) {
        printf("{\"bench\":\"dist_meta\",\"impl\":\"arsenal\",\"workload\":\"W1\",\"ranks\":%d,\"threads\":%d,"
               "\"params\":%zu,\"grad_mb\":%.3f}\n", world_, threads, t.model.param_count, bytes / 1048576.0);
        fflush(stdout);
    }
    /* warm-up: every path once */
    memset(t.model.grads, 0, sizeof(float) * t.model.param_count);
    for (ars_grad_sync mode = ARS_SYNC_ALLREDUCE; mode <= ARS_SYNC_SHARED; mode++) {
        TRY(plan(&t, 4, 1, mode));
        for (int i = 0; i < o->warmup; i++) TRY(train_step(&t, &t.dist));
    }
    for (int i = 0; i < o->warmup; i++) TRY(train_step(&t, NULL));
    double dummy;
    TRY(time_raw_allreduce(&t, 2, &dummy));

    /* the trainer's default (gradient_sync = auto): shared memory when every
     * rank is on one host, overlapped buckets across hosts */
    int single_host;
    TRY(ars_dist_single_host(&t.dist, &single_host));
    const ars_grad_sync default_mode = single_host ? ARS_SYNC_SHARED : ARS_SYNC_OVERLAP;
    for (int rep = 0; rep < o->reps; rep++) {
        /* sync alone: arsenal (default buckets and mode) vs raw */
        double sync_dist, sync_raw, one, nocomm, on, off, shared, wait_on, wait_off, wait_shared, chosen;
        TRY(plan(&t, 4, 1, default_mode));
        memset(t.model.grads, 0, sizeof(float) * t.model.param_count);
        TRY(time_dist_sync(&t, o->sync_iters, &sync_dist));
        TRY(time_raw_allreduce(&t, o->sync_iters, &sync_raw));
        if (rank_ == 0) {
            head("sync", threads);
            printf(",\"rep\":%d,\"buckets\":%d,\"mode\":\"%s\",\"dist_ms\":%.4f,\"raw_ms\":%.4f,"
                   "\"dist_over_raw\":%.4f,\"raw_gbps\":%.3f}\n", rep, t.dist.bucket_count, ars_grad_sync_name(default_mode),
                   sync_dist * 1e3, sync_raw * 1e3, sync_dist / sync_raw, bytes / sync_raw * 1e-9);
        }
        /* scaling and overlap: 1 rank, all ranks without communication,
         * all ranks with each gradient sum (overlap on, off, shared memory) */
        TRY(time_one_rank(&t, o->steps, &one));
        TRY(time_steps(&t, NULL, o->steps, &nocomm));
        TRY(plan(&t, 4, 1, ARS_SYNC_OVERLAP));
        t.wait_seconds = 0;
        TRY(time_steps(&t, &t.dist, o->steps, &on));
        wait_on = t.wait_seconds / o->steps;
        TRY(plan(&t, 4, 1, ARS_SYNC_ALLREDUCE));
        t.wait_seconds = 0;
        TRY(time_steps(&t, &t.dist, o->steps, &off));
        wait_off = t.wait_seconds / o->steps;
        TRY(plan(&t, 4, 1, ARS_SYNC_SHARED));
        t.wait_seconds = 0;
        TRY(time_steps(&t, &t.dist, o->steps, &shared));
        wait_shared = t.wait_seconds / o->steps;
        /* the scaling the trainer gets by default */
        chosen = default_mode == ARS_SYNC_SHARED ? shared : on;
        double rates[3] = {wait_on, wait_off, wait_shared};
        MPI_Allreduce(MPI_IN_PLACE, rates, 3, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (rank_ == 0) {
            double sps1 = BATCH / one, spsn = (double)BATCH * world_ / chosen;
            head("scaling", threads);
            printf(",\"rep\":%d,\"steps\":%d,\"one_rank_ms\":%.4f,\"ranks_ms\":%.4f,\"samples_per_s_1\":%.1f,"
                   "\"samples_per_s_n\":%.1f,\"speedup\":%.4f,\"efficiency\":%.4f}\n",
                   rep, o->steps, one * 1e3, chosen * 1e3, sps1, spsn, spsn / sps1, spsn / sps1 / world_);
            double exposed_off = off - nocomm, exposed_on = on - nocomm;
            char hidden[32], wait_hidden[32];
            head("overlap", threads);
            printf(",\"rep\":%d,\"steps\":%d,\"nocomm_ms\":%.4f,\"overlap_on_ms\":%.4f,\"overlap_off_ms\":%.4f,"
                   "\"shared_ms\":%.4f,\"wait_on_ms\":%.4f,\"wait_off_ms\":%.4f,\"wait_shared_ms\":%.4f,"
                   "\"exposed_on_ms\":%.4f,\"exposed_off_ms\":%.4f,\"exposed_shared_ms\":%.4f,"
                   "\"hidden_share\":%s,\"wait_hidden_share\":%s}\n",
                   rep, o->steps, nocomm * 1e3, on * 1e3, off * 1e3, shared * 1e3, rates[0] * 1e3, rates[1] * 1e3,
                   rates[2] * 1e3, exposed_on * 1e3, exposed_off * 1e3, (shared - nocomm) * 1e3,
                   json_share(exposed_off, exposed_on, hidden), json_share(rates[1], rates[0], wait_hidden));
        }
        /* bucket-size sweep: sync alone and full steps, overlap on */
        for (int s = 0; s < sweeps; s++) {
            double mb = sweep_mb[s], first = mb < 1 ? mb : 1, sync, step;
            TRY(plan(&t, mb, first, ARS_SYNC_OVERLAP));
            memset(t.model.grads, 0, sizeof(float) * t.model.param_count);
            TRY(time_dist_sync(&t, o->sync_iters, &sync));
            TRY(time_steps(&t, &t.dist, o->steps, &step));
            if (rank_ == 0) {
                head("bucket", threads);
                printf(",\"rep\":%d,\"bucket_mb\":%g,\"first_bucket_mb\":%g,\"buckets\":%d,\"sync_ms\":%.4f,"
                       "\"step_ms\":%.4f,\"samples_per_s\":%.1f}\n",
                       rep, mb, first, t.dist.bucket_count, sync * 1e3, step * 1e3,
                       (double)BATCH * world_ / step);
            }
        }
        if (rank_ == 0) fflush(stdout);
    }
    teardown(&t);
    return 0;
}

static int parse(int argc, char **argv, options *o)
{
    *o = (options){.steps = 20, .warmup = 3, .reps = 3, .threads = 1, .sync_iters = 20};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return ars_error(ARS_EINVAL, "%s needs a value (options: --steps --warmup --reps --threads "
                                             "--sync-iters)", a);
        i++;
        if (strcmp(a, "--steps") == 0) o->steps = atoi(v);
        else if (strcmp(a, "--warmup") == 0) o->warmup = atoi(v);
        else if (strcmp(a, "--reps") == 0) o->reps = atoi(v);
        else if (strcmp(a, "--threads") == 0) o->threads = atoi(v);
        else if (strcmp(a, "--sync-iters") == 0) o->sync_iters = atoi(v);
        else return ars_error(ARS_EINVAL, "unknown option %s", a);
    }
    if (o->steps < 1 || o->reps < 1 || o->warmup < 0 || o->sync_iters < 1)
        return ars_error(ARS_EINVAL, "--steps, --reps and --sync-iters must be >= 1");
    return 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &world_);
    options o;
    int rc = parse(argc, argv, &o);
    if (!rc && world_ < 2) rc = ars_error(ARS_EINVAL, "run under mpirun -np 2 (or more): this is %d rank", world_);
    if (!rc) rc = run(&o);
    if (rc) {
        fprintf(stderr, "bench_allreduce (rank %d): %s\n", rank_, ars_error_message());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Finalize();
    return 0;
}
