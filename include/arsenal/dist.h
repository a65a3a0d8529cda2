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

/* Splits the model's gradient buffer into buckets of about bucket_bytes
 * (the first one small, first_bucket_bytes), along layer boundaries, in
 * backward order. */
int ars_dist_plan_buckets(ars_dist *dist, struct ars_model *model, size_t bucket_bytes,
                          size_t first_bucket_bytes, int overlap);

/* Backward hook (ars_backward_hook): starts each bucket's non-blocking
 * all-reduce once backward has passed its first layer. */
int ars_dist_backward_hook(void *dist, const struct ars_layer *layer);

/* Completes all buckets (or does one blocking all-reduce when overlap is
 * off): afterwards every rank holds the summed gradient. */
int ars_dist_finish_gradients(ars_dist *dist);

/* Checksum of a float buffer (bitwise, order-sensitive). */
uint64_t ars_checksum(const float *values, size_t count);

/* Compares checksums across ranks; on mismatch an error naming the step
 * and the ranks that differ from rank 0. */
int ars_dist_check_consistent(const ars_dist *dist, const float *values, size_t count,
                              int64_t step, const char *what);

#endif
