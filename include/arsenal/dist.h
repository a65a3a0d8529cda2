/* dist: everything MPI. Parameter broadcast, the gradient sum over ranks
 * (one all-reduce, bucketed all-reduces overlapping backward, or a
 * reduction in shared memory when every rank is on one host),
 * SyncBatchNorm reductions, the parameter consistency checksum, and rank-0
 * helpers. A NULL dist, or one
 * of world size 1, makes every collective a no-op, so single-process code
 * and tests need no MPI_Init. */
#ifndef ARSENAL_DIST_H
#define ARSENAL_DIST_H

#include <stddef.h>
#include <stdint.h>

#include <mpi.h>

struct ars_model;
struct ars_layer;

/* How the gradient is summed over ranks (run file: [run] gradient_sync). */
typedef enum ars_grad_sync {
    ARS_SYNC_AUTO = -1,      /* run file only: shared memory on one host, overlap across hosts */
    ARS_SYNC_ALLREDUCE = 0,  /* one MPI_Allreduce after backward */
    ARS_SYNC_OVERLAP = 1,    /* each bucket's MPI_Iallreduce starts during backward */
    ARS_SYNC_SHARED = 2      /* gradients in one shared-memory window; each rank sums a slice */
} ars_grad_sync;

const char *ars_grad_sync_name(ars_grad_sync mode);

typedef struct ars_bucket {
    size_t offset, count;     /* slice of the flat gradient buffer */
    int first_layer;          /* lowest layer index whose gradient is in it */
    MPI_Request request;
    int started;
} ars_bucket;

struct ars_dist {
    MPI_Comm comm;
    int rank, size;
    ars_grad_sync mode;       /* as planned by ars_dist_plan_buckets (never auto) */
    char sync_note[200];      /* why that mode, when it was chosen for auto */
    ars_bucket *buckets;
    int bucket_count;
    float *grads;             /* the model's flat gradient buffer */
    size_t grad_count;
    /* ARS_SYNC_SHARED: every rank's gradient buffer lives in one segment */
    void *segment;
    size_t segment_bytes;
    float **peer_grads;       /* each rank's buffer, mapped here */
    double grad_sum_squares;  /* of the summed gradient, computed by the reduction */
    int sum_squares_ready;    /* ... for the step just finished */
    double sync_seconds;      /* time spent waiting in gradient sync (last step) */
    MPI_Request side_request; /* ars_dist_start_side_sum's, completed with the gradients */
    /* [run] optimizer_shard (ZeRO-1), set before ars_dist_plan_buckets: a
     * step ends with each rank holding the summed gradient of its slice
     * only (ars_dist_slice) */
    int shard;
    int *slice_counts, *slice_offsets;   /* per rank, for the reduce-scatter and the all-gathers */
    double slice_sum_squares;            /* of this rank's summed slice, the step just finished */
    double *gathered;                    /* per rank: for sums added in rank order */
};
typedef struct ars_dist ars_dist;

/* comm is duplicated. Errors are returned (MPI_ERRORS_RETURN), not fatal. */
int ars_dist_create(ars_dist *dist, MPI_Comm comm);
void ars_dist_destroy(ars_dist *dist);

static inline int ars_dist_active(const ars_dist *dist) { return dist && dist->size > 1; }

/* In-place sums over ranks; no-ops without an active dist. */
int ars_dist_allreduce_double(const ars_dist *dist, double *values, int count);
int ars_dist_allreduce_float(const ars_dist *dist, float *values, size_t count);
/* Max over ranks of an int (e.g. "did any rank fail?"). */
int ars_dist_allreduce_max_int(const ars_dist *dist, int *value);
int ars_dist_broadcast_bytes(const ars_dist *dist, void *bytes, size_t size, int root);
int ars_dist_broadcast_float(const ars_dist *dist, float *values, size_t count, int root);

/* How a failure is known across ranks (ars_train_result.agreed). */
enum {
    ARS_AGREED_NONE = 0,   /* on this rank only: the others may wait in a collective (abort) */
    ARS_AGREED = 1,        /* every rank knows; the failing ranks report their errors */
    ARS_AGREED_SAME = 2    /* every rank holds the same error: rank 0 alone reports it */
};

/* Every rank learns whether any rank failed (rc != 0), in one all-reduce,
 * so none is left waiting in a collective. Returns 0 when none failed; rc
 * on the failing ranks and ARS_EPEER on the others, *agreed = ARS_AGREED,
 * or ARS_AGREED_SAME when every rank failed with the same code and message;
 * ARS_EMPI (*agreed = ARS_AGREED_NONE) when the all-reduce itself fails.
 * Without an active dist: rc, ARS_AGREED_SAME. */
