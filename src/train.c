/* train: the data-parallel training loop (see train.h for one step's data
 * flow). Every rank runs the same code on its shard; after the gradient
 * all-reduce all ranks hold the same gradient, so the clip decision, the
 * non-finite guard and the optimizer update agree without more messages.
 * Rank 0 alone prints, writes metrics and checkpoints. */
#define _POSIX_C_SOURCE 200809L
#include "arsenal/train.h"

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
#include "arsenal/model.h"
#include "trainer.h"

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Every rank learns whether any rank failed, so none is left waiting in a
 * collective. Returns rc on the failing rank, ARS_EPEER on the others. */
int ars_trainer_agree(ars_trainer *t, int rc)
{
    int failed = rc != 0;
    ars_watchdog_enter(t->watchdog, t->step, "agreement all-reduce");
    int mpi_rc = ars_dist_allreduce_max_int(t->dist, &failed);
    ars_watchdog_leave(t->watchdog);
    if (mpi_rc) return ARS_EMPI;
    if (!failed) return 0;
    t->agreed = 1;
    if (rc) return rc;
    return ars_error(ARS_EPEER, "another rank failed");
}

int ars_load_run_data(const ars_run_config *run, int rank, int train_limit, ars_dataset *train, ars_dataset *test)
{
    int rc = 0;
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
        if (strcmp(run->data, "spirals") == 0) rc = ars_dataset_spirals(train, total, 3, 0.2f, run->seed);
        else if (strcmp(run->data, "blobs") == 0) rc = ars_dataset_blobs(train, total, 4, 16, 1.0f, run->seed);
        else if (strcmp(run->data, "adding") == 0) rc = ars_dataset_adding(train, total, run->seq_len, run->seed);
        else if (strcmp(run->data, "copy") == 0)
            rc = ars_dataset_copy(train, total, run->seq_len, ARS_COPY_SYMBOLS, run->seed);
        else rc = ars_dataset_teacher(train, total, 16, 32, 4, run->seed);
        if (!rc) rc = ars_dataset_split(train, run->train_samples, test);
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
    }
    return rc;
}

static int load_data(ars_trainer *t)
{
    return ars_load_run_data(t->run, t->rank, t->run->train_limit, &t->train, &t->test);
}

static int check_model_fits(ars_trainer *t, const ars_layer_spec *specs, int count)
{
    double bytes = 0;
    int rc = ars_model_estimate_bytes(specs, count, t->train.dim, t->local_capacity, &bytes);
    if (rc) return rc;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    double physical = pages > 0 && page > 0 ? (double)pages * (double)page : 0;
    if (physical > 0 && bytes > 0.9 * physical)
        return ars_error(ARS_ENOMEM, "the model needs about %.1f GiB per rank (parameters, gradients, "
                         "optimizer state, activations for batch %d) but this machine has %.1f GiB",
                         bytes / 1073741824.0, t->local_capacity, physical / 1073741824.0);
    return 0;
}

static int setup_model(ars_trainer *t, const ars_layer_spec *specs, int count)
{
    const ars_run_config *run = t->run;
    int rc = check_model_fits(t, specs, count);
    if (!rc) rc = ars_model_create(&t->model, specs, count, t->train.dim, t->local_capacity);
    if (rc) return rc;
    int classes = t->train.labels ? t->train.classes : t->train.target_dim;
    if (t->model.out_dim != classes)
        return ars_error(ARS_EINVAL, "the last layer has %d outputs but data '%s' has %d %s", t->model.out_dim,
                         run->data, classes, t->train.labels ? "classes" : "targets");
    TRY_RC(ars_init_model(&t->model, run->seed));
    int lsuv = 0;
    for (int i = 0; i < count; i++) lsuv |= strcmp(specs[i].init, "lsuv") == 0;
    if (lsuv) {
        /* Every rank calibrates on the same rows, so replicas stay equal. */
        ars_sampler calibration;
        ars_batch batch;
        TRY_RC(ars_sampler_create(&calibration, &t->train, t->local_capacity, 0, 1, run->seed ^ 0x15u, 1));
        rc = ars_batch_alloc(&batch, &calibration);
        if (!rc) rc = ars_sampler_fill(&calibration, 0, 0, &batch);
        if (!rc) rc = ars_init_lsuv(&t->model, batch.x, batch.rows, run->lsuv_tol, run->lsuv_iterations);
        ars_batch_free(&batch);
        ars_sampler_destroy(&calibration);
        if (rc) return rc;
    }
    /* Replicas start equal: rank 0's parameters and state go to everyone. */
    ars_watchdog_enter(t->watchdog, 0, "parameter broadcast");
    TRY_RC(ars_dist_broadcast_float(t->dist, t->model.params, t->model.param_count, 0));
    TRY_RC(ars_dist_broadcast_float(t->dist, t->model.state, t->model.state_count, 0));
    ars_watchdog_leave(t->watchdog);
    return ars_optimizer_create(&t->opt, &run->optim, t->model.param_count);
}

