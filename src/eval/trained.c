/* trained: a model rebuilt from a checkpoint for evaluate and predict
 * (evaluate.h). Rank 0 checks the file in a child process
 * (ars_ckpt_validate), reads its root attributes and /config and, once
 * the model is built from that run file, its tensors; the other ranks get
 * the run file and the tensors by broadcast. Every step ends in an
 * agreement, so a failure on one rank never leaves another waiting. */
#include "arsenal/evaluate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/ckpt.h"
#include "arsenal/config.h"
#include "arsenal/error.h"
#include "arsenal/optim.h"

static int rank_of(const ars_dist *dist) { return dist ? dist->rank : 0; }

/* Every rank learns whether one failed (t->agreed says how far it is known). */
static int agree(ars_trained *t, ars_dist *dist, int rc)
{
    int agreed = ARS_AGREED_SAME;
    rc = ars_dist_agree(dist, rc, &agreed);
    if (rc) t->agreed = agreed;
    return rc;
}

/* What rank 0 read, for the others. */
typedef struct shared_facts {
    int64_t step;
    int32_t epoch, has_stats;
    double mean, std;
    ars_shape shape;
    char optimizer[16];
    uint64_t text_bytes;   /* /config with its NUL */
} shared_facts;

/* 1 when one of overrides sets key ("run.validation"). */
static int overridden(char *const *overrides, int count, const char *key)
{
    const size_t n = strlen(key);
    for (int i = 0; i < count; i++) {
        const char *o = overrides[i];
        while (*o == ' ') o++;
        if (strncmp(o, key, n) == 0 && (o[n] == '=' || o[n] == ' ')) return 1;
    }
    return 0;
}

/* 1 when override o sets a key that only a user's data set has (a CSV's
 * label, a test file, streaming): with --data such a key describes the set
 * given, not the checkpoint's model, and a run on a built-in set has no
 * such key to override. */