int ars_dist_agree(const ars_dist *dist, int rc, int *agreed);

/* *single = 1 when every rank runs on this rank's host (shared memory);
 * 1 without an active dist. Collective. */
int ars_dist_single_host(const ars_dist *dist, int *single);

/* Prepares the gradient sum of mode. Splits the model's gradient buffer
 * into buckets of about bucket_bytes (the first one small,
 * first_bucket_bytes), along layer boundaries, in backward order.
 * ARS_SYNC_SHARED (every rank on one host, else an error) moves the model's
 * gradient buffer into a shared-memory segment that the dist owns until
 * the next plan or ars_dist_destroy. ARS_SYNC_AUTO: shared memory on one
 * host (one all-reduce if /dev/shm cannot hold it), overlap across hosts;
 * dist->mode and dist->sync_note say what was chosen. Collective. */
int ars_dist_plan_buckets(ars_dist *dist, struct ars_model *model, size_t bucket_bytes,
                          size_t first_bucket_bytes, ars_grad_sync mode);

/* Rank rank's slice of count values split over ranks for the sharded
 * optimizer: [*lo, *hi), whole blocks of 16 floats (a cache line, the
 * shared-memory reduction's slices), in rank order; the last ranks' may be
 * shorter or empty. Pure arithmetic: the same on every rank. */
void ars_dist_slice(size_t count, int ranks, int rank, size_t *lo, size_t *hi);

/* Backward hook (ars_backward_hook): starts each bucket's non-blocking
 * all-reduce once backward has passed its first layer. */
int ars_dist_backward_hook(void *dist, const struct ars_layer *layer);

/* Starts the sum over ranks of a few doubles (the step's loss) without
 * waiting: it travels during backward instead of costing a blocking
 * all-reduce after it. values must stay untouched until
 * ars_dist_finish_gradients, which completes it. */
int ars_dist_start_side_sum(ars_dist *dist, double *values, int count);

/* Completes the gradient sum (the buckets, one all-reduce, or the
 * shared-memory reduction) and a pending side sum: afterwards every rank
 * holds the summed gradient. Sharded: a reduce-scatter (MPI_Reduce_scatter,
 * or each rank summing its slice in shared memory) leaves only this rank's
 * slice summed, at its place in the buffer (the rest holds this rank's own
 * gradient); then one all-gather of each rank's slice sum of squares gives
 * the global one (ars_dist_grad_sum_squares). */
int ars_dist_finish_gradients(ars_dist *dist);

/* The sum of squares of the step's (summed) gradient, model->grads: the
 * shared-memory reduction's own (computed while it summed, bitwise the same
 * on every rank) when it ran for this step, on one rank the one backward
 * computed layer by layer, else one pass over the gradient. Call it after
 * ars_dist_finish_gradients and before anything changes the gradient. */
double ars_dist_grad_sum_squares(ars_dist *dist, const struct ars_model *model);

/* Sharded (dist->shard): every rank's slice of values (ars_dist_slice of
 * the gradient's count) to every rank, in place (MPI_Allgatherv): after
 * each rank has updated its slice of the parameters. Collective. */
int ars_dist_gather_slices(const ars_dist *dist, float *values);

/* Sharded: rank 0's full buffer (count = the planned gradient count) from
 * every rank's slice, and back (MPI_Gatherv / MPI_Scatterv): full is read
 * or written on rank 0 only (may be NULL elsewhere); slice holds this
 * rank's part. For checkpoints, which keep the unsharded format. */
int ars_dist_gather_to_root(const ars_dist *dist, const float *slice, float *full);
/* The same in place: every rank's slice of values (the planned count) into
 * rank 0's values; the other ranks' buffers are read only. */
int ars_dist_gather_in_place_to_root(const ars_dist *dist, float *values);
int ars_dist_scatter_from_root(const ars_dist *dist, const float *full, float *slice);

/* In-place sums over ranks of a few doubles, added in rank order after an
 * all-gather: the same bits on every rank whatever MPI's algorithm. */
int ars_dist_sum_in_rank_order(ars_dist *dist, double *values, int count);

/* In-place sums over ranks of counters (gradient histograms). */
int ars_dist_allreduce_uint32(const ars_dist *dist, uint32_t *values, int count);

/* Checksum of a float buffer (bitwise, order-sensitive). */
uint64_t ars_checksum(const float *values, size_t count);

/* Compares checksums across ranks; on mismatch an error naming the step
 * and the ranks that differ from rank 0. */
int ars_dist_check_consistent(const ars_dist *dist, const float *values, size_t count,
                              int64_t step, const char *what);

#endif
