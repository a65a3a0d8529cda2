/* exp_run: one configuration of the experiment. Loads its run-file text
 * like `arsenal train` does, trains it on every rank with a checkpoint
 * directory, then (rank 0) reads the gradient history back from the last
 * checkpoint and reduces it to the figures the sections judge: the first
 * weight layer's (dense or convolution) gradient relative to the output
 * layer's at step 0 and at the end, the step the loss first went
 * non-finite, how fast the loss fell, the health rules' diagnosis. A text
 * trained before is not trained again. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mpi.h>

#include "arsenal/ckpt.h"
#include "arsenal/config.h"
#include "arsenal/health.h"
#include "arsenal/history.h"
#include "arsenal/train.h"
#include "experiment.h"

enum { SMOOTH_RECORDS = 3, END_RECORDS = 5 };

void ars_exp_run_free(ars_exp_run *run)
{
    if (!run) return;
    ars_exp_curve *curves[] = {&run->loss, &run->accuracy, &run->flow_start, &run->flow_end};
    for (size_t i = 0; i < sizeof curves / sizeof curves[0]; i++) {
        free(curves[i]->x);
        free(curves[i]->y);
    }
    free(run->config_text);
    free(run);
}

static int curve_alloc(ars_exp_curve *c, size_t n)
{
    c->count = 0;
    c->x = calloc(n ? n : 1, sizeof *c->x);
    c->y = calloc(n ? n : 1, sizeof *c->y);
    return c->x && c->y ? 0 : ars_error(ARS_ENOMEM, "experiment: out of memory");
}

/* A weight layer: dense or conv2d ("007_conv2d"). The gradient ratio is
 * the first one's over the last one's (the output layer). The 1x1
 * projections of image shortcuts belong to residual_add layers and do not
 * count, as He et al. count depth. */
static int is_weight_layer(const char *name)
{
    const char *kind = strchr(name, '_');
    return kind && (strcmp(kind + 1, "dense") == 0 || strcmp(kind + 1, "conv2d") == 0);
}

static int record_finite(const ars_history *h, size_t r)
{
    return !h->steps[r].nonfinite && isfinite(h->steps[r].loss) && isfinite(h->steps[r].grad_norm);
}

static double recorded_norm(const ars_history *h, size_t r, int layer)
{
    return ars_history_layer_values(h, r)[(size_t)ARS_HIST_GRAD_NORM * (size_t)h->layer_count + (size_t)layer];
}

/* A layer's gradient norm before clipping. The layers partition the
 * parameters, so their recorded norms, whatever clipping did to them (one
 * factor for all), add up in squares to the global norm once rescaled to
 * the record's global norm before clipping. */
static double grad_norm(const ars_history *h, size_t r, int layer)
{
    double squares = 0;
    for (int l = 0; l < h->layer_count; l++) squares += recorded_norm(h, r, l) * recorded_norm(h, r, l);
    double factor = squares > 0 && isfinite(h->steps[r].grad_norm) ? h->steps[r].grad_norm / sqrt(squares) : 1;
    return recorded_norm(h, r, layer) * factor;
}

