/* trainer_shard: what the history needs of a sharded step (ZeRO-1,
 * [run] optimizer_shard). Each rank then holds the summed gradient of its
 * slice only, and has updated only that slice: the per-layer norms and the
 * histograms are computed over each rank's part of a layer and summed
 * over ranks, so the history is the unsharded one (to float rounding). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/clip.h"
#include "arsenal/error.h"
#include "trainer.h"

/* The part of layer l inside this rank's slice: [*begin, *end). */
static void layer_in_slice(const ars_trainer *t, int l, size_t *begin, size_t *end)
{
    *begin = t->layer_offsets[l];
    *end = *begin + t->layer_sizes[l];
    if (*begin < t->shard_lo) *begin = t->shard_lo;
    if (*end > t->shard_hi) *end = t->shard_hi;
    if (*end < *begin) *end = *begin;
}

int ars_trainer_layer_norms(ars_trainer *t, const float *params_before, double *grad_norm, double *update_norm)
{
    const int layers = t->model.layer_count, width = params_before ? 2 : 1;
    double *sums = calloc((size_t)layers * (size_t)width + 1, sizeof(double));
    if (!sums) return ars_error(ARS_ENOMEM, "trainer: out of memory for %d layer norms", layers);
    for (int l = 0; l < layers; l++) {
        size_t begin, end;
        layer_in_slice(t, l, &begin, &end);
        sums[(size_t)l * (size_t)width] = ars_sum_squares(t->model.grads + begin, end - begin);
        if (!params_before) continue;
        double update = 0;
        const float *before = params_before - t->shard_lo;   /* params_before holds [shard_lo, shard_hi) */
        for (size_t i = begin; i < end; i++) {
            double d = (double)t->model.params[i] - before[i];
            update += d * d;
        }
        sums[(size_t)l * (size_t)width + 1] = update;
    }
    /* one small all-gather for every layer's figures */
    ars_watchdog_enter(t->watchdog, t->step, "per-layer norms all-gather (optimizer_shard)");
    int rc = ars_dist_sum_in_rank_order(t->dist, sums, layers * width);
    ars_watchdog_leave(t->watchdog);
    for (int l = 0; !rc && l < layers; l++) {
        grad_norm[l] = sqrt(sums[(size_t)l * (size_t)width]);
        if (params_before && update_norm) update_norm[l] = sqrt(sums[(size_t)l * (size_t)width + 1]);
    }
    free(sums);
    return rc;
}

int ars_trainer_add_histograms(ars_trainer *t)
{
    ars_history *h = &t->history;
    if (!t->shard)
        return ars_history_add_histograms(h, t->step, t->model.grads, t->layer_offsets, t->layer_sizes);
    if (h->bins <= 0) return 0;
    const int layers = t->model.layer_count;
    size_t *offsets = malloc(sizeof(size_t) * (size_t)(layers + 1)), *sizes = malloc(sizeof(size_t) * (size_t)(layers + 1));
    int rc = offsets && sizes ? 0 : ars_error(ARS_ENOMEM, "trainer: out of memory for %d layers", layers);
    for (int l = 0; !rc && l < layers; l++) {
        size_t begin, end;
        layer_in_slice(t, l, &begin, &end);
        offsets[l] = begin;
        sizes[l] = end - begin;
    }
    /* this rank's counts, then the sum of every rank's in their place */
    if (!rc) rc = ars_history_add_histograms(h, t->step, t->model.grads, offsets, sizes);
    free(offsets);
    free(sizes);
    if (rc) return rc;
    const size_t block = (size_t)layers * (size_t)h->bins;
    ars_watchdog_enter(t->watchdog, t->step, "gradient histograms all-reduce (optimizer_shard)");
    rc = ars_dist_allreduce_uint32(t->dist, h->hist_counts + (h->hist_count - 1) * block, (int)block);
    ars_watchdog_leave(t->watchdog);
    return rc;
}
