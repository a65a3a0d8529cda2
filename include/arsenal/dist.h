/* dist: everything MPI. Parameter broadcast, the bucketed gradient
 * all-reduce that overlaps backward, SyncBatchNorm reductions, the
 * parameter consistency checksum, and rank-0 helpers. A NULL dist, or one
 * of world size 1, makes every collective a no-op, so single-process code
 * and tests need no MPI_Init. */
#ifndef ARSENAL_DIST_H
#define ARSENAL_DIST_H

#include <stddef.h>
#include <stdint.h>

#include <mpi.h>

struct ars_model;
struct ars_layer;

typedef struct ars_bucket {
    size_t offset, count;     /* slice of the flat gradient buffer */
    int first_layer;          /* lowest layer index whose gradient is in it */
    MPI_Request request;
    int started;
} ars_bucket;

struct ars_dist {
    MPI_Comm comm;
    int rank, size;
    int overlap;              /* 1: start a bucket's all-reduce during backward */
    ars_bucket *buckets;
    int bucket_count;
    float *grads;             /* the model's flat gradient buffer */
    double sync_seconds;      /* time spent waiting in gradient sync (last step) */
    MPI_Request side_request; /* ars_dist_start_side_sum's, completed with the gradients */
};
typedef struct ars_dist ars_dist;

/* comm is duplicated. Errors are returned (MPI_ERRORS_RETURN), not fatal. */
int ars_dist_create(ars_dist *dist, MPI_Comm comm);
void ars_dist_destroy(ars_dist *dist);

static inline int ars_dist_active(const ars_dist *dist) { return dist && dist->size > 1; }

/* In-place sums over ranks; no-ops without an active dist. */
int ars_dist_allreduce_double(const ars_dist *dist, double *values, int count);
int ars_dist_allreduce_float(const ars_dist *dist, float *values, size_t count);
int ars_dist_allreduce_int64(const ars_dist *dist, int64_t *values, int count);
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

/* Splits the model's gradient buffer into buckets of about bucket_bytes
 * (the first one small, first_bucket_bytes), along layer boundaries, in
 * backward order. */
int ars_dist_plan_buckets(ars_dist *dist, struct ars_model *model, size_t bucket_bytes,
                          size_t first_bucket_bytes, int overlap);

/* Backward hook (ars_backward_hook): starts each bucket's non-blocking
 * all-reduce once backward has passed its first layer. */
int ars_dist_backward_hook(void *dist, const struct ars_layer *layer);

/* Starts the sum over ranks of a few doubles (the step's loss) without
 * waiting: it travels during backward instead of costing a blocking
 * all-reduce after it. values must stay untouched until
 * ars_dist_finish_gradients, which completes it. */
int ars_dist_start_side_sum(ars_dist *dist, double *values, int count);

/* Completes all buckets (or does one blocking all-reduce when overlap is
 * off) and a pending side sum: afterwards every rank holds the summed
 * gradient. */
int ars_dist_finish_gradients(ars_dist *dist);

/* Checksum of a float buffer (bitwise, order-sensitive). */
uint64_t ars_checksum(const float *values, size_t count);

/* Compares checksums across ranks; on mismatch an error naming the step
 * and the ranks that differ from rank 0. */
int ars_dist_check_consistent(const ars_dist *dist, const float *values, size_t count,
                              int64_t step, const char *what);

#endif
