/* train: the data-parallel training loop (see train.h for one step's data
 * flow). Every rank runs the same code on its shard; after the gradient
 * all-reduce all ranks hold the same gradient, so the clip decision, the
 * non-finite guard and the optimizer update agree without more messages.
 * Rank 0 alone prints, writes metrics and checkpoints. */
#define _POSIX_C_SOURCE 200809L
#include "arsenal/train.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arsenal/clip.h"
#include "arsenal/data.h"
#include "arsenal/error.h"
#include "arsenal/history.h"
#include "arsenal/init.h"
#include "arsenal/memory.h"
#include "arsenal/model.h"
#include "cure.h"
#include "gemm.h"
#include "gemm_bf16.h"
#include "trainer.h"

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* This process's CPU time: on a shared machine, steadier than wall time. */
static double cpu_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The synthetic sets as ars_load_run_data makes them. */
enum { BLOBS_CLASSES = 4, BLOBS_DIM = 16, TEACHER_DIM = 16, TEACHER_HIDDEN = 32, TEACHER_OUT = 4 };

/* Refuses a synthetic set that cannot fit, before generating it. Every
 * rank holds all of it: the generated train + test samples, the test split
 * copied out of them, and the training sampler's permutation. */
static int check_synthetic_fits(const ars_run_config *run)
{
    double dim = 0, extra = 4;   /* features, and a label (or targets) per sample */
    if (strcmp(run->data, "spirals") == 0) dim = 2;
    else if (strcmp(run->data, "blobs") == 0) dim = BLOBS_DIM;
    else if (strcmp(run->data, "adding") == 0) dim = 2.0 * run->seq_len;   /* one target */
    else if (strcmp(run->data, "copy") == 0) dim = run->seq_len;
    else dim = TEACHER_DIM, extra = 4.0 * TEACHER_OUT;
    const double per_sample = 4 * dim + extra;
    const double total = (double)run->train_samples + run->test_samples;
    const double bytes = (total + run->test_samples) * per_sample + 4.0 * run->train_samples;
    ars_memory_budget budget;
    ars_memory_budget_get(&budget);
    if (bytes <= budget.bytes) return 0;
    char where[300], need[32], left[32];
    ars_memory_budget_describe(&budget, where, sizeof where);
    return ars_error(ARS_ENOMEM, "[run] data = %s with train_samples = %d and test_samples = %d needs about %s per "
                     "rank (%.0f samples of %.0f bytes, the test split copied once more) but this rank has %s (%s)",
                     run->data, run->train_samples, run->test_samples, ars_memory_format(bytes, need, sizeof need),
                     total, per_sample, ars_memory_format(budget.bytes, left, sizeof left), where);
}

int ars_load_run_data(const ars_run_config *run, int rank, int train_limit, ars_dataset *train, ars_dataset *test)
{
    return ars_load_run_data_stats(run, rank, train_limit, train, test, NULL, NULL);
}

int ars_load_run_data_stats(const ars_run_config *run, int rank, int train_limit, ars_dataset *train,
                            ars_dataset *test, double *applied_mean, double *applied_std)
{
    int rc = 0;
    /* NaN until known: a path that standardizes without saying how leaves
     * them unknown (the checkpoint then stores none) rather than wrong */
    if (applied_mean) *applied_mean = NAN;
    if (applied_std) *applied_std = NAN;
    /* a user's files (src/data/user_data.c): loading, validation split, checks and standardization there */
    if (ars_user_format_of(run->data) != ARS_USER_NONE)
        return ars_user_data_load_run(run, rank, train_limit, train, test, applied_mean, applied_std);
    if (strcmp(run->data, "fashion-mnist") == 0 || strcmp(run->data, "mnist") == 0) {
        rc = ars_mnist_load(run->data_dir, "train", train_limit, train);
        if (!rc) rc = ars_mnist_load(run->data_dir, "t10k", run->test_limit, test);
        if (rc) {
            char host[256] = "?";
            gethostname(host, sizeof host);
            ars_error_context(rc, "rank %d on host %s: loading %s", rank, host, run->data);
        }
    } else {
        /* Synthetic sets: one draw split into train and test, so both come
         * from the same distribution (the same blob centers, teacher). */
        int total = run->train_samples + run->test_samples;
        rc = check_synthetic_fits(run);
        if (rc) {
            memset(train, 0, sizeof *train);
            memset(test, 0, sizeof *test);
        } else if (strcmp(run->data, "spirals") == 0) {
            rc = ars_dataset_spirals(train, total, 3, 0.2f, run->seed);
        } else if (strcmp(run->data, "blobs") == 0) {
            rc = ars_dataset_blobs(train, total, BLOBS_CLASSES, BLOBS_DIM, 1.0f, run->seed);
        } else if (strcmp(run->data, "adding") == 0) {
            rc = ars_dataset_adding(train, total, run->seq_len, run->seed);
        } else if (strcmp(run->data, "copy") == 0) {
            rc = ars_dataset_copy(train, total, run->seq_len, ARS_COPY_SYMBOLS, run->seed);
        } else {
            rc = ars_dataset_teacher(train, total, TEACHER_DIM, TEACHER_HIDDEN, TEACHER_OUT, run->seed);
        }
        if (!rc) rc = ars_dataset_split(train, run->train_samples, test);
    }
    if (!rc && run->validation > 0) {   /* the validation split replaces the test set as the evaluation set */
        ars_dataset_free(test);
        rc = ars_dataset_validation_split(train, run->validation, run->seed, test);
    }
    int bad;
    if (!rc && ars_dataset_find_nonfinite(train, &bad))
        rc = ars_error(ARS_ENUMERIC, "training data: sample %d holds NaN or Inf", bad);
    if (!rc && ars_dataset_find_nonfinite(test, &bad))
        rc = ars_error(ARS_ENUMERIC, "test data: sample %d holds NaN or Inf", bad);
    /* The sequence tasks are never standardized: copy's inputs are token
     * ids, and the adding problem is defined on raw values and 0/1 markers. */
    const int sequence_task = strcmp(run->data, "adding") == 0 || strcmp(run->data, "copy") == 0;
    if (!rc && run->standardize && !sequence_task) {
        double mean, std;
        ars_dataset_mean_std(train, &mean, &std);
        if (std <= 0) std = 1;
        ars_dataset_standardize(train, mean, std);
        ars_dataset_standardize(test, mean, std);
        if (applied_mean) *applied_mean = mean;
        if (applied_std) *applied_std = std;
    } else if (!rc) {
        if (applied_mean) *applied_mean = 0;
        if (applied_std) *applied_std = 1;
    }
    return rc;
}

