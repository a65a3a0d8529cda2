/* replay: one step of a run recomputed on one process (replay.h). It
 * follows train.c's step (forward, loss, backward, the gradient sum, the
 * non-finite guard, clipping, the optimizer) on the checkpoint's state,
 * shard by shard, without MPI. */
#define _POSIX_C_SOURCE 200809L
#include "arsenal/replay.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/ckpt.h"
#include "arsenal/clip.h"
#include "arsenal/config.h"
#include "arsenal/data.h"
#include "arsenal/error.h"
#include "arsenal/model.h"
#include "arsenal/optim.h"
#include "arsenal/train.h"

typedef struct replayer {
    const char *path;
    ars_ckpt_info info;
    ars_run_config run;
    ars_layer_spec *specs;
    int spec_count;
    ars_dataset train, test;
    ars_augment augment;
    int image_shape[3];
    int world, global_batch, shards, capacity;
    ars_sampler *samplers;     /* [world]: rank r's share of each step */
    ars_batch *batches;
    ars_batch global;          /* one pass: every rank's rows, in rank order */
    ars_model model;
    ars_optimizer opt;
    float *sum, *before, *dlogits;
    int64_t total_steps;
} replayer;

/* A BatchNorm synchronized over ranks computes its statistics over every
 * shard: a shard alone does not reproduce it. */
static int crosses_ranks(const replayer *r)
{
    if (r->world == 1) return 0;
    for (int i = 0; i < r->spec_count; i++)
        if ((strcmp(r->specs[i].kind, "batchnorm") == 0 || strcmp(r->specs[i].kind, "batchnorm2d") == 0) &&
            r->specs[i].sync)
            return 1;
    return 0;
}

static int load(replayer *r)
{
    TRY(ars_ckpt_validate(r->path));
    TRY(ars_ckpt_read_info(r->path, &r->info));
    ars_config config;
    int rc = ars_config_load_string(&config, r->info.config_text ? r->info.config_text : "", "/config");
    if (!rc) rc = ars_config_expand(&config);
    if (!rc) rc = ars_run_config_load(&config, &r->run, &r->specs, &r->spec_count);
    ars_config_free(&config);
    if (rc) return ars_error_context(rc, "%s: its run file (/config)", r->path);
    if (r->run.accumulate > 1)
        return ars_error(ARS_EINVAL, "%s: the run accumulated %d micro-batches per step ([run] accumulate); replay "
                         "recomputes steps of one batch only", r->path, r->run.accumulate);
    r->world = r->info.world_size > 0 ? r->info.world_size : 1;
    r->global_batch = r->info.global_batch;
    if (r->global_batch < r->world)
        return ars_error(ARS_EFORMAT, "%s: global batch %d over %d ranks (corrupted file)", r->path, r->global_batch,
                         r->world);
    TRY(ars_load_run_data(&r->run, 0, r->run.train_limit, &r->train, &r->test));
    r->augment.crop = r->run.augment_crop;
    r->augment.flip = r->run.augment_flip;
    if ((r->augment.crop || r->augment.flip) &&
        ars_dataset_image_shape(&r->train, &r->image_shape[0], &r->image_shape[1], &r->image_shape[2]))
        return ars_error_context(ARS_EINVAL, "%s: augmentation without images", r->path);
    r->shards = crosses_ranks(r) ? 1 : r->world;
    r->samplers = calloc((size_t)r->world, sizeof *r->samplers);
    r->batches = calloc((size_t)r->world, sizeof *r->batches);
    if (!r->samplers || !r->batches) return ars_error(ARS_ENOMEM, "replay: out of memory");
    for (int k = 0; k < r->world; k++) {
        TRY(ars_sampler_create(&r->samplers[k], &r->train, r->global_batch, k, r->world, r->run.seed, 1));
        TRY(ars_batch_alloc(&r->batches[k], &r->samplers[k]));
    }
    const int per_rank = (r->global_batch + r->world - 1) / r->world;
    r->capacity = r->shards == 1 && r->world > 1 ? r->global_batch : per_rank;
    if (r->shards == 1 && r->world > 1) {
        ars_sampler whole;
        TRY(ars_sampler_create(&whole, &r->train, r->global_batch, 0, 1, r->run.seed, 1));
        rc = ars_batch_alloc(&r->global, &whole);
        ars_sampler_destroy(&whole);
        TRY(rc);
    }
    const int steps_per_epoch = ars_sampler_steps_per_epoch(&r->samplers[0]);
    if (r->info.steps_per_epoch && steps_per_epoch != r->info.steps_per_epoch)
        return ars_error(ARS_EFORMAT, "%s: %d steps per epoch, but its data gives %d (another training set?)", r->path,
                         r->info.steps_per_epoch, steps_per_epoch);
    r->total_steps = r->run.max_steps > 0 ? r->run.max_steps : (int64_t)r->run.epochs * steps_per_epoch;
    if (r->run.schedule.total_steps == 0) r->run.schedule.total_steps = r->total_steps;
    TRY(ars_model_create(&r->model, r->specs, r->spec_count, ars_dataset_shape(&r->train), r->capacity));
    TRY(ars_optimizer_create(&r->opt, &r->run.optim, r->model.param_count));
    TRY(ars_ckpt_load(r->path, &r->model, &r->opt));
    const size_t n = r->model.param_count ? r->model.param_count : 1;
    r->sum = malloc(sizeof(float) * n);
    r->before = malloc(sizeof(float) * n);
    r->dlogits = calloc((size_t)r->capacity * (size_t)r->model.out_dim, sizeof(float));
    return r->sum && r->before && r->dlogits ? 0 : ars_error(ARS_ENOMEM, "replay: out of memory");
}

