/* bench_comm: what a gradient sync costs, by message size, for the
 * alpha-beta model of docs/scaling.md (bench/scaling.sh runs it, on one
 * host and across network-namespace hosts; bench/scaling.py fits it).
 * For every size from --min-bytes to --max-bytes (x --factor), in --reps
 * interleaved repetitions, times:
 *   allreduce       MPI_Allreduce in place (the algorithm Open MPI's tuned
 *                   component picks, or the one forced through
 *                   OMPI_MCA_coll_tuned_allreduce_algorithm: 3 recursive
 *                   doubling, 4 ring; the meta line names it);
 *   reduce_scatter  MPI_Reduce_scatter_block (each rank 1/p of the sum);
 *   allgather       MPI_Allgather of 1/p per rank;
 *   rs_ag           both, back to back: ZeRO-1's gradient + parameter sync;
 *   dist_overlap    arsenal's dist across hosts: bucketed MPI_Iallreduce
 *                   started from the backward hook of each layer (the
 *                   trainer's 4 MB buckets, the first 1 MB), then finish
 *                   (libnbc's algorithm: in place, it picks binomial unless
 *                   OMPI_MCA_coll_libnbc_iallreduce_algorithm forces one);
 *   dist_allreduce  arsenal's gradient_sync = allreduce;
 *   dist_shared     arsenal's shared-memory sum (one host only; includes
 *                   the clip norm's sum of squares).
 * The dist paths run on a model of dense layers whose gradient has about
 * the size asked (its real size is reported). --sync-points N adds
 *   sync_point      what one blocking all-reduce of a few doubles costs
 *                   between two slices of computation (about 1 ms of CPU
 *                   each), as SyncBatchNorm's three per layer and step do:
 *                   N slices with the all-reduce after each against N
 *                   without, interleaved. On oversubscribed cores a rank
 *                   that waits gives its core away and must be scheduled
 *                   again, which back-to-back collectives never show. Each figure is the slowest
 * rank's mean over enough iterations to take --budget seconds (at least 2).
 * One JSON line per figure on rank 0's stdout. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mpi.h>

#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "arsenal/model.h"

typedef struct options {
    double min_bytes, max_bytes, factor, budget;
    int reps, sync_points;
    const char *label;
} options;

static int rank_, world_;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

enum { OP_ALLREDUCE, OP_REDUCE_SCATTER, OP_ALLGATHER, OP_RS_AG, OP_DIST_OVERLAP, OP_DIST_ALLREDUCE, OP_DIST_SHARED,
       OP_COUNT };
static const char *const op_names[OP_COUNT] = {"allreduce", "reduce_scatter", "allgather", "rs_ag",
                                               "dist_overlap", "dist_allreduce", "dist_shared"};

typedef struct buffers {
    float *data, *part;   /* data: the whole message; part: 1/p of it */
    int count, slice;     /* floats; slice = count / p */
} buffers;

/* A model of dense layers whose gradient holds about `floats` floats:
 * layers of 512 x 512 (+ bias, 1 MiB each) above 1 MiB, one narrow layer
 * below, so that buckets split along layers as the trainer's do. */
static int synthetic_model(ars_model *model, double floats)
{
    enum { WIDE = 512 };
    ars_layer_spec specs[64];
    int layers = 1, in_dim;
    const double per_wide = (double)WIDE * (WIDE + 1);
    if (floats >= per_wide) {
        layers = (int)(floats / per_wide + 0.5);
        if (layers > 64) layers = 64;
        in_dim = WIDE;
        for (int i = 0; i < layers; i++) {
            ars_layer_spec_defaults(&specs[i], "dense");
            specs[i].units = WIDE;
        }
    } else {
        ars_layer_spec_defaults(&specs[0], "dense");
        specs[0].units = floats >= 32 ? 16 : 1;
        in_dim = (int)(floats / specs[0].units + 0.5) - 1;
        if (in_dim < 1) in_dim = 1;
    }
    return ars_model_create(model, specs, layers, ars_shape_vector(in_dim), 1);
}