static int load_data(ars_trainer *t)
{
    return ars_load_run_data_stats(t->run, t->rank, t->run->train_limit, &t->train, &t->test, &t->data_mean,
                                   &t->data_std);
}

/* [run] augment_crop / augment_flip need an image set, and a crop that
 * leaves something of the image. Every rank holds the same data set, so
 * every rank refuses alike. */
static int setup_augment(ars_trainer *t)
{
    const ars_run_config *run = t->run;
    t->augment.crop = run->augment_crop;
    t->augment.flip = run->augment_flip;
    if (!t->augment.crop && !t->augment.flip) return 0;
    char keys[80];
    if (t->augment.crop && t->augment.flip) snprintf(keys, sizeof keys, "augment_crop = %d and augment_flip = true",
                                                     t->augment.crop);
    else if (t->augment.crop) snprintf(keys, sizeof keys, "augment_crop = %d", t->augment.crop);
    else snprintf(keys, sizeof keys, "augment_flip = true");
    int *shape = t->image_shape;
    if (ars_dataset_image_shape(&t->train, &shape[0], &shape[1], &shape[2]))
        return ars_error_context(ARS_EINVAL, "[run] %s with data = %s", keys, run->data);
    const int side = shape[1] < shape[2] ? shape[1] : shape[2];
    if (t->augment.crop >= side)
        return ars_error(ARS_EINVAL, "[run] augment_crop = %d with data = %s: expected 0 to %d (the images are %d x %d)",
                         t->augment.crop, run->data, side - 1, shape[1], shape[2]);
    return 0;
}

/* Refuses a model whose output does not match the data, or that cannot
 * fit, before allocating any of it: the
 * model (parameters, gradients, activations for the batch, the layers'
 * workspaces) and what the trainer keeps per parameter (optimizer moments,
 * the probe's copy of the parameters before a step) and per output row. */
static int check_model_fits(ars_trainer *t, const ars_layer_spec *specs, int count)
{
    const ars_optim_config *optim = &t->run->optim;
    ars_model_size size;
    TRY(ars_model_estimate(specs, count, ars_dataset_shape(&t->train), t->local_capacity, &size));
    const int classes = t->train.labels ? t->train.classes : t->train.target_dim;
    if (size.out_dim != classes)
        return ars_error(ARS_EINVAL, ARS_SPEC_AT ": the last layer has %d outputs but data '%s' has %d %s",
                         ARS_SPEC_AT_ARGS(&specs[count - 1]), size.out_dim, t->run->data, classes,
                         t->train.labels ? "classes" : "targets");
    const int moments = optim->kind != ARS_OPT_SGD ? 2 : optim->momentum > 0;
    /* sharded, the moments and the probe copy are of this rank's slice;
     * accumulating, the earlier micro-batches' gradients are one more copy */
    const double per_rank = t->shard ? 1.0 / t->world : 1.0, accumulated = t->accumulate > 1;
    /* weights, gradients, moments, probe copy, accumulated gradients */
    const double copies = 2 + (moments + 1) * per_rank + accumulated;
    const double parameter_bytes = 4.0 * size.params * copies;
    const double bytes = size.bytes + 4.0 * size.params * ((moments + 1) * per_rank + accumulated) +
                         4.0 * (double)t->local_capacity * size.out_dim;   /* dL/d(output) */
    ars_memory_budget budget;
    ars_memory_budget_get(&budget);
    if (bytes <= budget.bytes) return 0;
    char where[300], params[32], activations[32], workspace[32], left[32], largest[120] = "";
    ars_memory_budget_describe(&budget, where, sizeof where);
    if (size.largest_layer >= 0 && size.largest_workspace > 0.5 * size.workspace)
        snprintf(largest, sizeof largest, ", most in %03d_%s", size.largest_layer, specs[size.largest_layer].kind);
    return ars_error(ARS_ENOMEM, "the model needs about %.1f GiB per rank (%.3g parameters x %.3g copies: weights, "
                     "gradients, %s%sa probe copy%s: %s; activations for batch %d: %s; layer workspaces: %s%s) but "
                     "this rank has %s (%s)", ARS_GIB(bytes), size.params, copies,
                     moments == 2 ? "Adam m and v" : moments ? "momentum" : "", moments ? ", " : "",
                     t->shard ? (accumulated ? " (of a slice), accumulated gradients" : " (of a slice)")
                              : accumulated ? ", accumulated gradients" : "",
                     ars_memory_format(parameter_bytes, params, sizeof params), t->local_capacity,
                     ars_memory_format(size.activations, activations, sizeof activations),
                     ars_memory_format(size.workspace, workspace, sizeof workspace), largest,
                     ars_memory_format(budget.bytes, left, sizeof left), where);
}

