/* trainer_ckpt: when the training loop writes checkpoints (every
 * ckpt_every steps, each epoch, at the end; keeping the last ckpt_keep) and
 * how it resumes from one. Rank 0 reads and writes files; the others get
 * tensors by broadcast, so a resume works without a shared file system.
 * The HDF5 layout itself lives in ckpt.c. */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arsenal/ckpt.h"
#include "arsenal/error.h"
#include "cure.h"
#include "fs.h"
#include "gemm.h"
#include "gemm_bf16.h"
#include "trainer.h"

static pthread_mutex_t ckpt_dir_mutex = PTHREAD_MUTEX_INITIALIZER;

void ars_ckpt_dir_lock(void) { pthread_mutex_lock(&ckpt_dir_mutex); }
int ars_ckpt_dir_trylock(void) { return pthread_mutex_trylock(&ckpt_dir_mutex) == 0; }
void ars_ckpt_dir_unlock(void) { pthread_mutex_unlock(&ckpt_dir_mutex); }

static int is_checkpoint_name(const char *name)
{
    size_t n = strlen(name);
    return n == strlen("ckpt-00000000.h5") && strncmp(name, "ckpt-", 5) == 0 && strcmp(name + n - 3, ".h5") == 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Deletes all but the newest keep checkpoints (names sort by step). */
static void prune(const char *dir, int keep)
{
    DIR *d = opendir(dir);
    if (!d) return;
    char **names = NULL;
    size_t count = 0, capacity = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!is_checkpoint_name(e->d_name)) continue;
        if (count == capacity) {
            capacity = capacity ? 2 * capacity : 16;
            char **grown = realloc(names, capacity * sizeof *names);
            if (!grown) break;
            names = grown;
        }
        names[count++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, count, sizeof *names, compare_names);
    for (size_t i = 0; i < count; i++) {
        if (i + (size_t)keep < count && names[i]) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            unlink(path);
        }
        free(names[i]);
    }
    free(names);
}