/* Rank k's rows of step (or every rank's, concatenated in rank order). */
static int fill_shard(replayer *r, int shard, int epoch, int in_epoch, ars_batch **out)
{
    if (r->shards == r->world) {
        ars_batch *b = &r->batches[shard];
        TRY(ars_sampler_fill(&r->samplers[shard], epoch, in_epoch, b));
        if (r->augment.crop || r->augment.flip)
            TRY(ars_augment_apply(&r->augment, r->run.seed, epoch, b->x, b->rows, b->ids, r->image_shape[0],
                                  r->image_shape[1], r->image_shape[2]));
        *out = b;
        return 0;
    }
    ars_batch *g = &r->global;
    g->rows = 0;
    for (int k = 0; k < r->world; k++) {
        ars_batch *b = &r->batches[k];
        TRY(ars_sampler_fill(&r->samplers[k], epoch, in_epoch, b));
        if (r->augment.crop || r->augment.flip)
            TRY(ars_augment_apply(&r->augment, r->run.seed, epoch, b->x, b->rows, b->ids, r->image_shape[0],
                                  r->image_shape[1], r->image_shape[2]));
        memcpy(g->x + (size_t)g->rows * (size_t)g->dim, b->x, sizeof(float) * (size_t)b->rows * (size_t)b->dim);
        if (b->labels) memcpy(g->labels + g->rows, b->labels, sizeof(int32_t) * (size_t)b->rows);
        if (b->targets)
            memcpy(g->targets + (size_t)g->rows * (size_t)g->target_dim, b->targets,
                   sizeof(float) * (size_t)b->rows * (size_t)b->target_dim);
        memcpy(g->ids + g->rows, b->ids, sizeof(uint32_t) * (size_t)b->rows);
        g->rows += b->rows;
        g->global_rows = b->global_rows;
    }
    *out = g;
    return 0;
}

static void capture_layers(const replayer *r, ars_replay *out)
{
    for (int l = 0; l < r->model.layer_count; l++) {
        const ars_layer *layer = &r->model.layers[l];
        ars_replay_layer *o = &out->layers[l];
        snprintf(o->name, sizeof o->name, "%s", layer->name);
        o->output_grad_norm = layer->output_grad_norm;
        o->is_activation = layer->kind->activation != ARS_ACT_NONE;
        o->act_mean = o->act_std = o->act_saturated = o->act_dead = NAN;
        if (o->is_activation && layer->stats.valid) {
            o->act_mean = layer->stats.mean;
            o->act_std = layer->stats.std;
            o->act_saturated = layer->stats.saturated;
            o->act_dead = layer->stats.dead;
        }
    }
}