static int setup_model(ars_trainer *t, const ars_layer_spec *specs, int count)
{
    const ars_run_config *run = t->run;
    int rc = check_model_fits(t, specs, count);
    if (!rc) rc = ars_model_create(&t->model, specs, count, ars_dataset_shape(&t->train), t->local_capacity);
    if (rc) return rc;
    /* The products' layouts: rank 0 measures, the others take its choice
     * (ars_trainer_share_tunings); off, every product runs as asked. */
    ars_gemm_set_enabled(run->gemm_tuning);
    rc = run->gemm_tuning && t->rank == 0 ? ars_model_tune_gemm(&t->model, 1) : 0;
    TRY(ars_trainer_agree(t, rc));
    /* what each rank measured may differ; replicas must round alike */
    TRY(ars_trainer_share_tunings(t));
    TRY(ars_init_model(&t->model, run->seed));
    int lsuv = 0;
    for (int i = 0; i < count; i++) lsuv |= strcmp(specs[i].init, "lsuv") == 0;
    if (lsuv) {
        /* Every rank calibrates on the same rows, so replicas stay equal. */
        ars_sampler calibration;
        ars_batch batch;
        TRY(ars_sampler_create(&calibration, &t->train, t->local_capacity, 0, 1, run->seed ^ 0x15u, 1));
        rc = ars_batch_alloc(&batch, &calibration);
        if (!rc) rc = ars_sampler_fill(&calibration, 0, 0, &batch);
        if (!rc) rc = ars_init_lsuv(&t->model, batch.x, batch.rows, run->lsuv_tol, run->lsuv_iterations);
        ars_batch_free(&batch);
        ars_sampler_destroy(&calibration);
        if (rc) return rc;
    }
    /* Replicas start equal: rank 0's parameters and state go to everyone. */
    ars_watchdog_enter(t->watchdog, 0, "parameter broadcast");
    TRY(ars_dist_broadcast_float(t->dist, t->model.params, t->model.param_count, 0));
    TRY(ars_dist_broadcast_float(t->dist, t->model.state, t->model.state_count, 0));
    ars_watchdog_leave(t->watchdog);
    /* sharded, this rank's optimizer holds the state of its slice alone */
    t->shard_lo = 0;
    t->shard_hi = t->model.param_count;
    if (t->shard) ars_dist_slice(t->model.param_count, t->world, t->rank, &t->shard_lo, &t->shard_hi);
    return ars_optimizer_create(&t->opt, &run->optim, t->shard_hi - t->shard_lo);
}

static int evaluate(ars_trainer *t, double *accuracy, double *loss)
{
    ars_sampler sampler;
    ars_batch batch;
    TRY(ars_sampler_create(&sampler, &t->test, t->global_batch, t->rank, t->world, t->run->seed, 0));
    int rc = ars_batch_alloc(&batch, &sampler);
    double totals[3] = {0, 0, 0};   /* loss sum, correct, rows */
    int steps = ars_sampler_steps_per_epoch(&sampler);
    for (int s = 0; s < steps && !rc; s++) {
        rc = ars_sampler_fill(&sampler, 0, s, &batch);
        if (rc) break;
        ars_pass pass = {.mode = ARS_MODE_EVAL, .rows = batch.rows, .global_rows = batch.global_rows,
                         .sample_ids = batch.ids, .seed = t->run->seed, .dist = t->dist};
        rc = ars_model_forward(&t->model, &pass, batch.x);
        if (rc) break;
        double loss_sum = 0;
        const float *out = ars_model_output(&t->model);
        rc = ars_loss_compute(t->run->loss, out, batch.rows, t->model.out_dim, batch.labels, batch.targets,
                              batch.global_rows, &loss_sum, NULL);
        totals[0] += loss_sum;
        if (batch.labels) totals[1] += ars_count_correct(out, batch.rows, t->model.out_dim, batch.labels);
        totals[2] += batch.rows;
    }
    ars_batch_free(&batch);
    ars_sampler_destroy(&sampler);
    rc = ars_trainer_agree(t, rc);
    ars_watchdog_enter(t->watchdog, t->step, "evaluation all-reduce");
    if (!rc) rc = ars_dist_allreduce_double(t->dist, totals, 3);
    ars_watchdog_leave(t->watchdog);
    *loss = totals[2] > 0 ? totals[0] / totals[2] : 0;
    *accuracy = totals[2] > 0 && t->test.labels ? totals[1] / totals[2] : NAN;
    return rc;
}