/* The slowest rank's seconds per call of op over iters calls. */
static int time_op(int op, buffers *b, ars_dist *dist, ars_model *model, int iters, double *seconds)
{
    MPI_Barrier(MPI_COMM_WORLD);
    double start = now();
    for (int i = 0; i < iters; i++) {
        int rc = MPI_SUCCESS;
        switch (op) {
        case OP_ALLREDUCE:
            rc = MPI_Allreduce(MPI_IN_PLACE, b->data, b->count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            break;
        case OP_RS_AG:
        case OP_REDUCE_SCATTER:
            rc = MPI_Reduce_scatter_block(b->data, b->part, b->slice, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            if (op == OP_REDUCE_SCATTER || rc != MPI_SUCCESS) break;
            /* fall through: then the all-gather of the updated slices */
        case OP_ALLGATHER:
            rc = MPI_Allgather(b->part, b->slice, MPI_FLOAT, b->data, b->slice, MPI_FLOAT, MPI_COMM_WORLD);
            break;
        default:   /* arsenal's dist, as train_step drives it: the hook after each layer, then finish */
            for (int l = model->layer_count - 1; l >= 0; l--) TRY(ars_dist_backward_hook(dist, &model->layers[l]));
            TRY(ars_dist_finish_gradients(dist));
            break;
        }
        if (rc != MPI_SUCCESS) return ars_error(ARS_EMPI, "%s of %d floats failed", op_names[op], b->count);
    }
    double mine = (now() - start) / iters;
    MPI_Allreduce(&mine, seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return 0;
}

/* Iterations for about `budget` seconds, from a first call (rank 0's
 * choice, so that every rank makes the same number of calls). */
static int calibrate(int op, buffers *b, ars_dist *dist, ars_model *model, double budget, int *iters)
{
    double once;
    TRY(time_op(op, b, dist, model, 1, &once));
    int n = once > 0 ? (int)(budget / once) : 1000;
    if (n < 2) n = 2;
    if (n > 10000) n = 10000;
    MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD);
    *iters = n;
    return 0;
}

static const ars_grad_sync dist_modes[OP_COUNT] = {
    [OP_DIST_OVERLAP] = ARS_SYNC_OVERLAP, [OP_DIST_ALLREDUCE] = ARS_SYNC_ALLREDUCE, [OP_DIST_SHARED] = ARS_SYNC_SHARED};

static int measure_size(const options *o, double bytes, int single_host)
{
    buffers b = {0};
    b.slice = (int)(bytes / sizeof(float) / world_ + 0.5);
    if (b.slice < 1) b.slice = 1;
    b.count = b.slice * world_;
    b.data = calloc((size_t)b.count, sizeof(float));
    b.part = calloc((size_t)b.slice, sizeof(float));
    if (!b.data || !b.part) return ars_error(ARS_ENOMEM, "out of memory for %d floats", b.count);
    ars_model model;
    ars_dist dist;
    TRY(synthetic_model(&model, (double)b.count));
    TRY(ars_dist_create(&dist, MPI_COMM_WORLD));
    int iters[OP_COUNT] = {0};
    for (int rep = 0; rep < o->reps; rep++) {
        for (int op = 0; op < OP_COUNT; op++) {
            if (op == OP_DIST_SHARED && !single_host) continue;
            if (op >= OP_DIST_OVERLAP) {
                TRY(ars_dist_plan_buckets(&dist, &model, 4u << 20, 1u << 20, dist_modes[op]));
                memset(model.grads, 0, sizeof(float) * model.param_count);
            }
            if (rep == 0) TRY(calibrate(op, &b, &dist, &model, o->budget, &iters[op]));
            double seconds;
            TRY(time_op(op, &b, &dist, &model, iters[op], &seconds));
            const double sent = op >= OP_DIST_OVERLAP ? 4.0 * (double)model.param_count : 4.0 * b.count;
            if (rank_ == 0)
                printf("{\"bench\":\"comm\",\"label\":\"%s\",\"ranks\":%d,\"op\":\"%s\",\"rep\":%d,\"bytes\":%.0f,"
                       "\"iters\":%d,\"buckets\":%d,\"ms\":%.6f,\"algbw_gbps\":%.4f}\n",
                       o->label, world_, op_names[op], rep, sent, iters[op],
                       op >= OP_DIST_OVERLAP ? dist.bucket_count : 0, seconds * 1e3, sent / seconds * 1e-9);
        }
        if (rank_ == 0) fflush(stdout);
    }
    ars_dist_destroy(&dist);
    ars_model_destroy(&model);
    free(b.data);
    free(b.part);
    return 0;
}

static volatile double sink_;

/* About `units` x 1 ms of arithmetic on one core (a dependent chain the
 * compiler cannot drop). */
static void busy(long units, long per_unit)
{
    double x = 1.0;
    for (long u = 0; u < units; u++)
        for (long i = 0; i < per_unit; i++) x = x * 1.0000001 + 1e-9;
    sink_ = x;
}

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The slowest rank's seconds per slice of n slices, each followed by a
 * blocking all-reduce of 3 doubles when sync is set. */
static int time_slices(int n, long per_unit, int sync, double *seconds)
{
    double values[3] = {1, 2, 3};
    MPI_Barrier(MPI_COMM_WORLD);
    double start = now();
    for (int i = 0; i < n; i++) {
        busy(1, per_unit);
        if (sync && MPI_Allreduce(MPI_IN_PLACE, values, 3, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
            return ars_error(ARS_EMPI, "MPI_Allreduce (sync point) failed");
    }
    double mine = (now() - start) / n;
    MPI_Allreduce(&mine, seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return 0;
}

static int measure_sync_points(const options *o)
{
    /* rank 0 sizes a slice to 1 ms of its CPU time; every rank runs that */
    long per_unit = 100000;
    if (rank_ == 0) {
        double c = cpu_now();
        busy(1, per_unit);
        double took = cpu_now() - c;
        if (took > 0) per_unit = (long)(per_unit * 1e-3 / took);
        if (per_unit < 1000) per_unit = 1000;
    }
    MPI_Bcast(&per_unit, 1, MPI_LONG, 0, MPI_COMM_WORLD);
    for (int rep = 0; rep < o->reps; rep++) {
        double plain, synced;
        TRY(time_slices(o->sync_points, per_unit, 0, &plain));
        TRY(time_slices(o->sync_points, per_unit, 1, &synced));
        if (rank_ == 0)
            printf("{\"bench\":\"sync_point\",\"label\":\"%s\",\"ranks\":%d,\"rep\":%d,\"slices\":%d,"
                   "\"slice_ms\":%.6f,\"synced_slice_ms\":%.6f,\"sync_point_ms\":%.6f}\n",
                   o->label, world_, rep, o->sync_points, plain * 1e3, synced * 1e3, (synced - plain) * 1e3);
    }
    if (rank_ == 0) fflush(stdout);
    return 0;
}

static int run(const options *o)
{
    ars_dist probe;
    TRY(ars_dist_create(&probe, MPI_COMM_WORLD));
    int single_host;
    TRY(ars_dist_single_host(&probe, &single_host));
    ars_dist_destroy(&probe);
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    /* hosts: ranks that are the lowest of their shared-memory group */
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
    int local_rank, leaders = 0;
    MPI_Comm_rank(local, &local_rank);
    int leader = local_rank == 0;
    MPI_Allreduce(&leader, &leaders, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Comm_free(&local);
    /* the algorithms forced through the environment (bench/scaling.sh) */
    const char *dynamic = getenv("OMPI_MCA_coll_tuned_use_dynamic_rules");
    const char *forced = dynamic && strcmp(dynamic, "1") == 0 ? getenv("OMPI_MCA_coll_tuned_allreduce_algorithm") : NULL;
    const char *forced_nbc = getenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm");
    if (rank_ == 0) {
        printf("{\"bench\":\"comm_meta\",\"label\":\"%s\",\"ranks\":%d,\"hosts\":%d,\"single_host\":%s,"
               "\"rank0_host\":\"%s\",\"allreduce_algorithm\":\"%s\",\"iallreduce_algorithm\":\"%s\"}\n",
               o->label, world_, leaders, single_host ? "true" : "false", host, forced ? forced : "default",
               forced_nbc ? forced_nbc : "default");
        fflush(stdout);
    }
    if (o->sync_points > 0) TRY(measure_sync_points(o));
    for (double bytes = o->min_bytes; bytes <= o->max_bytes * 1.0001; bytes *= o->factor)
        TRY(measure_size(o, bytes, single_host));
    return 0;
}

static int parse(int argc, char **argv, options *o)
{
    *o = (options){.min_bytes = 4, .max_bytes = 32 << 20, .factor = 4, .budget = 0.05, .reps = 3, .sync_points = 0,
                   .label = "run"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return ars_error(ARS_EINVAL, "%s needs a value (options: --min-bytes --max-bytes --factor "
                                             "--budget --reps --sync-points --label)", a);
        i++;
        if (strcmp(a, "--min-bytes") == 0) o->min_bytes = atof(v);
        else if (strcmp(a, "--max-bytes") == 0) o->max_bytes = atof(v);
        else if (strcmp(a, "--factor") == 0) o->factor = atof(v);
        else if (strcmp(a, "--budget") == 0) o->budget = atof(v);
        else if (strcmp(a, "--reps") == 0) o->reps = atoi(v);
        else if (strcmp(a, "--sync-points") == 0) o->sync_points = atoi(v);
        else if (strcmp(a, "--label") == 0) o->label = v;
        else return ars_error(ARS_EINVAL, "unknown option %s", a);
    }
    if (!(o->min_bytes >= 4) || !(o->max_bytes >= o->min_bytes) || !(o->factor > 1) || !(o->budget > 0) ||
        o->reps < 1 || o->sync_points < 0)
        return ars_error(ARS_EINVAL, "need --min-bytes >= 4, --max-bytes >= --min-bytes, --factor > 1, "
                                     "--budget > 0, --reps >= 1, --sync-points >= 0");
    if (strpbrk(o->label, "\"\\")) return ars_error(ARS_EINVAL, "--label must not hold quotes or backslashes");
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
        fprintf(stderr, "bench_comm (rank %d): %s\n", rank_, ars_error_message());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Finalize();
    return 0;
}