static double ratio_at(const ars_history *h, size_t r, int first, int last)
{
    double out = recorded_norm(h, r, last);
    return out > 0 ? recorded_norm(h, r, first) / out : NAN;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Gradient norms of the weight layers (input side first) at record r. */
static int flow_at(const ars_history *h, size_t r, ars_exp_curve *c)
{
    int rc = curve_alloc(c, (size_t)h->layer_count);
    for (int l = 0; l < h->layer_count && !rc; l++) {
        if (!is_weight_layer(h->layer_names[l])) continue;
        c->x[c->count] = c->count + 1;
        c->y[c->count++] = grad_norm(h, r, l);
    }
    return rc;
}

/* "layers 000-036", or when that list is long "37 layers from 003 to 285". */
static void flagged_layers(const ars_history *h, const ars_health_monitor *m, ars_health_problem p, char *out,
                           size_t size)
{
    const unsigned char *ever = ars_health_ever(m, p);
    char list[512];
    ars_health_format_layers((const char (*)[40])h->layer_names, h->layer_count, ever, ars_health_candidates(m, p),
                             list, sizeof list);
    if (strlen(list) <= 40) {
        snprintf(out, size, "%s", list);
        return;
    }
    int count = 0, first = -1, last = -1;
    for (int l = 0; l < h->layer_count; l++)
        if (ever[l]) {
            count++;
            if (first < 0) first = l;
            last = l;
        }
    snprintf(out, size, "%d layers from %.*s to %.*s", count, (int)strcspn(h->layer_names[first], "_"),
             h->layer_names[first], (int)strcspn(h->layer_names[last], "_"), h->layer_names[last]);
}

/* Names of the problems the health rules find in h, with the layers of the
 * per-layer ones: "vanishing gradient (layers 000-036), loss plateau". */
static void diagnose(const ars_history *h, const char *optimizer, char *out, size_t size)
{
    ars_health_config config;
    ars_health_monitor monitor;
    out[0] = '\0';
    ars_health_config_defaults(&config);
    if (ars_health_init(&monitor, &config, h->layer_count, (const char (*)[40])h->layer_names, NULL, optimizer))
        return;
    if (ars_health_observe(&monitor, h, NULL, NULL) == 0) {
        for (int p = 0; p < ARS_HEALTH_PROBLEMS; p++) {
            if (monitor.summary[p].episodes == 0) continue;
            char layers[160] = "";
            const unsigned char *ever = ars_health_ever(&monitor, (ars_health_problem)p);
            int per_layer = 0;
            for (int l = 0; l < h->layer_count; l++) per_layer |= ever[l];
            if (per_layer) flagged_layers(h, &monitor, (ars_health_problem)p, layers, sizeof layers);
            size_t used = strlen(out);
            snprintf(out + used, size - used, "%s%s%s%s%s", used ? ", " : "",
                     ars_health_problem_name((ars_health_problem)p), per_layer ? " (" : "", layers,
                     per_layer ? ")" : "");
        }
    }
    ars_health_free(&monitor);
}

/* The figures of a run from its history (rank 0). */
static int measure(ars_exp_run *run, const ars_history *h, const char *optimizer)
{
    int first = -1, last = -1;
    for (int l = 0; l < h->layer_count; l++)
        if (is_weight_layer(h->layer_names[l])) {
            if (first < 0) first = l;
            last = l;
        }
    size_t T = h->count;
    int rc = curve_alloc(&run->loss, T);
    if (!rc) rc = curve_alloc(&run->accuracy, h->eval_count);
    if (rc) return rc;
    size_t finite = 0, first_finite = T, last_finite = T, clipped = 0;
    double window[SMOOTH_RECORDS] = {0}, ratios[END_RECORDS];
    for (size_t r = 0; r < T; r++) {
        const ars_history_step *s = &h->steps[r];
        run->loss.x[run->loss.count] = (double)s->step;
        run->loss.y[run->loss.count++] = isfinite(s->loss) ? s->loss : NAN;
        if (!record_finite(h, r)) {
            if (run->first_nonfinite < 0) run->first_nonfinite = s->step;
            continue;
        }
        if (first_finite == T) first_finite = r;
        last_finite = r;
        window[finite % SMOOTH_RECORDS] = s->loss;
        finite++;
        if (finite >= SMOOTH_RECORDS && run->steps_to_target < 0) {
            double mean = 0;
            for (int i = 0; i < SMOOTH_RECORDS; i++) mean += window[i] / SMOOTH_RECORDS;
            if (mean < ARS_EXP_LOSS_TARGET) run->steps_to_target = s->step;
        }
        run->max_grad_norm = isfinite(run->max_grad_norm) ? fmax(run->max_grad_norm, s->grad_norm) : s->grad_norm;
        clipped += s->clip_scale < 1;
    }
    for (size_t k = 0; k < h->eval_count; k++) {
        run->accuracy.x[run->accuracy.count] = (double)h->evals[k].step;
        run->accuracy.y[run->accuracy.count++] = h->evals[k].test_accuracy;
    }
    if (finite) {
        run->clipped_fraction = (double)clipped / (double)finite;
        run->loss_start = h->steps[first_finite].loss;
    }
    /* The loss at the end: the last records' mean, NaN if any is non-finite. */
    size_t tail = T < END_RECORDS ? T : END_RECORDS;
    double sum = 0;
    for (size_t r = T - tail; r < T; r++) sum += h->steps[r].loss;
    run->loss_end = tail ? sum / (double)tail : NAN;
    if (first >= 0 && last > first && finite) {
        /* step 0 when it is finite; the end as the median of the last finite records */
        if (record_finite(h, 0)) {
            run->ratio_start = ratio_at(h, 0, first, last);
            run->first_grad_start = grad_norm(h, 0, first);
        }
        int n = 0;
        for (size_t r = T; r-- > 0 && n < END_RECORDS;)
            if (record_finite(h, r)) ratios[n++] = ratio_at(h, r, first, last);
        qsort(ratios, (size_t)n, sizeof ratios[0], compare_doubles);
        run->ratio_end = n ? ratios[n / 2] : NAN;
        run->first_grad_end = grad_norm(h, last_finite, first);
        rc = flow_at(h, first_finite, &run->flow_start);
        if (!rc) rc = flow_at(h, last_finite, &run->flow_end);
        if (rc) return rc;
    }
    diagnose(h, optimizer, run->diagnosis, sizeof run->diagnosis);
    run->cures = (int)h->cure_count;
    run->first_cure_step = h->cure_count ? h->cures[0].step : -1;
    for (size_t k = 0; k < h->cure_count; k++) {
        size_t used = strlen(run->cure_text);
        snprintf(run->cure_text + used, sizeof run->cure_text - used, "%sstep %lld, %s: %s%s", k ? "; " : "",
                 (long long)h->cures[k].step, h->cures[k].rule, h->cures[k].change,
                 strcmp(h->cures[k].status, "active") == 0 ? "" : " (reverted)");
    }
    run->measured = 1;
    return 0;
}

void ars_exp_remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *entry; (entry = readdir(d));) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) ars_exp_remove_tree(path);
        else unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static ars_exp_run *run_new(ars_exp *e, const char *key, const char *config_text)
{
    if (e->run_count == e->run_capacity) {
        int grown = e->run_capacity ? 2 * e->run_capacity : 32;
        ars_exp_run **p = realloc(e->runs, sizeof *p * (size_t)grown);
        if (!p) return NULL;
        e->runs = p;
        e->run_capacity = grown;
    }
    ars_exp_run *run = calloc(1, sizeof *run);
    if (!run) return NULL;
    run->config_text = strdup(config_text);
    if (!run->config_text) {
        free(run);
        return NULL;
    }
    snprintf(run->key, sizeof run->key, "%s", key);
    for (int i = 0, suffix = 2; i < e->run_count; i++)   /* keys stay unique */
        if (strcmp(e->runs[i]->key, run->key) == 0) {
            snprintf(run->key, sizeof run->key, "%.50s-%d", key, suffix++);
            i = -1;
        }
    run->test_accuracy = run->test_loss = NAN;
    run->first_nonfinite = run->steps_to_target = run->first_cure_step = -1;
    run->ratio_start = run->ratio_end = run->first_grad_start = run->first_grad_end = NAN;
    run->loss_start = run->loss_end = run->max_grad_norm = run->clipped_fraction = NAN;
    e->runs[e->run_count++] = run;
    return run;
}