/* Per-layer gradient and weight norms, activation statistics -> history. */
static int record_probes(ars_trainer *t, const ars_history_step *record, const float *params_before, int probed)
{
    double *row;
    TRY(ars_history_append(&t->history, record, &row));
    /* sequence layers: the gradient norm per time step (NaN when not probed) */
    for (int k = 0; probed && k < t->history.time_layer_count; k++) {
        const ars_layer *layer = &t->model.layers[t->history.time_layer[k]];
        memcpy(ars_history_time_row(&t->history, k, t->history.count - 1), layer->time_grad_norm,
               sizeof(double) * (size_t)t->history.time_steps[k]);
    }
    const int layers = t->model.layer_count;
    if (t->shard) {   /* each rank holds its slice of the gradient: the norms come from every rank's */
        double *norms = row + ARS_HIST_GRAD_NORM * layers, *updates = row + ARS_HIST_UPDATE_RATIO * layers;
        TRY(ars_trainer_layer_norms(t, params_before, norms, params_before ? updates : NULL));
    }
    for (int l = 0; l < layers; l++) {
        const ars_layer *layer = &t->model.layers[l];
        size_t n = layer->param_size;
        double weight = ars_l2_norm(layer->param, n);
        row[ARS_HIST_WEIGHT_NORM * layers + l] = weight;
        if (t->shard) {
            double *ratio = &row[ARS_HIST_UPDATE_RATIO * layers + l];
            if (params_before && n) *ratio = weight > 0 ? *ratio / weight : 0;
        } else {
            row[ARS_HIST_GRAD_NORM * layers + l] = ars_l2_norm(layer->grad, n);   /* already clipped in place */
        }
        if (!t->shard && params_before && n) {
            double update = 0;
            const float *before = params_before + layer->param_offset;
            for (size_t i = 0; i < n; i++) {
                double d = (double)layer->param[i] - before[i];
                update += d * d;
            }
            row[ARS_HIST_UPDATE_RATIO * layers + l] = weight > 0 ? sqrt(update) / weight : 0;
        }
        row[ARS_HIST_OUTPUT_GRAD_NORM * layers + l] = layer->output_grad_norm;
        if (layer->kind->activation != ARS_ACT_NONE && layer->stats.valid) {
            row[ARS_HIST_ACT_MEAN * layers + l] = layer->stats.mean;
            row[ARS_HIST_ACT_STD * layers + l] = layer->stats.std;
            row[ARS_HIST_ACT_SATURATED * layers + l] = layer->stats.saturated;
            row[ARS_HIST_ACT_DEAD * layers + l] = layer->stats.dead;
        }
    }
    return 0;
}

static void write_step_metrics(ars_trainer *t, const ars_history_step *r, double samples_per_second)
{
    if (!t->metrics) return;
    fprintf(t->metrics,
            "{\"kind\":\"step\",\"step\":%lld,\"epoch\":%d,\"loss\":%.9g,\"lr\":%.9g,\"grad_norm\":%.9g,"
            "\"clip_scale\":%.9g,\"nonfinite\":%d,\"samples_per_s\":%.6g}\n",
            (long long)r->step, r->epoch, r->loss, r->lr, r->grad_norm, r->clip_scale, r->nonfinite,
            samples_per_second);
}

/* accumulate > 1, the step's last micro-batch: each layer's gradient gets
 * the earlier micro-batches' sum as soon as backward has written it, so a
 * bucket's all-reduce may still start during backward. */
static int add_accumulated(void *context, const ars_layer *layer)
{
    ars_trainer *t = context;
    float *restrict grad = layer->grad;
    const float *restrict earlier = t->accum + layer->param_offset;
    for (size_t i = 0; i < layer->param_size; i++) grad[i] += earlier[i];
    return ars_dist_backward_hook(t->dist, layer);
}

/* The forward and backward passes of a step: its accumulate micro-batches
 * (fewer at the end of an epoch), each the sampler's batch, with its own
 * BatchNorm statistics, the loss a mean over the step's samples. The
 * gradients are summed locally and synchronized once, after the last
 * (DDP's no_sync): micro-batches before it sum theirs into t->accum. */
static int forward_backward(ars_trainer *t, int epoch, int64_t step, int probe, double *loss_sum)
{
    const ars_run_config *run = t->run;
    const int first = (int)(step % t->steps_per_epoch) * t->accumulate;
    const int micro = t->micro_per_epoch - first < t->accumulate ? t->micro_per_epoch - first : t->accumulate;
    const long long begin = (long long)first * t->global_batch, end = begin + (long long)micro * t->global_batch;
    t->step_rows = (int)((end < t->train.count ? end : t->train.count) - begin);
    ars_batch *batch = &t->batch;
    *loss_sum = 0;
    for (int k = 0; k < micro; k++) {
        int rc = ars_sampler_fill(&t->sampler, epoch, first + k, batch);
        if (!rc && (t->augment.crop || t->augment.flip))   /* evaluate() fills its own batches: never augmented */
            rc = ars_augment_apply(&t->augment, run->seed, epoch, batch->x, batch->rows, batch->ids,
                                   t->image_shape[0], t->image_shape[1], t->image_shape[2]);
        TRY(ars_trainer_agree(t, rc));
        ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = batch->rows, .global_rows = batch->global_rows,
                         .sample_ids = batch->ids, .seed = run->seed, .step = (uint64_t)step,
                         .dist = t->dist, .probe = probe};
        ars_watchdog_enter(t->watchdog, step, "forward/backward (SyncBatchNorm, gradient buckets)");
        TRY(ars_model_forward(&t->model, &pass, batch->x));
        double part = 0;
        TRY(ars_loss_compute(run->loss, ars_model_output(&t->model), batch->rows, t->model.out_dim,
                             batch->labels, batch->targets, t->step_rows, &part, t->dlogits));
        *loss_sum += part;
        const int last = k == micro - 1;
        if (last) TRY(ars_dist_start_side_sum(t->dist, loss_sum, 1));   /* summed during backward */
        ars_backward_hook hook = !last ? NULL : k > 0 ? add_accumulated : ars_dist_backward_hook;
        TRY(ars_model_backward(&t->model, &pass, t->dlogits, hook, k > 0 ? (void *)t : (void *)t->dist));
        ars_watchdog_leave(t->watchdog);
        if (last) break;
        const size_t n = t->model.param_count;
        if (k == 0) {
            memcpy(t->accum, t->model.grads, sizeof(float) * n);
        } else {
            float *restrict sum = t->accum;
            const float *restrict grads = t->model.grads;
            for (size_t i = 0; i < n; i++) sum[i] += grads[i];
        }
    }
    /* one rank: backward's own sum of squares was of the last micro-batch alone */
    if (micro > 1) t->model.grad_sum_squares_ready = 0;
    return 0;
}