/* latest.h5 -> ckpt-<step>.h5, replaced atomically. */
static void point_latest(const char *dir, const char *name)
{
    char link_path[4096], tmp[4200];
    snprintf(link_path, sizeof link_path, "%s/latest.h5", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", link_path, (long)getpid());
    unlink(tmp);
    if (symlink(name, tmp) == 0 && rename(tmp, link_path) != 0) unlink(tmp);
}

static int write_checkpoint(ars_trainer *t, const ars_optimizer *opt)
{
    const char *dir = t->options->ckpt_dir;
    char name[64], path[4096];
    snprintf(name, sizeof name, "ckpt-%08lld.h5", (long long)t->step);
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return ars_error(ARS_EINVAL, "--ckpt-dir: path too long");
    ars_ckpt_state state = {
        .step = t->step, .epoch = (int)(t->step / t->steps_per_epoch), .steps_per_epoch = t->steps_per_epoch,
        .world_size = t->world, .global_batch = t->global_batch, .seed = t->run->seed,
        .nonfinite_steps = t->nonfinite_steps, .last_loss = t->last_loss, .test_loss = t->test_loss,
        .test_accuracy = t->test_accuracy, .config_text = ars_cure_config_text(t), .has_data_stats = isfinite(t->data_mean) && isfinite(t->data_std),
        .data_mean = t->data_mean, .data_std = t->data_std, .precision = ars_precision_name(t->precision)};
    int rc = ars_ckpt_write(path, &t->model, opt, &t->history, &state);
    if (rc) return rc;
    point_latest(dir, name);
    prune(dir, t->run->ckpt_keep);
    if (!t->options->quiet) {
        printf("checkpoint %s\n", path);
        fflush(stdout);
    }
    return 0;
}

static int make_ckpt_dir(const ars_trainer *t)
{
    return t->options->ckpt_dir_in_place ? ars_make_directory("--ckpt-dir", t->options->ckpt_dir)
                                         : ars_make_directories("--ckpt-dir", t->options->ckpt_dir);
}

/* Sharded, rank 0 writes the whole optimizer state: every rank's slice of
 * m and v gathered into full buffers, held for the write only, so the file
 * is the unsharded one; and the last step's summed gradient (/grad), each
 * slice gathered into rank 0's gradient buffer, whose other parts held its
 * own gradient, read by nothing after the step. *full is t->opt unsharded.
 * Collective. */
static int gather_optimizer(ars_trainer *t, ars_optimizer *full)
{
    *full = t->opt;
    if (!t->shard) return 0;
    const size_t n = t->model.param_count;
    int rc = 0;
    full->m = full->v = NULL;
    full->count = n;
    if (t->rank == 0 && ((t->opt.m && !(full->m = malloc(sizeof(float) * (n + 1)))) ||
                         (t->opt.v && !(full->v = malloc(sizeof(float) * (n + 1))))))
        rc = ars_error(ARS_ENOMEM, "checkpoint: no memory to gather the optimizer state of %zu parameters", n);
    TRY(ars_trainer_agree(t, rc));
    ars_watchdog_enter(t->watchdog, t->step, "optimizer state gather (checkpoint)");
    if (t->opt.m) rc = ars_dist_gather_to_root(t->dist, t->opt.m, full->m);
    if (!rc && t->opt.v) rc = ars_dist_gather_to_root(t->dist, t->opt.v, full->v);
    if (!rc) rc = ars_dist_gather_in_place_to_root(t->dist, t->model.grads);
    ars_watchdog_leave(t->watchdog);
    return rc;
}

static void free_gathered(const ars_trainer *t, ars_optimizer *full)
{
    if (t->shard) ars_optimizer_destroy(full);
}

int ars_trainer_checkpoint(ars_trainer *t)
{
    if (!t->options->ckpt_dir || t->last_ckpt_step == t->step) return 0;
    ars_optimizer full;
    int rc = gather_optimizer(t, &full);
    if (rc) {
        free_gathered(t, &full);
        return rc;
    }
    if (t->rank == 0) {
        ars_ckpt_dir_lock();
        rc = make_ckpt_dir(t);
        if (!rc) rc = write_checkpoint(t, &full);
        ars_ckpt_dir_unlock();
    }
    free_gathered(t, &full);
    rc = ars_trainer_agree(t, rc);
    if (!rc) t->last_ckpt_step = t->step;
    return rc;
}

int ars_trainer_epoch_end(ars_trainer *t) { return ars_trainer_checkpoint(t); }

int ars_trainer_finish(ars_trainer *t) { return ars_trainer_checkpoint(t); }

int ars_trainer_resume_prepare(ars_trainer *t)
{
    t->last_ckpt_step = -1;
    t->precision = t->run->precision;
    int rc = 0;
    if (t->options->ckpt_dir && t->rank == 0) {   /* fail early */
        ars_ckpt_dir_lock();
        rc = make_ckpt_dir(t);
        ars_ckpt_dir_unlock();
    }
    TRY(ars_trainer_agree(t, rc));
    if (!t->options->resume_path) return 0;
    int64_t facts[4] = {0, 0, 0, 0};   /* step, global batch, non-finite steps, precision */
    if (t->rank == 0) {
        ars_ckpt_info info;
        /* Rank 0 reads the whole file in a child process first: a file that
         * crashes or hangs libhdf5 becomes an error every rank agrees on. */
        rc = ars_ckpt_validate(t->options->resume_path);
        if (!rc) rc = ars_ckpt_read_info(t->options->resume_path, &info);
        if (!rc) {
            facts[0] = info.step;
            facts[1] = info.global_batch;
            facts[2] = info.nonfinite_steps;
            t->test_accuracy = info.test_accuracy;
            t->test_loss = info.test_loss;
            t->last_loss = info.last_loss;
            if (info.seed != t->run->seed)
                rc = ars_error(ARS_EINVAL, "--resume %s: the checkpoint's seed is %llu, the run file's %llu; "
                               "a resumed run must keep its seed", t->options->resume_path,
                               (unsigned long long)info.seed, (unsigned long long)t->run->seed);
            if (!rc && info.global_batch != t->global_batch && !t->options->quiet)
                printf("resume: keeping the checkpoint's global batch %d (the run file asks for %d on %d ranks)\n",
                       info.global_batch, t->global_batch, t->world);
            /* the checkpoint's precision, unless the run file (or --set) names one */
            ars_precision stored = ARS_PRECISION_FP32;
            if (!rc) rc = ars_precision_parse(info.precision, &stored);
            facts[3] = t->run->precision_set ? t->run->precision : (int)stored;
            if (!rc && (int)stored != facts[3] && !t->options->quiet)
                printf("resume: precision %s as [run] precision says (the checkpoint was trained in %s)\n",
                       ars_precision_name((ars_precision)facts[3]), info.precision);
            else if (!rc && stored != ARS_PRECISION_FP32 && !t->run->precision_set && !t->options->quiet)
                printf("resume: keeping the checkpoint's precision %s\n", info.precision);
            ars_ckpt_info_free(&info);
        }
    }
    TRY(ars_trainer_agree(t, rc));
    TRY(ars_dist_broadcast_bytes(t->dist, facts, sizeof facts, 0));
    t->step = facts[0];
    t->global_batch = (int)facts[1];
    t->nonfinite_steps = facts[2];
    t->precision = (int)facts[3];
    t->last_ckpt_step = t->step;   /* do not rewrite the checkpoint we start from */
    return 0;
}

int ars_trainer_share_tunings(ars_trainer *t)
{
    const int count = t->model.layer_count;
    int *tunings = malloc(sizeof(int) * (size_t)count);
    if (!tunings) return ars_error(ARS_ENOMEM, "out of memory for %d layers", count);
    for (int i = 0; i < count; i++) tunings[i] = t->model.layers[i].tuning;
    int rc = ars_dist_broadcast_bytes(t->dist, tunings, sizeof(int) * (size_t)count, 0);
    for (int i = 0; !rc && i < count; i++) t->model.layers[i].tuning = tunings[i];
    free(tunings);
    if (rc) return rc;
    /* the matrix products' layouts (src/gemm.h): rank 0's plan, installed on every rank */
    ars_model *model = &t->model;
    int plan[2] = {model->gemm_plan_count, model->gemm_restored};
    TRY(ars_dist_broadcast_bytes(t->dist, plan, sizeof plan, 0));
    if (t->rank != 0) {
        free(model->gemm_plan);
        model->gemm_plan = plan[0] ? malloc(sizeof *model->gemm_plan * (size_t)plan[0]) : NULL;
        model->gemm_plan_count = model->gemm_plan || !plan[0] ? plan[0] : 0;
        model->gemm_restored = plan[1];
        rc = model->gemm_plan || !plan[0] ? 0 : ars_error(ARS_ENOMEM, "out of memory for %d products", plan[0]);
    }
    TRY(ars_trainer_agree(t, rc));
    if (plan[0])
        TRY(ars_dist_broadcast_bytes(t->dist, model->gemm_plan, sizeof *model->gemm_plan * (size_t)plan[0], 0));
    return ars_trainer_agree(t, ars_gemm_install(model->gemm_plan, model->gemm_plan_count));
}

int ars_trainer_resume(ars_trainer *t)
{
    if (!t->options->resume_path) return 0;
    int rc = 0;
    /* sharded, rank 0 reads the whole optimizer state and scatters the slices */
    ars_optimizer full = t->opt;
    if (t->shard && t->rank == 0)
        rc = ars_optimizer_create(&full, &t->opt.config, t->model.param_count);
    if (!rc && t->rank == 0) {
        rc = ars_ckpt_load(t->options->resume_path, &t->model, &full);
        ars_history history;
        if (!rc) rc = ars_ckpt_read_history(t->options->resume_path, &history);
        if (!rc) {
            if (history.layer_count != t->model.layer_count) {
                rc = ars_error(ARS_EFORMAT, "%s: history of %d layers, model of %d", t->options->resume_path,
                               history.layer_count, t->model.layer_count);
                ars_history_free(&history);
            } else {
                ars_history_free(&t->history);   /* continue the recorded history */
                t->history = history;
            }
        }
        if (rc) ars_error_context(rc, "--resume");
    }
    rc = ars_trainer_agree(t, rc);
    if (!rc) rc = ars_trainer_share_tunings(t);   /* the checkpoint's, read on rank 0 */
    const size_t n = t->model.param_count;
    if (!rc) rc = ars_dist_broadcast_float(t->dist, t->model.params, n, 0);
    if (!rc) rc = ars_dist_broadcast_float(t->dist, t->model.state, t->model.state_count, 0);
    if (t->shard) {
        if (!rc && t->opt.m) rc = ars_dist_scatter_from_root(t->dist, full.m, t->opt.m);
        if (!rc && t->opt.v) rc = ars_dist_scatter_from_root(t->dist, full.v, t->opt.v);
        if (t->rank == 0) {
            t->opt.step = full.step;
            ars_optimizer_destroy(&full);
        }
    } else {
        t->opt = full;   /* loaded in place */
        if (!rc && t->opt.m) rc = ars_dist_broadcast_float(t->dist, t->opt.m, n, 0);
        if (!rc && t->opt.v) rc = ars_dist_broadcast_float(t->dist, t->opt.v, n, 0);
    }
    TRY(rc);
    TRY(ars_dist_broadcast_bytes(t->dist, &t->opt.step, sizeof t->opt.step, 0));
    double figures[3] = {t->test_accuracy, t->test_loss, t->last_loss};
    TRY(ars_dist_broadcast_bytes(t->dist, figures, sizeof figures, 0));
    t->test_accuracy = figures[0];
    t->test_loss = figures[1];
    t->last_loss = figures[2];
    t->epochs_done = (int)(t->step / t->steps_per_epoch);
    if (t->rank == 0 && !t->options->quiet)
        printf("resumed from %s at step %lld (epoch %d)\n", t->options->resume_path, (long long)t->step,
               t->epochs_done);
    return 0;
}