static int data_only(const char *o)
{
    static const char *const keys[] = {"run.label", "run.test_data", "run.stream_data"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        if (overridden((char *const *)&o, 1, keys[k])) return 1;
    return 0;
}

/* The run file with overrides applied; with data_spec, [run] data =
 * data_spec, and what belonged to the run's own data set goes unless an
 * override says otherwise: its validation split (validation = 0), and for
 * a CSV or .npy spec, which holds no test part, its test_data (the file
 * itself is the test part: the set given is the set evaluated). */
static int load_run(const char *text, const char *label, char *const *overrides, int override_count,
                    const char *data_spec, ars_run_config *run, ars_layer_spec **specs, int *count)
{
    ars_config config;
    int rc = ars_config_load_string(&config, text, label);
    if (!rc) rc = ars_config_override_all(&config, overrides, override_count);
    if (!rc && data_spec) {
        char assignment[600];
        if (snprintf(assignment, sizeof assignment, "run.data=%s", data_spec) >= (int)sizeof assignment)
            rc = ars_error(ARS_EINVAL, "--data: a spec of at most 500 characters expected");
        if (!rc) rc = ars_config_override(&config, assignment);
        if (!rc && !overridden(overrides, override_count, "run.validation"))
            rc = ars_config_override(&config, "run.validation=0");
        const ars_user_format format = ars_user_format_of(data_spec);
        if (!rc && (format == ARS_USER_CSV || format == ARS_USER_NPY) &&
            !overridden(overrides, override_count, "run.test_data")) {
            snprintf(assignment, sizeof assignment, "run.test_data=%s", data_spec);
            rc = ars_config_override(&config, assignment);
        }
    }
    if (!rc) rc = ars_config_expand(&config);
    if (!rc) rc = ars_run_config_load(&config, run, specs, count);
    ars_config_free(&config);
    return rc;
}

int ars_trained_open(ars_trained *t, const char *path, char *const *overrides, int override_count,
                     const char *data_spec, ars_dist *dist)
{
    memset(t, 0, sizeof *t);
    t->agreed = ARS_AGREED_SAME;
    snprintf(t->path, sizeof t->path, "%s", path);
    shared_facts facts;
    memset(&facts, 0, sizeof facts);
    char *text = NULL;
    int rc = 0;
    if (rank_of(dist) == 0) {
        /* the whole reader first, in a child: a file that crashes or hangs
         * libhdf5 becomes an error (as for --resume and inspect) */
        rc = ars_ckpt_validate(path);
        ars_ckpt_info info;
        if (!rc) rc = ars_ckpt_read_info(path, &info);
        if (!rc) {
            facts.step = info.step;
            facts.epoch = info.epoch;
            facts.has_stats = info.has_data_stats;
            facts.mean = info.data_mean;
            facts.std = info.data_std;
            facts.shape = info.input_shape;
            snprintf(facts.optimizer, sizeof facts.optimizer, "%s", info.optimizer);
            text = info.config_text;
            info.config_text = NULL;
            facts.text_bytes = strlen(text) + 1;
            ars_ckpt_info_free(&info);
        }
    }
    /* on rank 0 only: the file is rank 0's to read */
    TRY(agree(t, dist, rc));
    rc = ars_dist_broadcast_bytes(dist, &facts, sizeof facts, 0);
    if (!rc && rank_of(dist) != 0 && !(text = malloc(facts.text_bytes)))
        rc = ars_error(ARS_ENOMEM, "%s: out of memory for its run file", path);
    rc = agree(t, dist, rc);   /* every rank has room for the text before it is sent */
    if (!rc && (rc = ars_dist_broadcast_bytes(dist, text, facts.text_bytes, 0)) != 0)
        t->agreed = ARS_AGREED_NONE;   /* a failed broadcast: where the ranks are is not known */
    if (rc) {
        free(text);
        return rc;
    }
    t->step = facts.step;
    t->epoch = facts.epoch;
    t->stats_stored = t->shape_stored = 0;
    if (facts.has_stats) {
        t->stats_stored = 1;
        t->data_mean = facts.mean;
        t->data_std = facts.std;
    }
    if (facts.shape.rank > 0) {
        t->shape_stored = 1;
        t->input_shape = facts.shape;
    }
    memcpy(t->optimizer, facts.optimizer, sizeof t->optimizer);
    t->optimizer[sizeof t->optimizer - 1] = '\0';
    /* every rank parses the same text: they fail alike, and rank 0 reports */
    char label[1100];
    snprintf(label, sizeof label, "%s:/config", path);
    const char *p = text;
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
    if (!*p)
        rc = ars_error(ARS_EFORMAT, "%s is empty: the checkpoint holds no run file to rebuild the model from", label);
    /* the model's pass: without the overrides that describe the --data set only */
    char **model_overrides = override_count ? calloc((size_t)override_count, sizeof *model_overrides) : NULL;
    int model_count = 0;
    if (override_count && !model_overrides) rc = ars_error(ARS_ENOMEM, "out of memory for %d --set", override_count);
    for (int i = 0; i < override_count && !rc; i++)
        if (!data_spec || !data_only(overrides[i])) model_overrides[model_count++] = overrides[i];
    if (!rc)
        rc = load_run(text, label, model_overrides, model_count, NULL, &t->run, &t->specs, &t->spec_count);
    free(model_overrides);
    if (rc) {
        ars_error_context(rc, "rebuilding the model of %s", path);
    } else if (data_spec) {
        /* the run file builds: a failure now is the data spec's */
        ars_layer_spec *specs = NULL;
        int count = 0;
        rc = load_run(text, label, overrides, override_count, data_spec, &t->data_run, &specs, &count);
        free(specs);
        if (rc) ars_error_context(rc, "--data %s", data_spec);
    } else {
        t->data_run = t->run;
    }
    free(text);
    return agree(t, dist, rc);
}

int ars_trained_resolve(ars_trained *t, ars_dist *dist)
{
    int need_stats = !t->stats_stored, need_shape = t->input_shape.rank == 0;
    if (need_stats && !t->run.standardize) {   /* the run applied none: nothing to recompute */
        t->data_mean = 0;
        t->data_std = 1;
        need_stats = 0;
    }
    if (!need_stats && !need_shape) return 0;
    ars_run_config run = t->run;
    if (!need_stats) run.standardize = 0;
    ars_dataset train, test;
    memset(&train, 0, sizeof train);
    memset(&test, 0, sizeof test);
    double mean = 0, std = 1;
    int rc = ars_load_run_data_stats(&run, rank_of(dist), need_stats ? run.train_limit : 1, &train, &test, &mean,
                                     &std);
    if (!rc && need_stats && !(isfinite(mean) && isfinite(std)))
        rc = ars_error(ARS_EINVAL, "the loader of data %s standardized it without saying how (mean, std unknown)",
                       run.data);
    if (!rc && need_stats) {
        t->data_mean = mean;
        t->data_std = std;
    }
    if (!rc && need_shape) t->input_shape = ars_dataset_shape(&train);
    ars_dataset_free(&train);
    ars_dataset_free(&test);
    if (rc)
        ars_error_context(rc, "%s predates the stored %s; recomputing %s from the run's training data (data = %s) "
                          "failed", t->path, need_stats ? "data_mean/data_std" : "input_shape",
                          need_stats ? "the standardization" : "the input shape", t->run.data);
    return agree(t, dist, rc);
}

int ars_trained_build(ars_trained *t, int max_rows, ars_dist *dist)
{
    if (t->input_shape.rank == 0) return agree(t, dist, ars_error(ARS_EINVAL, "%s: input shape unknown", t->path));
    int rc = ars_model_create(&t->model, t->specs, t->spec_count, t->input_shape, max_rows);
    if (rc) ars_error_context(rc, "rebuilding the model of %s", t->path);
    t->built = rc == 0;
    TRY(agree(t, dist, rc));
    if (rank_of(dist) == 0) {
        /* no optimizer state is wanted: m and v stay NULL, the kind is the file's own */
        ars_optimizer opt;
        memset(&opt, 0, sizeof opt);
        opt.config = t->run.optim;
        if (ars_optimizer_parse(t->optimizer, &opt.config.kind)) ars_error_clear();
        rc = ars_ckpt_load(t->path, &t->model, &opt);
        if (rc) ars_error_context(rc, "loading the weights of %s", t->path);
    }
    TRY(agree(t, dist, rc));
    /* rank 0's layouts (the checkpoint's), so that every rank rounds alike */
    const int count = t->model.layer_count;
    int *tunings = malloc(sizeof(int) * (size_t)(count + 1));
    rc = tunings ? 0 : ars_error(ARS_ENOMEM, "out of memory for %d layers", count);
    rc = agree(t, dist, rc);
    if (rc) {
        free(tunings);
        return rc;
    }
    for (int i = 0; i < count; i++) tunings[i] = t->model.layers[i].tuning;
    rc = ars_dist_broadcast_bytes(dist, tunings, sizeof(int) * (size_t)count, 0);
    for (int i = 0; !rc && i < count; i++) t->model.layers[i].tuning = tunings[i];
    free(tunings);
    if (!rc) rc = ars_dist_broadcast_float(dist, t->model.params, t->model.param_count, 0);
    if (!rc) rc = ars_dist_broadcast_float(dist, t->model.state, t->model.state_count, 0);
    if (rc) t->agreed = ARS_AGREED_NONE;   /* a broadcast failed: the ranks may disagree on where they are */
    return rc;
}

void ars_trained_free(ars_trained *t)
{
    if (t->built) ars_model_destroy(&t->model);
    free(t->specs);
    t->specs = NULL;
    t->built = 0;
}

int ars_trained_is_classifier(const ars_trained *t) { return t->run.loss == ARS_LOSS_CROSS_ENTROPY; }

void ars_trained_standardize(const ars_trained *t, float *x, int rows)
{
    if (t->data_mean == 0 && t->data_std == 1) return;   /* (x - 0) * 1 is x */
    ars_dataset view;
    memset(&view, 0, sizeof view);
    view.count = rows;
    view.dim = t->model.in_dim;
    view.x = x;
    ars_dataset_standardize(&view, t->data_mean, t->data_std);
}

/* shape without its dimensions of size 1 */
static ars_shape squeeze(const ars_shape *shape)
{
    ars_shape out;
    memset(&out, 0, sizeof out);
    for (int i = 0; i < shape->rank; i++)
        if (shape->dims[i] != 1) out.dims[out.rank++] = shape->dims[i];
    return out;
}

int ars_trained_check_shape(const ars_shape *model, const ars_shape *data, const char *ckpt, const char *where)
{
    const double want = ars_shape_count(model), have = ars_shape_count(data);
    if (want == have) {
        ars_shape a = squeeze(model), b = squeeze(data);
        /* row-major, a flat side reads the other's values in the same order */
        if (data->rank == 1 || model->rank == 1 || ars_shape_equal(model, data) || ars_shape_equal(&a, &b)) return 0;
    }
    char a[48], b[48];
    return ars_error(ARS_EINVAL, "%s: samples of shape %s (%.0f value%s) do not fit the model of %s, which takes %s "
                     "(%.0f value%s)", where, ars_shape_text(data, b, sizeof b), have, have == 1 ? "" : "s", ckpt,
                     ars_shape_text(model, a, sizeof a), want, want == 1 ? "" : "s");
}