/* One optimization step. probe: the history records this step's
 * per-layer figures; histogram: and its gradient histograms. */
static int train_step(ars_trainer *t, int epoch, int64_t step, int probe, int histogram, ars_history_step *record)
{
    const ars_run_config *run = t->run;
    double loss_sum = 0;
    TRY(forward_backward(t, epoch, step, probe, &loss_sum));
    ars_watchdog_enter(t->watchdog, step, "gradient and loss all-reduce");
    TRY(ars_dist_finish_gradients(t->dist));
    ars_watchdog_leave(t->watchdog);

    /* sharded, this rank's slice is all it holds of the summed gradient and
     * all it updates; unsharded the slice is everything */
    const size_t n = t->shard_hi - t->shard_lo;
    float *grads = t->model.grads + t->shard_lo, *params = t->model.params + t->shard_lo;
    memset(record, 0, sizeof *record);
    record->step = step;
    record->epoch = epoch;
    record->loss = loss_sum / t->step_rows;
    record->lr = ars_schedule_lr(&run->schedule, run->optim.lr, t->opt.step);
    record->grad_norm = sqrt(ars_dist_grad_sum_squares(t->dist, &t->model));
    record->clip_scale = 1;
    if (!isfinite(record->grad_norm) || !isfinite(record->loss)) {
        /* The gradient is identical on every rank, so is this decision. */
        record->nonfinite = 1;
        record->skipped = 1;
        t->nonfinite_steps++;
        if (run->nonfinite == ARS_NONFINITE_STOP) {
            t->agreed = ARS_AGREED_SAME;   /* all-reduced figures: every rank stops here, alike */
            return ars_error(ARS_ESTOP, "step %lld: non-finite %s (loss %g, gradient norm %g); stopping as "
                             "[run] nonfinite = stop says", (long long)step,
                             isfinite(record->loss) ? "gradient" : "loss", record->loss, record->grad_norm);
        }
        if (t->rank == 0 && !t->options->quiet)
            fprintf(stderr, "arsenal: step %lld: non-finite gradient, update skipped (%lld so far)\n",
                    (long long)step, (long long)t->nonfinite_steps);
        return 0;
    }
    if (run->clip_norm > 0) record->clip_scale = ars_clip_scale_for_norm(record->grad_norm, run->clip_norm);
    /* The clip scale is applied inside the optimizer's pass (bitwise the
     * same update, one pass over the gradient less), unless the clipped
     * gradient itself is needed: by clip-by-value, or by the history's
     * per-layer norms and histograms on this step. */
    float grad_scale = (float)record->clip_scale;
    if (grad_scale < 1 && (probe || histogram || run->clip_value > 0)) {
        ars_scale(grads, n, grad_scale);
        grad_scale = 1;
    }
    if (run->clip_value > 0) ars_clip_by_value(grads, n, run->clip_value);
    if (probe) memcpy(t->params_before, params, n * sizeof(float));
    ars_optimizer_step_scaled(&t->opt, params, grads, grad_scale, (float)record->lr);
    if (!t->shard) return 0;
    ars_watchdog_enter(t->watchdog, step, "parameter all-gather (optimizer_shard)");
    int rc = ars_dist_gather_slices(t->dist, t->model.params);
    ars_watchdog_leave(t->watchdog);
    return rc;
}