static int evaluate(ars_trainer *t, double *accuracy, double *loss)
{
    ars_sampler sampler;
    ars_batch batch;
    TRY_RC(ars_sampler_create(&sampler, &t->test, t->global_batch, t->rank, t->world, t->run->seed, 0));
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
    TRY_RC(ars_history_append(&t->history, record, &row));
    /* sequence layers: the gradient norm per time step (NaN when not probed) */
    for (int k = 0; probed && k < t->history.time_layer_count; k++) {
        const ars_layer *layer = &t->model.layers[t->history.time_layer[k]];
        memcpy(ars_history_time_row(&t->history, k, t->history.count - 1), layer->time_grad_norm,
               sizeof(double) * (size_t)t->history.time_steps[k]);
    }
    const int layers = t->model.layer_count;
    for (int l = 0; l < layers; l++) {
        const ars_layer *layer = &t->model.layers[l];
        size_t n = layer->param_size;
        double weight = ars_l2_norm(layer->param, n);
        row[ARS_HIST_GRAD_NORM * layers + l] = ars_l2_norm(layer->grad, n);   /* already clipped in place */
        row[ARS_HIST_WEIGHT_NORM * layers + l] = weight;
        if (params_before && n) {
            double update = 0;
            const float *before = params_before + layer->param_offset;
            for (size_t i = 0; i < n; i++) {
                double d = (double)layer->param[i] - before[i];
                update += d * d;
            }
            row[ARS_HIST_UPDATE_RATIO * layers + l] = weight > 0 ? sqrt(update) / weight : 0;
        }
        row[ARS_HIST_OUTPUT_GRAD_NORM * layers + l] = layer->output_grad_norm;
        if (layer->is_activation && layer->stats.valid) {
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

/* One optimization step on the current batch. */
static int train_step(ars_trainer *t, ars_batch *batch, int epoch, int64_t step, int probe,
                      ars_history_step *record)
{
    const ars_run_config *run = t->run;
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = batch->rows, .global_rows = batch->global_rows,
                     .sample_ids = batch->ids, .seed = run->seed, .step = (uint64_t)step,
                     .dist = t->dist, .probe = probe};
    ars_watchdog_enter(t->watchdog, step, "forward/backward (SyncBatchNorm, gradient buckets)");
    TRY_RC(ars_model_forward(&t->model, &pass, batch->x));
    double loss_sum = 0;
    TRY_RC(ars_loss_compute(run->loss, ars_model_output(&t->model), batch->rows, t->model.out_dim,
                            batch->labels, batch->targets, batch->global_rows, &loss_sum, t->dlogits));
    TRY_RC(ars_model_backward(&t->model, &pass, t->dlogits, ars_dist_backward_hook, t->dist));
    ars_watchdog_enter(t->watchdog, step, "gradient all-reduce");
    TRY_RC(ars_dist_finish_gradients(t->dist));
    ars_watchdog_enter(t->watchdog, step, "loss all-reduce");
    TRY_RC(ars_dist_allreduce_double(t->dist, &loss_sum, 1));
    ars_watchdog_leave(t->watchdog);

    const size_t n = t->model.param_count;
    float *grads = t->model.grads;
    memset(record, 0, sizeof *record);
    record->step = step;
    record->epoch = epoch;
    record->loss = loss_sum / batch->global_rows;
    record->lr = ars_schedule_lr(&run->schedule, run->optim.lr, t->opt.step);
    record->grad_norm = ars_l2_norm(grads, n);
    record->clip_scale = 1;
    if (!isfinite(record->grad_norm) || !isfinite(record->loss)) {
        /* The gradient is identical on every rank, so is this decision. */
        record->nonfinite = 1;
        record->skipped = 1;
        t->nonfinite_steps++;
        if (run->nonfinite == ARS_NONFINITE_STOP)
            return ars_error(ARS_ESTOP, "step %lld: non-finite %s (loss %g, gradient norm %g); stopping as "
                             "[run] nonfinite = stop says", (long long)step,
                             isfinite(record->loss) ? "gradient" : "loss", record->loss, record->grad_norm);
        if (t->rank == 0 && !t->options->quiet)
            fprintf(stderr, "arsenal: step %lld: non-finite gradient, update skipped (%lld so far)\n",
                    (long long)step, (long long)t->nonfinite_steps);
        return 0;
    }
    if (run->clip_norm > 0) {
        record->clip_scale = ars_clip_scale_for_norm(record->grad_norm, run->clip_norm);
        if (record->clip_scale < 1) ars_scale(grads, n, record->clip_scale);
    }
    if (run->clip_value > 0) ars_clip_by_value(grads, n, run->clip_value);
    if (probe) memcpy(t->params_before, t->model.params, n * sizeof(float));
    ars_optimizer_step(&t->opt, t->model.params, grads, (float)record->lr);
    return 0;
}

static void print_header(ars_trainer *t, const ars_layer_spec *specs, int count)
{
    if (t->rank != 0 || t->options->quiet) return;
    const ars_run_config *run = t->run;
    printf("arsenal %s: %s, %d train / %d test samples, %d features\n", ARSENAL_VERSION, run->data,
           t->train.count, t->test.count, t->train.dim);
    printf("model: %d layers, %zu parameters; optimizer %s lr %g; clip_norm %g\n", t->model.layer_count,
           t->model.param_count, ars_optimizer_name(run->optim.kind), run->optim.lr, run->clip_norm);
    printf("ranks: %d, batch %d per rank, global batch %d, %d steps per epoch\n", t->world,
           t->local_capacity, t->global_batch, t->steps_per_epoch);
    fflush(stdout);
}

static int train_loop(ars_trainer *t)
{
    const ars_run_config *run = t->run;
    int rc = 0;
    double start = now_seconds(), window_start = start;
    int64_t window_samples = 0;
    double epoch_loss = 0;
    int epoch_steps = 0;
    while (t->step < t->total_steps && !rc) {
        int epoch = (int)(t->step / t->steps_per_epoch);
        int in_epoch = (int)(t->step % t->steps_per_epoch);
        rc = ars_sampler_fill(&t->sampler, epoch, in_epoch, &t->batch);
        rc = ars_trainer_agree(t, rc);
        if (rc) break;
        int probe = t->step % run->probe_every == 0;
        ars_history_step record;
        rc = train_step(t, &t->batch, epoch, t->step, probe, &record);
        if (rc) break;
        /* probe steps, and every non-finite step, go into the history */
        if (probe || record.nonfinite)
            rc = record_probes(t, &record, record.skipped ? NULL : t->params_before, probe);
        if (!rc && (probe || record.nonfinite) && t->rank == 0)
            rc = ars_health_update(&t->health, &t->history, t->options->quiet ? NULL : stdout);
        if (!rc && run->histogram_every && t->step % run->histogram_every == 0)
            rc = ars_history_add_histograms(&t->history, t->step, t->model.grads, t->layer_offsets,
                                            t->layer_sizes);
        if (rc) break;
        t->last_loss = record.loss;
        t->last_grad_norm = record.grad_norm;
        epoch_loss += record.loss;
        epoch_steps++;
        window_samples += t->batch.global_rows;
        t->step++;
        if (run->check_every && t->step % run->check_every == 0) {
            ars_watchdog_enter(t->watchdog, t->step, "parameter checksum all-gather");
            rc = ars_dist_check_consistent(t->dist, t->model.params, t->model.param_count, t->step,
                                           "parameters");
            ars_watchdog_leave(t->watchdog);
        }
        if (rc) {
            t->agreed = 1;   /* every rank ran the check */
            break;
        }
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
                            "\"test_loss\":%.9g,\"test_acc\":%.9g,\"seconds\":%.3f}\n",
                            t->epochs_done, (long long)t->step, epoch_loss / fmax(epoch_steps, 1), t->test_loss,
                            isnan(t->test_accuracy) ? -1.0 : t->test_accuracy, elapsed);
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
    free(t->layer_offsets);
    free(t->layer_sizes);
    if (t->metrics) fclose(t->metrics);
    ars_watchdog_stop(t->watchdog);
    t->watchdog = NULL;
}

static int trainer_setup(ars_trainer *t, const ars_layer_spec *specs, int count)
{
    const ars_run_config *run = t->run;
    if (ars_dist_active(t->dist))   /* one process has no collective to wait for */
        TRY_RC(ars_trainer_agree(t, ars_watchdog_start(&t->watchdog, run->watchdog_seconds, t->rank)));
    if (run->batch_is_global) {
        t->global_batch = run->batch;
        if (t->global_batch < t->world)
            return ars_error(ARS_EINVAL, "[run] batch = %d (global) is smaller than the %d ranks", run->batch,
                             t->world);
    } else {
        t->global_batch = run->batch * t->world;
    }
    TRY_RC(ars_trainer_resume_prepare(t));   /* a resumed run keeps its checkpoint's global batch */
    t->local_capacity = (t->global_batch + t->world - 1) / t->world;
    TRY_RC(ars_trainer_agree(t, load_data(t)));
    TRY_RC(ars_sampler_create(&t->sampler, &t->train, t->global_batch, t->rank, t->world, run->seed, 1));
    TRY_RC(ars_batch_alloc(&t->batch, &t->sampler));
    t->steps_per_epoch = ars_sampler_steps_per_epoch(&t->sampler);
    t->total_steps = run->max_steps > 0 ? run->max_steps : (int64_t)run->epochs * t->steps_per_epoch;
    t->schedule = run->schedule;
    TRY_RC(ars_trainer_agree(t, setup_model(t, specs, count)));
    const ars_model *m = &t->model;
    t->dlogits = calloc((size_t)m->max_rows * (size_t)m->out_dim, sizeof(float));
    t->params_before = malloc(sizeof(float) * (m->param_count ? m->param_count : 1));
    t->layer_offsets = calloc((size_t)m->layer_count, sizeof(size_t));
    t->layer_sizes = calloc((size_t)m->layer_count, sizeof(size_t));
    char (*names)[40] = calloc((size_t)m->layer_count, sizeof *names);
    if (!t->dlogits || !t->params_before || !t->layer_offsets || !t->layer_sizes || !names) {
        free(names);
        return ars_error(ARS_ENOMEM, "trainer: out of memory");
    }
    for (int l = 0; l < m->layer_count; l++) {
        t->layer_offsets[l] = m->layers[l].param_offset;
        t->layer_sizes[l] = m->layers[l].param_size;
        memcpy(names[l], m->layers[l].name, sizeof names[l]);
    }
    int rc = ars_history_init(&t->history, m->layer_count, (const char (*)[40])names, run->histogram_bins);
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
    if (rc) return rc;
    TRY_RC(ars_dist_plan_buckets(t->dist, &t->model, (size_t)(run->bucket_mb * 1048576.0),
                                 (size_t)(run->first_bucket_mb * 1048576.0), run->overlap));
    if (t->rank == 0 && t->options->metrics_path) {
        t->metrics = fopen(t->options->metrics_path, t->options->resume_path ? "a" : "w");
        if (!t->metrics)
            return ars_error(ARS_EIO, "cannot write metrics file %s", t->options->metrics_path);
    }
    return 0;
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
        rc = ars_trainer_resume(&t);
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