static void log_run(const ars_exp *e, const ars_exp_run *run, int cached)
{
    if (!e->log) return;
    if (run->error) {
        fprintf(e->log, "  %-28s failed: %s\n", run->key, run->error_text);
    } else {
        char ratio[32] = "";
        if (isfinite(run->ratio_start)) snprintf(ratio, sizeof ratio, ", grad first/last %.1e", run->ratio_start);
        fprintf(e->log, "  %-28s %5lld steps %6.1fs  test accuracy %5.1f%%%s%s%s\n", run->key,
                (long long)run->steps, run->seconds, 100 * run->test_accuracy, ratio,
                run->nonfinite_steps ? ", non-finite steps" : "", cached ? " (same run as before)" : "");
    }
    fflush(e->log);
}

int ars_exp_train(ars_exp *e, const char *key, const char *config_text, ars_exp_run **out)
{
    for (int i = 0; i < e->run_count; i++)
        if (strcmp(e->runs[i]->config_text, config_text) == 0) {
            *out = e->runs[i];
            log_run(e, *out, 1);
            return 0;
        }
    ars_exp_run *run = run_new(e, key, config_text);
    if (!run) return ars_error(ARS_ENOMEM, "experiment: out of memory");
    *out = run;

    ars_config config;
    ars_run_config settings;
    ars_layer_spec *specs = NULL;
    int count = 0;
    int rc = ars_config_load_string(&config, config_text, run->key);
    if (!rc) rc = ars_config_expand(&config);
    if (!rc) rc = ars_run_config_load(&config, &settings, &specs, &count);
    if (rc) {   /* the experiment wrote a bad run file: a bug, not a result */
        ars_config_free(&config);
        return ars_error_context(rc, "experiment configuration %s", run->key);
    }
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/%s", e->runs_dir, run->key);
    char *resolved = ars_config_to_string(&config);
    /* in place: the runs directory exists (the experiment made it), and a
     * cleanup on SIGINT/SIGTERM may remove it under training */
    ars_train_options options = {.ckpt_dir = dir, .ckpt_dir_in_place = 1, .quiet = 1, .config_text = resolved};
    ars_train_result result;
    rc = ars_train(&settings, specs, count, e->dist, &options, &result);
    free(resolved);
    free(specs);
    ars_config_free(&config);
    run->steps = result.steps;
    run->test_accuracy = result.test_accuracy;
    run->test_loss = result.test_loss;
    run->seconds = result.seconds;
    run->nonfinite_steps = result.nonfinite_steps;
    if (rc) {
        if (rc != ARS_EPEER && !result.agreed && e->world > 1) {   /* the others are stuck: end the job */
            fprintf(stderr, "arsenal: experiment %s: %s\narsenal: rank %d ends the job\n", run->key,
                    ars_error_message(), e->rank);
            fflush(stderr);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        run->error = 1;   /* every rank knows: record it and go on */
        snprintf(run->error_text, sizeof run->error_text, "%s", ars_error_message());
        ars_error_clear();
    }
    if (e->rank == 0 && !run->error) {
        char path[1300];
        ars_history history;
        snprintf(path, sizeof path, "%s/latest.h5", dir);
        if (ars_ckpt_read_history(path, &history) == 0) {
            rc = measure(run, &history, ars_optimizer_name(settings.optim.kind));
            ars_history_free(&history);
            if (rc) return rc;
        } else {
            snprintf(run->diagnosis, sizeof run->diagnosis, "history unreadable: %.200s", ars_error_message());
            ars_error_clear();
        }
    }
    if (e->rank == 0 && !e->keep_runs) ars_exp_remove_tree(dir);
    log_run(e, run, 0);
    return 0;
}