static void print_header(ars_trainer *t, const ars_layer_spec *specs, int count)
{
    if (t->rank != 0 || t->options->quiet) return;
    const ars_run_config *run = t->run;
    char shape[48];
    const ars_shape input = ars_dataset_shape(&t->train);
    printf("arsenal %s: %s, %d train / %d test samples of %s\n", ARSENAL_VERSION, run->data, t->train.count,
           t->test.count, ars_shape_text(&input, shape, sizeof shape));
    printf("model: %d layers, %zu parameters; optimizer %s lr %g; clip_norm %g\n", t->model.layer_count,
           t->model.param_count, ars_optimizer_name(run->optim.kind), run->optim.lr, run->clip_norm);
    printf("ranks: %d, batch %d per rank, global batch %d, %d steps per epoch\n", t->world,
           t->local_capacity, t->global_batch, t->steps_per_epoch);
    if (t->augment.crop)
        printf("augmentation of training images: random crop after %d pixels of zero padding%s\n", t->augment.crop,
               t->augment.flip ? ", random horizontal flip" : "");
    else if (t->augment.flip)
        printf("augmentation of training images: random horizontal flip\n");
    static const char *const how[] = {
        [ARS_SYNC_ALLREDUCE] = "one MPI_Allreduce after backward",
        [ARS_SYNC_OVERLAP] = "bucketed all-reduces overlapping backward",
        [ARS_SYNC_SHARED] = "summed in shared memory, each rank a slice"};
    if (t->world > 1 && !t->shard)
        printf("gradient sync: %s (gradient_sync = %s%s%s)\n", how[t->dist->mode], ars_grad_sync_name(run->grad_sync),
               t->dist->sync_note[0] ? ": " : "", t->dist->sync_note);
    if (t->shard)
        printf("optimizer_shard: each rank keeps the optimizer state of %zu of the %zu parameters; gradients %s, "
               "parameters all-gathered after the update (gradient_sync = %s%s%s)\n", t->shard_hi - t->shard_lo,
               t->model.param_count, t->dist->mode == ARS_SYNC_SHARED ? "summed in shared memory, each rank its slice"
                                                                      : "reduce-scattered (MPI_Reduce_scatter)",
               ars_grad_sync_name(run->grad_sync), t->dist->sync_note[0] ? ": " : "", t->dist->sync_note);
    else if (run->optimizer_shard)
        printf("optimizer_shard: on, but one rank holds everything\n");
    if (t->accumulate > 1)
        printf("gradient accumulation: %d micro-batches of %d per optimizer step (%d samples per step, gradients "
               "synchronized once per step), %d steps per epoch\n", t->accumulate, t->global_batch,
               t->accumulate * t->global_batch, t->steps_per_epoch);
    if (t->precision != ARS_PRECISION_FP32) {
        char what[256];
        ars_precision_describe((ars_precision)t->precision, what, sizeof what);
        printf("precision: %s\n", what);
    }
    int tuned = 0;
    for (int i = 0; i < t->model.layer_count; i++) {
        const ars_layer *layer = &t->model.layers[i];
        if (!layer->tuning) continue;   /* conv2d and an image shortcut's convolution: strategy + 1 */
        printf("%s %03d %s", tuned++ ? "," : "convolution layouts (rank 0's; [run] conv_layout fixes them):",
               i, layer->tuning == 2 ? "batched" : "per_sample");
    }
    if (tuned) printf("\n");
    if (run->gemm_tuning) {
        char text[1024];
        ars_gemm_describe(t->model.gemm_plan, t->model.gemm_plan_count, text, sizeof text);
        if (t->model.gemm_restored)
            printf("matrix product layouts (the checkpoint's, %d products): %s\n", t->model.gemm_plan_count, text);
        else
            printf("matrix product layouts (rank 0's, %d products measured in %.0f ms, %.0f ms of CPU; "
                   "run.gemm_tuning = off fixes them): %s\n", t->model.gemm_plan_count,
                   1e3 * t->model.gemm_tune_seconds, 1e3 * t->model.gemm_tune_cpu_seconds, text);
    }
    fflush(stdout);
}

static int train_loop(ars_trainer *t)
{
    const ars_run_config *run = t->run;
    int rc = 0;
    double start = now_seconds(), window_start = start, cpu_start = cpu_seconds();
    int64_t window_samples = 0;
    double epoch_loss = 0;
    int epoch_steps = 0;
    while (t->step < t->total_steps && !rc) {
        int epoch = (int)(t->step / t->steps_per_epoch);
        int probe = t->step % run->probe_every == 0;
        ars_history_step record;
        int histogram = run->histogram_every && t->step % run->histogram_every == 0;
        rc = train_step(t, epoch, t->step, probe, histogram, &record);
        if (rc) break;
        /* probe steps, and every non-finite step, go into the history */
        if (probe || record.nonfinite)
            rc = record_probes(t, &record, record.skipped ? NULL : t->params_before, probe);
        if (!rc && (probe || record.nonfinite) && t->rank == 0)
            rc = ars_health_update(&t->health, &t->history, t->options->quiet ? NULL : stdout);
        if (!rc && histogram) rc = ars_trainer_add_histograms(t);
        /* ---- [health] cure (cure.c): a rollback restarts the loop at the snapshot's step ---- */
        if (!rc && (probe || record.nonfinite)) {
            int rolled_back = 0;
            rc = ars_cure_after_record(t, &rolled_back);
            if (!rc && rolled_back) {
                epoch_loss = 0;   /* the epoch's mean then covers the steps since the rollback */
                epoch_steps = 0;
                continue;
            }
        }
        /* ---- end of the cure hook ---- */
        if (rc) break;
        t->last_loss = record.loss;
        t->last_grad_norm = record.grad_norm;
        epoch_loss += record.loss;
        epoch_steps++;
        window_samples += t->step_rows;
        t->step++;
        if (run->check_every && t->step % run->check_every == 0) {
            ars_watchdog_enter(t->watchdog, t->step, "parameter checksum all-gather");
            rc = ars_dist_check_consistent(t->dist, t->model.params, t->model.param_count, t->step,
                                           "parameters");
            ars_watchdog_leave(t->watchdog);
            /* a mismatch is found alike on every rank, an allocation failure on one */
            rc = ars_trainer_agree(t, rc);
        }
        if (rc) break;
        double now = now_seconds();
        double rate = window_samples / fmax(now - window_start, 1e-9);
        if (t->rank == 0) write_step_metrics(t, &record, rate);
        if (t->rank == 0 && !t->options->quiet && t->step % run->log_every == 0) {
            printf("step %7lld  epoch %3d  loss %.4f  grad_norm %.3g%s  lr %.3g  %.0f samples/s\n",
                   (long long)t->step, epoch + 1, record.loss, record.grad_norm,
                   record.clip_scale < 1 ? " (clipped)" : "", record.lr, rate);
            fflush(stdout);
            window_start = now;
            window_samples = 0;
        }
        int epoch_done = t->step % t->steps_per_epoch == 0 || t->step == t->total_steps;
        if (epoch_done) {
            rc = evaluate(t, &t->test_accuracy, &t->test_loss);
            if (rc) break;
            double elapsed = now_seconds() - start;
            t->epochs_done = (int)((t->step + t->steps_per_epoch - 1) / t->steps_per_epoch);
            if (t->rank == 0) {
                if (!t->options->quiet) {
                    printf("epoch %3d  step %7lld  train_loss %.4f  test_loss %.4f  test_acc %.4f  %.1fs\n",
                           t->epochs_done, (long long)t->step, epoch_loss / fmax(epoch_steps, 1),
                           t->test_loss, t->test_accuracy, elapsed);
                    fflush(stdout);
                }
                if (t->metrics)
                    fprintf(t->metrics,
                            "{\"kind\":\"epoch\",\"epoch\":%d,\"step\":%lld,\"train_loss\":%.9g,"
                            "\"test_loss\":%.9g,\"test_acc\":%.9g,\"seconds\":%.3f,\"cpu_seconds\":%.3f}\n",
                            t->epochs_done, (long long)t->step, epoch_loss / fmax(epoch_steps, 1), t->test_loss,
                            isnan(t->test_accuracy) ? -1.0 : t->test_accuracy, elapsed,
                            cpu_seconds() - cpu_start);
            }
            ars_history_eval eval = {.step = t->step, .epoch = t->epochs_done,
                                     .train_loss = epoch_loss / fmax(epoch_steps, 1),
                                     .test_loss = t->test_loss, .test_accuracy = t->test_accuracy};
            rc = ars_history_add_eval(&t->history, &eval);
            epoch_loss = 0;
            epoch_steps = 0;
            if (!rc) rc = ars_trainer_epoch_end(t);
        } else if (run->ckpt_every && t->step % run->ckpt_every == 0) {
            rc = ars_trainer_checkpoint(t);
        }
        if (t->metrics) fflush(t->metrics);
    }
    t->seconds = now_seconds() - start;
    return rc;
}