/* One step as train.c's train_step does it; out (at the replayed step) gets its figures. */
static int step_once(replayer *r, int64_t step, ars_replay *out)
{
    const int steps_per_epoch = ars_sampler_steps_per_epoch(&r->samplers[0]);
    const int epoch = (int)(step / steps_per_epoch), in_epoch = (int)(step % steps_per_epoch);
    const int probe = out || step % r->run.probe_every == 0;
    const size_t n = r->model.param_count;
    double loss_sum = 0;
    int global_rows = 0;
    for (int s = 0; s < r->shards; s++) {
        ars_batch *b;
        TRY(fill_shard(r, s, epoch, in_epoch, &b));
        ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = b->rows, .global_rows = b->global_rows,
                         .sample_ids = b->ids, .seed = r->run.seed, .step = (uint64_t)step, .probe = probe};
        TRY(ars_model_forward(&r->model, &pass, b->x));
        double shard_loss = 0;
        TRY(ars_loss_compute(r->run.loss, ars_model_output(&r->model), b->rows, r->model.out_dim, b->labels,
                             b->targets, b->global_rows, &shard_loss, r->dlogits));
        TRY(ars_model_backward(&r->model, &pass, r->dlogits, NULL, NULL));
        loss_sum += shard_loss;
        global_rows = b->global_rows;
        if (s == 0) {
            memcpy(r->sum, r->model.grads, sizeof(float) * n);
            if (out) capture_layers(r, out);   /* the history's activation figures are rank 0's */
        } else {
            for (size_t i = 0; i < n; i++) r->sum[i] += r->model.grads[i];
        }
    }
    memcpy(r->model.grads, r->sum, sizeof(float) * n);
    const double loss = loss_sum / global_rows;
    const double norm = sqrt(ars_sum_squares(r->model.grads, n));
    const double lr = ars_schedule_lr(&r->run.schedule, r->run.optim.lr, r->opt.step);
    double clip_scale = 1;
    if (out) {
        out->loss = loss;
        out->grad_norm = norm;
        out->lr = lr;
        out->epoch = epoch;
        for (int l = 0; l < r->model.layer_count; l++) {
            const ars_layer *layer = &r->model.layers[l];
            out->layers[l].has_params = layer->param_size > 0;
            out->layers[l].grad_norm = ars_l2_norm(layer->grad, layer->param_size);
        }
    }
    if (!isfinite(norm) || !isfinite(loss)) {   /* the run skipped this update */
        if (out) {
            out->nonfinite = 1;
            out->clip_scale = 1;
        }
        return 0;
    }
    if (r->run.clip_norm > 0) clip_scale = ars_clip_scale_for_norm(norm, r->run.clip_norm);
    float grad_scale = (float)clip_scale;
    const int histogram = r->run.histogram_every && step % r->run.histogram_every == 0;
    if (grad_scale < 1 && (probe || histogram || r->run.clip_value > 0)) {
        ars_scale(r->model.grads, n, grad_scale);
        grad_scale = 1;
    }
    if (r->run.clip_value > 0) ars_clip_by_value(r->model.grads, n, r->run.clip_value);
    memcpy(r->before, r->model.params, sizeof(float) * n);
    ars_optimizer_step_scaled(&r->opt, r->model.params, r->model.grads, grad_scale, (float)lr);
    if (!out) return 0;
    out->clip_scale = clip_scale;
    for (int l = 0; l < r->model.layer_count; l++) {
        const ars_layer *layer = &r->model.layers[l];
        ars_replay_layer *o = &out->layers[l];
        const size_t size = layer->param_size;
        o->grad_norm_applied = ars_l2_norm(layer->grad, size);
        o->weight_norm = ars_l2_norm(layer->param, size);
        double update = 0;
        for (size_t i = 0; i < size; i++) {
            double d = (double)layer->param[i] - r->before[layer->param_offset + i];
            update += d * d;
        }
        o->update_ratio = o->weight_norm > 0 ? sqrt(update) / o->weight_norm : 0;
    }
    return 0;
}

static void replayer_free(replayer *r)
{
    for (int k = 0; r->samplers && r->batches && k < r->world; k++) {
        ars_batch_free(&r->batches[k]);
        ars_sampler_destroy(&r->samplers[k]);
    }
    free(r->samplers);
    free(r->batches);
    if (r->global.x) ars_batch_free(&r->global);
    ars_optimizer_destroy(&r->opt);
    ars_model_destroy(&r->model);
    ars_dataset_free(&r->train);
    ars_dataset_free(&r->test);
    free(r->specs);
    free(r->sum);
    free(r->before);
    free(r->dlogits);
    ars_ckpt_info_free(&r->info);
}

int ars_replay_step(const char *path, int64_t step, ars_replay *out, FILE *progress)
{
    memset(out, 0, sizeof *out);
    replayer r;
    memset(&r, 0, sizeof r);
    r.path = path;
    int rc = load(&r);
    if (!rc && step < r.info.step)
        rc = ars_error(ARS_EINVAL, "--step %lld: %s was written after %lld steps, so it holds the state before step "
                       "%lld (steps count from 0, as /history/step): it replays steps %lld to %lld; for an earlier "
                       "step take an earlier checkpoint ([run] ckpt_every)", (long long)step, path,
                       (long long)r.info.step, (long long)r.info.step, (long long)r.info.step,
                       (long long)r.total_steps - 1);
    if (!rc && step >= r.total_steps)
        rc = ars_error(ARS_EINVAL, "--step %lld: the run of %s has %lld steps (0 to %lld)", (long long)step, path,
                       (long long)r.total_steps, (long long)r.total_steps - 1);
    if (!rc) {
        out->layers = calloc((size_t)r.model.layer_count, sizeof *out->layers);
        out->layer_count = r.model.layer_count;
        if (!out->layers) rc = ars_error(ARS_ENOMEM, "replay: out of memory");
    }
    for (int64_t k = r.info.step; !rc && k < step; k++) {
        rc = step_once(&r, k, NULL);
        if (!rc && progress && (k - r.info.step + 1) % 100 == 0) {
            fprintf(progress, "replay: trained step %lld of %lld on the way to step %lld\n", (long long)k,
                    (long long)step - 1, (long long)step);
            fflush(progress);
        }
    }
    if (!rc) rc = step_once(&r, step, out);
    if (!rc) {
        out->step = step;
        out->from_step = r.info.step;
        out->world = r.world;
        out->global_batch = r.global_batch;
        out->shard_wise = r.shards == r.world;
    }
    replayer_free(&r);
    if (rc) ars_replay_free(out);
    return rc;
}

void ars_replay_free(ars_replay *r)
{
    free(r->layers);
    r->layers = NULL;
    r->layer_count = 0;
}