static void trainer_free(ars_trainer *t)
{
    ars_cure_free(t);
    ars_batch_free(&t->batch);
    ars_sampler_destroy(&t->sampler);
    ars_optimizer_destroy(&t->opt);
    ars_model_destroy(&t->model);
    ars_history_free(&t->history);
    if (t->rank == 0) ars_health_free(&t->health);
    ars_dataset_free(&t->train);
    ars_dataset_free(&t->test);
    free(t->dlogits);
    free(t->params_before);
    free(t->accum);
    if (t->dist) t->dist->shard = 0;   /* the next user of this dist plans its own */
    free(t->layer_offsets);
    free(t->layer_sizes);
    if (t->metrics) fclose(t->metrics);
    ars_watchdog_stop(t->watchdog);
    t->watchdog = NULL;
    if (t->precision_active) ars_gemm_set_precision(ARS_PRECISION_FP32);   /* the process's default again */
    t->precision_active = 0;
}

static int trainer_setup(ars_trainer *t, const ars_layer_spec *specs, int count)
{
    const ars_run_config *run = t->run;
    t->accumulate = run->accumulate > 1 ? run->accumulate : 1;
    t->shard = run->optimizer_shard && t->world > 1;   /* one rank: nothing to shard */
    if (ars_dist_active(t->dist))   /* one process has no collective to wait for */
        TRY(ars_trainer_agree(t, ars_watchdog_start(&t->watchdog, run->watchdog_seconds, t->rank)));
    if (run->batch_is_global) {
        t->global_batch = run->batch;
        if (t->global_batch < t->world) {
            t->agreed = ARS_AGREED_SAME;   /* the same run file and world size on every rank */
            return ars_error(ARS_EINVAL, "[run] batch = %d (global) is smaller than the %d ranks", run->batch,
                             t->world);
        }
    } else {
        t->global_batch = run->batch * t->world;
    }
    TRY(ars_trainer_resume_prepare(t));   /* a resumed run keeps its checkpoint's global batch */
    /* before the data and the model are loaded: a precision this machine
     * cannot run ends the run here, with what is missing */
    int precision_rc = ars_gemm_set_precision((ars_precision)t->precision);
    if (precision_rc && t->options->resume_path && !run->precision_set) {   /* the checkpoint's precision */
        char why[1024];
        snprintf(why, sizeof why, "%s", ars_error_message());
        precision_rc = ars_error(precision_rc, "--resume %s: the checkpoint was trained in %s, which a resume keeps: "
                                 "%s; --set run.precision=fp32 (or bf16_emulated) resumes it in another precision",
                                 t->options->resume_path, ars_precision_name((ars_precision)t->precision), why);
    }
    TRY(ars_trainer_agree(t, precision_rc));
    t->precision_active = t->precision != ARS_PRECISION_FP32;
    t->local_capacity = (t->global_batch + t->world - 1) / t->world;
    TRY(ars_trainer_agree(t, load_data(t)));
    TRY(ars_trainer_agree(t, setup_augment(t)));
    int rc = ars_sampler_create(&t->sampler, &t->train, t->global_batch, t->rank, t->world, run->seed, 1);
    if (!rc) rc = ars_batch_alloc(&t->batch, &t->sampler);
    TRY(ars_trainer_agree(t, rc));
    t->micro_per_epoch = ars_sampler_steps_per_epoch(&t->sampler);
    /* an epoch's last step takes the micro-batches left over */
    t->steps_per_epoch = (t->micro_per_epoch + t->accumulate - 1) / t->accumulate;
    t->total_steps = run->max_steps > 0 ? run->max_steps : (int64_t)run->epochs * t->steps_per_epoch;
    t->schedule = run->schedule;
    TRY(ars_trainer_agree(t, setup_model(t, specs, count)));
    const ars_model *m = &t->model;
    t->dlogits = calloc((size_t)m->max_rows * (size_t)m->out_dim, sizeof(float));
    t->params_before = malloc(sizeof(float) * (t->shard_hi - t->shard_lo + 1));
    if (t->accumulate > 1 && !(t->accum = malloc(sizeof(float) * (m->param_count + 1))))
        rc = ars_error(ARS_ENOMEM, "[run] accumulate = %d: no memory for %zu accumulated gradients", t->accumulate,
                       m->param_count);
    t->layer_offsets = calloc((size_t)m->layer_count, sizeof(size_t));
    t->layer_sizes = calloc((size_t)m->layer_count, sizeof(size_t));
    char (*names)[40] = calloc((size_t)m->layer_count, sizeof *names);
    if (!t->dlogits || !t->params_before || !t->layer_offsets || !t->layer_sizes || !names)
        rc = ars_error(ARS_ENOMEM, "trainer: out of memory");
    for (int l = 0; !rc && l < m->layer_count; l++) {
        t->layer_offsets[l] = m->layers[l].param_offset;
        t->layer_sizes[l] = m->layers[l].param_size;
        memcpy(names[l], m->layers[l].name, sizeof names[l]);
    }
    if (!rc) rc = ars_history_init(&t->history, m->layer_count, (const char (*)[40])names, run->histogram_bins);
    int time_layers = 0;
    for (int l = 0; l < m->layer_count; l++) time_layers += m->layers[l].time_grad_count > 0;
    if (!rc && time_layers) {
        int *which = malloc(sizeof(int) * (size_t)time_layers), *steps = malloc(sizeof(int) * (size_t)time_layers);
        int k = 0;
        for (int l = 0; which && steps && l < m->layer_count; l++) {
            if (m->layers[l].time_grad_count <= 0) continue;
            which[k] = l;
            steps[k++] = m->layers[l].time_grad_count;
        }
        rc = which && steps ? ars_history_set_time_layers(&t->history, time_layers, which, steps)
                            : ars_error(ARS_ENOMEM, "trainer: out of memory");
        free(which);
        free(steps);
    }
    if (!rc && t->rank == 0)
        rc = ars_health_init(&t->health, &run->health, m->layer_count, (const char (*)[40])names, NULL,
                             ars_optimizer_name(run->optim.kind));
    free(names);
    /* collective (the host check, the shared segment): a rank that failed
     * above joins it and fails in the agreement below, with the others */
    if (t->dist) t->dist->shard = t->shard;
    int plan_rc = ars_dist_plan_buckets(t->dist, &t->model, (size_t)(run->bucket_mb * 1048576.0),
                                        (size_t)(run->first_bucket_mb * 1048576.0), run->grad_sync);
    if (!rc) rc = plan_rc;
    if (!rc && t->rank == 0 && t->options->metrics_path) {
        t->metrics = fopen(t->options->metrics_path, t->options->resume_path ? "a" : "w");
        if (!t->metrics)
            rc = ars_error(ARS_EIO, "cannot write metrics file %s: %s", t->options->metrics_path, strerror(errno));
    }
    /* a failure above on one rank (memory, rank 0's metrics file) must not
     * leave the others waiting in the first step's collectives */
    return ars_trainer_agree(t, rc);
}

int ars_train(const ars_run_config *run, const ars_layer_spec *specs, int count, ars_dist *dist,
              const ars_train_options *options, ars_train_result *result)
{
    ars_trainer t;
    memset(&t, 0, sizeof t);
    memset(result, 0, sizeof *result);
    t.run = run;
    t.options = options;
    t.dist = dist;
    t.rank = dist ? dist->rank : 0;
    t.world = dist ? dist->size : 1;
    t.test_accuracy = NAN;   /* until the first evaluation */
    t.test_loss = NAN;
    ars_run_config resolved = *run;
    t.run = &resolved;
    int rc = trainer_setup(&t, specs, count);
    if (!rc) {
        if (resolved.schedule.total_steps == 0) resolved.schedule.total_steps = t.total_steps;
        rc = ars_cure_setup(&t, &resolved);   /* before the resume: a checkpoint's cures change layer kinds */
        if (!rc) rc = ars_trainer_resume(&t);
        if (!rc) rc = ars_cure_begin(&t);
    }
    if (!rc) {
        print_header(&t, specs, count);
        rc = train_loop(&t);
        if (!rc) rc = ars_trainer_finish(&t);
    }
    result->steps = t.step;
    result->epochs_done = t.epochs_done;
    result->last_loss = t.last_loss;
    result->last_grad_norm = t.last_grad_norm;
    result->test_accuracy = t.test_accuracy;
    result->test_loss = t.test_loss;
    result->nonfinite_steps = t.nonfinite_steps;
    result->seconds = t.seconds;
    result->agreed = t.agreed;
    if (!rc && options->export_params) {
        result->param_count = t.model.param_count;
        result->state_count = t.model.state_count;
        result->params = malloc(sizeof(float) * (t.model.param_count + 1));
        result->state = malloc(sizeof(float) * (t.model.state_count + 1));
        if (result->params) memcpy(result->params, t.model.params, sizeof(float) * t.model.param_count);
        if (result->state) memcpy(result->state, t.model.state, sizeof(float) * t.model.state_count);
    }
    trainer_free(&t);
    return rc;
}
