/* run_config: maps the run file onto an ars_run_config and the layer specs,
 * validating every key (range, choices); unknown keys are caught at the end
 * by ars_config_check_unused. A layer section is read by its kind's entry
 * in the registry (ars_layer_kind.parse), through the ars_layer_parse_*
 * getters defined here. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/data.h"
#include "arsenal/error.h"
#include "arsenal/init.h"
#include "arsenal/train.h"
#include "gemm_bf16.h"

static int get_int(ars_config *c, ars_config_section *s, const char *key, long fallback, long min, long max,
                   int *out)
{
    long v;
    TRY(ars_config_get_int(c, s, key, fallback, min, max, &v));
    *out = (int)v;
    return 0;
}

static int get_float(ars_config *c, ars_config_section *s, const char *key, double fallback, double min,
                     double max, float *out)
{
    double v;
    TRY(ars_config_get_double(c, s, key, fallback, min, max, &v));
    *out = (float)v;
    return 0;
}

/* A user data spec (data.h) as the value of key: an error names the file and
 * line (or the --set) and what the spec lacks. */
static int user_spec_check(ars_config *c, ars_config_section *s, const char *key, const char *value)
{
    ars_user_spec spec;
    if (ars_user_spec_parse(value, &spec) == 0) return 0;
    int line = 0;
    for (int i = 0; i < s->entry_count; i++)
        if (strcmp(s->entries[i].key, key) == 0) line = s->entries[i].line;
    if (line) return ars_error_context(ARS_EINVAL, "%s:%d: [run] %s", c->path, line, key);
    return ars_error_context(ARS_EINVAL, "--set run.%s", key);
}

static int load_run_section(ars_config *c, ars_config_section *s, ars_run_config *run)
{
    /* the last three stand for every user spec, which is read before the choices */
    static const char *const data_sets[] = {"fashion-mnist", "mnist", "spirals", "blobs", "teacher", "adding",
                                            "copy", "hdf5:PATH", "csv:PATH", "npy:XPATH,YPATH", NULL};
    static const char *const optimizers[] = {"sgd", "adam", "adamw", NULL};
    static const char *const schedules[] = {"constant", "step", "cosine", NULL};
    static const char *const losses[] = {"cross_entropy", "mse", NULL};
    static const char *const policies[] = {"skip", "stop", NULL};
    static const char *const scopes[] = {"rank", "global", NULL};
    char text[64];
    long big;
    double value;

    memset(run, 0, sizeof *run);
    TRY(ars_config_get_string(c, s, "data", "fashion-mnist", NULL, run->data, sizeof run->data));
    const int user_data = ars_user_format_of(run->data) != ARS_USER_NONE;
    if (!user_data) TRY(ars_config_get_string(c, s, "data", "fashion-mnist", data_sets, run->data, sizeof run->data));
    TRY(ars_config_get_string(c, s, "data_dir", ARS_FASHION_MNIST_DIR, NULL, run->data_dir, sizeof run->data_dir));
    run->stream_data = -1;
    if (user_data) {   /* a user's files (data.h, datasets/README.md); elsewhere these keys are unknown */
        static const char *const streams[] = {"auto", "true", "false", NULL};
        TRY(user_spec_check(c, s, "data", run->data));
        TRY(ars_config_get_string(c, s, "test_data", "", NULL, run->test_data, sizeof run->test_data));
        if (run->test_data[0]) TRY(user_spec_check(c, s, "test_data", run->test_data));
        if (ars_user_format_of(run->data) == ARS_USER_CSV || ars_user_format_of(run->test_data) == ARS_USER_CSV) {
            TRY(ars_config_get_string(c, s, "label", "", NULL, run->label, sizeof run->label));
            if (!run->label[0])
                return ars_error(ARS_EINVAL, "%s: [run] data = %s: a CSV file needs label = <the name of its label "
                                 "column>", c->path, ars_user_format_of(run->data) == ARS_USER_CSV ? run->data
                                 : run->test_data);
        }
        TRY(ars_config_get_string(c, s, "stream_data", "auto", streams, text, sizeof text));
        run->stream_data = strcmp(text, "auto") == 0 ? -1 : strcmp(text, "true") == 0;
    }
    TRY(ars_config_get_double(c, s, "validation", 0, 0, 1, &run->validation));
    if (run->validation >= 1)
        return ars_error(ARS_EINVAL, "%s: [run] validation = %g: expected a fraction in [0, 1) of the training set",
                         c->path, run->validation);
    if (run->validation > 0 && run->test_data[0])
        return ars_error(ARS_EINVAL, "%s: [run] validation = %g and test_data are both set: the validation split is "
                         "the evaluation set; keep one", c->path, run->validation);
    if (strcmp(run->data, "mnist") == 0 && !ars_config_has(s, "data_dir"))
        strcpy(run->data_dir, "/usr/share/datasets/mnist");
    TRY(get_int(c, s, "train_limit", 0, 0, 100000000, &run->train_limit));
    TRY(get_int(c, s, "test_limit", 0, 0, 100000000, &run->test_limit));
    TRY(get_int(c, s, "train_samples", 4000, 1, 100000000, &run->train_samples));
    TRY(get_int(c, s, "test_samples", 1000, 1, 100000000, &run->test_samples));
    TRY(ars_config_get_bool(c, s, "standardize", 1, &run->standardize));
    TRY(get_int(c, s, "augment_crop", 0, 0, 1 << 16, &run->augment_crop));   /* the trainer checks the image */
    TRY(ars_config_get_bool(c, s, "augment_flip", 0, &run->augment_flip));
    if (strcmp(run->data, "adding") == 0 || strcmp(run->data, "copy") == 0)   /* elsewhere: an unknown key */
        TRY(get_int(c, s, "seq_len", 50, 2, 1 << 24, &run->seq_len));

    TRY(get_int(c, s, "epochs", 1, 0, 1000000, &run->epochs));
    TRY(ars_config_get_int(c, s, "max_steps", 0, 0, 1000000000000L, &big));
    run->max_steps = big;
    if (run->epochs == 0 && run->max_steps == 0)
        return ars_error(ARS_EINVAL, "%s: [run] epochs = 0 and max_steps = 0: nothing to train", c->path);
    TRY(get_int(c, s, "batch", 64, 1, 1 << 24, &run->batch));
    TRY(ars_config_get_string(c, s, "batch_scope", "rank", scopes, text, sizeof text));
    run->batch_is_global = strcmp(text, "global") == 0;
    TRY(ars_config_get_int(c, s, "seed", 1, 0, 0x7fffffffffffffffL, &big));
    run->seed = (uint64_t)big;
    const char *default_loss =
        strcmp(run->data, "teacher") == 0 || strcmp(run->data, "adding") == 0 ? "mse" : "cross_entropy";
    TRY(ars_config_get_string(c, s, "loss", default_loss, losses, text, sizeof text));
    TRY(ars_loss_parse(text, &run->loss));

    ars_optimizer_kind kind;
    TRY(ars_config_get_string(c, s, "optimizer", "adam", optimizers, text, sizeof text));
    TRY(ars_optimizer_parse(text, &kind));
    ars_optim_config_defaults(&run->optim, kind);
    TRY(get_float(c, s, "lr", kind == ARS_OPT_SGD ? 0.01 : 1e-3, 0, 1e6, &run->optim.lr));
    TRY(get_float(c, s, "momentum", run->optim.momentum, 0, 1, &run->optim.momentum));
    TRY(ars_config_get_bool(c, s, "nesterov", 0, &run->optim.nesterov));
    if (run->optim.nesterov && run->optim.momentum <= 0)
        return ars_error(ARS_EINVAL, "%s: [run] nesterov = true needs momentum > 0", c->path);
    TRY(get_float(c, s, "weight_decay", run->optim.weight_decay, 0, 1e3, &run->optim.weight_decay));
    TRY(get_float(c, s, "beta1", run->optim.beta1, 0, 0.999999, &run->optim.beta1));
    TRY(get_float(c, s, "beta2", run->optim.beta2, 0, 0.99999999, &run->optim.beta2));
    TRY(get_float(c, s, "eps", run->optim.eps, 1e-30, 1, &run->optim.eps));
    TRY(ars_config_get_bool(c, s, "optimizer_shard", 0, &run->optimizer_shard));
    TRY(get_int(c, s, "accumulate", 1, 1, 1 << 20, &run->accumulate));

    TRY(ars_config_get_string(c, s, "schedule", "constant", schedules, text, sizeof text));
    TRY(ars_schedule_parse(text, &run->schedule.kind));
    TRY(ars_config_get_int(c, s, "warmup_steps", 0, 0, 1000000000L, &big));
    run->schedule.warmup_steps = big;
    TRY(ars_config_get_int(c, s, "step_size", 1000, 1, 1000000000L, &big));
    run->schedule.step_size = big;
    TRY(get_float(c, s, "gamma", 0.1, 0, 1e3, &run->schedule.gamma));
    TRY(get_float(c, s, "min_lr", 0, 0, 1e6, &run->schedule.min_lr));
    TRY(ars_config_get_int(c, s, "total_steps", 0, 0, 1000000000000L, &big));
    run->schedule.total_steps = big;   /* 0: the trainer fills in the run's length */

    TRY(get_float(c, s, "clip_norm", 0, 0, 1e30, &run->clip_norm));
    TRY(get_float(c, s, "clip_value", 0, 0, 1e30, &run->clip_value));
    TRY(ars_config_get_string(c, s, "nonfinite", "skip", policies, text, sizeof text));
    run->nonfinite = strcmp(text, "stop") == 0 ? ARS_NONFINITE_STOP : ARS_NONFINITE_SKIP;

    /* gradient_sync; overlap = auto|on|off is its older spelling. auto:
     * measured (docs/performance.md): with every rank on one host the
     * reduction needs the cores that compute, and summing slices in shared
     * memory is the cheapest way to do it; across hosts overlapping
     * bucketed all-reduces with backward lets the network work meanwhile. */
    if (ars_config_has(s, "gradient_sync") && ars_config_has(s, "overlap"))
        return ars_error(ARS_EINVAL, "[run] gradient_sync and overlap are both set: overlap is the older "
                                     "spelling of gradient_sync (on = overlap, off = allreduce); keep one");
    if (ars_config_has(s, "overlap")) {
        static const char *const overlaps[] = {"auto", "on", "off", "true", "false", "yes", "no", "1", "0", NULL};
        TRY(ars_config_get_string(c, s, "overlap", "auto", overlaps, text, sizeof text));
        run->grad_sync = strcmp(text, "auto") == 0 ? ARS_SYNC_AUTO
                         : strcmp(text, "on") == 0 || strcmp(text, "true") == 0 || strcmp(text, "yes") == 0 ||
                                 strcmp(text, "1") == 0
                             ? ARS_SYNC_OVERLAP
                             : ARS_SYNC_ALLREDUCE;
    } else {
        static const char *const syncs[] = {"auto", "shared_memory", "allreduce", "overlap", NULL};
        static const ars_grad_sync modes[] = {ARS_SYNC_AUTO, ARS_SYNC_SHARED, ARS_SYNC_ALLREDUCE, ARS_SYNC_OVERLAP};
        TRY(ars_config_get_string(c, s, "gradient_sync", "auto", syncs, text, sizeof text));
        for (int i = 0; syncs[i]; i++)
            if (strcmp(text, syncs[i]) == 0) run->grad_sync = modes[i];
    }
    TRY(ars_config_get_double(c, s, "bucket_mb", 4, 0.001, 4096, &run->bucket_mb));
    TRY(ars_config_get_double(c, s, "first_bucket_mb", 1, 0.001, 4096, &run->first_bucket_mb));
    TRY(get_int(c, s, "check_every", 100, 0, 1 << 30, &run->check_every));
    TRY(ars_config_get_double(c, s, "watchdog_seconds", 300, 0, 1e7, &run->watchdog_seconds));
    TRY(get_int(c, s, "log_every", 100, 1, 1 << 30, &run->log_every));
    TRY(get_int(c, s, "probe_every", 10, 1, 1 << 30, &run->probe_every));
    TRY(get_int(c, s, "histogram_every", 0, 0, 1 << 30, &run->histogram_every));
    TRY(get_int(c, s, "histogram_bins", 32, 2, 4096, &run->histogram_bins));
    TRY(get_int(c, s, "ckpt_every", 0, 0, 1 << 30, &run->ckpt_every));
    TRY(get_int(c, s, "ckpt_keep", 3, 1, 1000000, &run->ckpt_keep));
    TRY(ars_config_get_double(c, s, "lsuv_tol", 0.05, 1e-6, 1, &value));
    run->lsuv_tol = value;
    TRY(get_int(c, s, "lsuv_iterations", 10, 1, 1000, &run->lsuv_iterations));
    static const char *const layouts[] = {"measure", "per_sample", "batched", NULL};
    TRY(ars_config_get_string(c, s, "conv_layout", "measure", layouts, text, sizeof text));
    run->conv_layout = strcmp(text, "per_sample") == 0 ? 1 : strcmp(text, "batched") == 0 ? 2 : 0;
    TRY(ars_config_get_bool(c, s, "gemm_tuning", 1, &run->gemm_tuning));
    static const char *const precisions[] = {"fp32", "bf16", "bf16_emulated", NULL};
    ars_precision precision;
    TRY(ars_config_get_string(c, s, "precision", "fp32", precisions, text, sizeof text));
    TRY(ars_precision_parse(text, &precision));
    run->precision = (int)precision;
    run->precision_set = ars_config_has(s, "precision");
    return 0;
}

/* ---- a layer section: what every kind shares, then the kind's own keys ---- */

struct ars_layer_parser {
    ars_config *config;
    ars_config_section *section;
    ars_layer_spec **specs;
    int *count, *capacity;
    char activation[24];   /* `activation = ...` sugar: a layer to append after this one */
};

int ars_layer_parse_int(ars_layer_parser *p, const char *key, long fallback, long min, long max, int *out)
{
    return get_int(p->config, p->section, key, fallback, min, max, out);
}

int ars_layer_parse_float(ars_layer_parser *p, const char *key, double fallback, double min, double max,
                          float *out)
{
    return get_float(p->config, p->section, key, fallback, min, max, out);
}

int ars_layer_parse_bool(ars_layer_parser *p, const char *key, int fallback, int *out)
{
    return ars_config_get_bool(p->config, p->section, key, fallback, out);
}

int ars_layer_parse_string(ars_layer_parser *p, const char *key, const char *fallback,
                           const char *const *choices, char *out, size_t size)
{
    return ars_config_get_string(p->config, p->section, key, fallback, choices, out, size);
}

int ars_layer_parse_has(ars_layer_parser *p, const char *key) { return ars_config_has(p->section, key); }

int ars_layer_parse_pair(ars_layer_parser *p, const char *key, int fallback, int min, int max, int out[2])
{
    out[0] = out[1] = fallback;
    if (!ars_config_has(p->section, key)) return 0;
    char text[64];
    TRY(ars_config_get_string(p->config, p->section, key, "", NULL, text, sizeof text));
    char *end;
    long h = strtol(text, &end, 10), w = h;   /* strtol skips leading blanks */
    int ok = end != text;
    if (ok && (*end == 'x' || *end == ',')) {
        const char *second = end + 1;
        w = strtol(second, &end, 10);
        ok = end != second;
    }
    while (ok && *end == ' ') end++;
    if (!ok || *end != '\0' || h < min || h > max || w < min || w > max)
        return ars_error(ARS_EINVAL, "%s:%d: [%s] %s = %s: expected a size N or HxW, each from %d to %d",
                         p->config->path, p->section->line, p->section->name, key, text, min, max);
    out[0] = (int)h;
    out[1] = (int)w;
    return 0;
}

int ars_layer_parse_error(ars_layer_parser *p, const char *fmt, ...)
{
    char message[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    return ars_error(ARS_EINVAL, "%s:%d: [%s] %s", p->config->path, p->section->line, p->section->name, message);
}

int ars_layer_parse_init(ars_layer_parser *p, ars_layer_spec *spec)
{
    static const char *const modes[] = {"fan_in", "fan_out", NULL};
    static const struct { const char *key; const char *kinds; } args[] = {
        {"init_std", "normal"},
        {"init_bound", "uniform"},
        {"init_gain", "xavier_uniform xavier_normal orthogonal lsuv"},
        {"init_slope", "he_uniform he_normal"},
    };
    ars_config *c = p->config;
    ars_config_section *s = p->section;
    char name[24];
    ars_init_kind kind;
    TRY(ars_config_get_string(c, s, "init", "xavier_uniform", NULL, name, sizeof name));
    if (ars_init_parse(name, &kind))
        return ars_error_context(ARS_EINVAL, "%s:%d: [%s] init", c->path, s->line, s->name);
    strcpy(spec->init, name);
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++) {
        if (!ars_config_has(s, args[i].key)) continue;
        char word[32], kinds[96];
        snprintf(word, sizeof word, " %s ", name);   /* whole words: "normal" is not "he_normal" */
        snprintf(kinds, sizeof kinds, " %s ", args[i].kinds);
        if (!strstr(kinds, word))
            return ars_error(ARS_EINVAL, "%s:%d: [%s] %s applies to init = %s, not to init = %s", c->path,
                             s->line, s->name, args[i].key, args[i].kinds, name);
        double v;
        TRY(ars_config_get_double(c, s, args[i].key, 0, 0, 1e6, &v));
        spec->init_arg = (float)v;
    }
    TRY(ars_config_get_string(c, s, "init_mode", "fan_in", modes, spec->init_mode, sizeof spec->init_mode));
    return 0;
}

int ars_layer_parse_activation_name(ars_layer_parser *p, const char *key, const char *fallback, int allow_none,
                                    char *out, size_t size)
{
    const char *names[64];
    int n = 0;
    const ars_layer_kind *kind;
    if (allow_none) names[n++] = "none";
    for (int i = 0; (kind = ars_layer_kind_at(i)) != NULL && n < 63; i++)
        if (kind->activation != ARS_ACT_NONE) names[n++] = kind->name;
    names[n] = NULL;
    return ars_config_get_string(p->config, p->section, key, fallback, names, out, size);
}

int ars_layer_parse_activation(ars_layer_parser *p)
{
    return ars_layer_parse_activation_name(p, "activation", "none", 1, p->activation, sizeof p->activation);
}

static int push_spec(ars_layer_spec **specs, int *count, int *capacity, const ars_layer_spec *spec)
{
    if (*count == *capacity) {
        int grown = *capacity ? 2 * *capacity : 16;
        ars_layer_spec *p = realloc(*specs, sizeof *p * (size_t)grown);
        if (!p) return ars_error(ARS_ENOMEM, "run file: out of memory for %d layers", grown);
        *specs = p;
        *capacity = grown;
    }
    (*specs)[(*count)++] = *spec;
    return 0;
}

int ars_layer_parse_emit(ars_layer_parser *p, ars_layer_spec *spec)
{
    spec->source_line = p->section->line;
    return push_spec(p->specs, p->count, p->capacity, spec);
}

/* "unknown section [x] (expected [run], [health], a layer: dense, ...)",
 * the layers listed from the registry. */
static int unknown_section(const ars_config *c, const ars_config_section *s)
{
    char kinds[1024] = "";
    size_t used = 0;
    const ars_layer_kind *kind;
    for (int i = 0; (kind = ars_layer_kind_at(i)) != NULL && used < sizeof kinds; i++) {
        /* the ends of a residual block are written [residual] ... [end] */
        if ((kind->flags & ARS_KIND_RESIDUAL) && !(kind->flags & ARS_KIND_SUGAR)) continue;
        used += (size_t)snprintf(kinds + used, sizeof kinds - used, "%s%s", used ? ", " : "", kind->name);
    }
    return ars_error(ARS_EINVAL, "%s:%d: unknown section [%s] (expected [run], [health], a layer: %s, or a "
                     "block: [residual] ... [end], [repeat] ... [end])", c->path, s->line, s->name, kinds);
}

static int load_layer_section(ars_config *c, ars_config_section *s, ars_layer_spec **specs, int *count,
                              int *capacity)
{
    const ars_layer_kind *kind = ars_layer_kind_find(s->name);
    if (!kind) return unknown_section(c, s);
    ars_layer_parser parser = {c, s, specs, count, capacity, "none"};
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, kind->name);
    spec.source_line = s->line;
    /* 0: the steps of its input [time, features] (the registry resolves it) */
    if (kind->flags & ARS_KIND_SEQUENCE) TRY(get_int(c, s, "time", 0, 1, 1 << 24, &spec.time));
    if (kind->units) {
        if (!ars_config_has(s, "units"))
            return ars_error(ARS_EINVAL, "%s:%d: [%s] needs units = %s", c->path, s->line, kind->name, kind->units);
        TRY(get_int(c, s, "units", 0, 1, 1 << 24, &spec.units));
    }
    if (kind->parse) TRY(kind->parse(&parser, &spec));
    if (!(kind->flags & ARS_KIND_SUGAR)) TRY(push_spec(specs, count, capacity, &spec));
    if (strcmp(parser.activation, "none") != 0) {   /* [dense] activation = relu: a [relu] after it */
        ars_layer_spec act;
        ars_layer_spec_defaults(&act, parser.activation);
        TRY(ars_layer_parse_emit(&parser, &act));
    }
    return 0;
}

int ars_run_config_load(ars_config *config, ars_run_config *run, ars_layer_spec **specs_out, int *count_out)
{
    ars_layer_spec *specs = NULL;
    int count = 0, capacity = 0, runs = 0, rc = 0;
    *specs_out = NULL;
    *count_out = 0;
    for (int i = 0; i < config->section_count && !rc; i++) {
        ars_config_section *s = &config->sections[i];
        if (strcmp(s->name, "health") == 0) continue;   /* read below */
        if (strcmp(s->name, "run") == 0) {
            if (runs++)
                rc = ars_error(ARS_EINVAL, "%s:%d: a second [run] section (the first is at line %d)",
                               config->path, s->line, ars_config_find(config, "run")->line);
            else rc = load_run_section(config, s, run);
        } else {
            rc = load_layer_section(config, s, &specs, &count, &capacity);
        }
    }
    if (!rc && runs == 0) rc = ars_error(ARS_EINVAL, "%s: no [run] section (it says what to train on and how)",
                                         config->path);
    if (!rc && count == 0) rc = ars_error(ARS_EINVAL, "%s: no layer sections: the model is empty", config->path);
    if (!rc && runs) rc = ars_health_config_load(config, ars_config_find(config, "health"), &run->health);
    if (!rc) rc = ars_config_check_unused(config);
    if (rc) {
        free(specs);
        return rc;
    }
    /* the model's messages then say FILE:LINE, as the parser's do; [run]
     * conv_layout is the layout of every convolution without its own */
    const char *source = ars_layer_source_name(config->path);
    for (int i = 0; i < count; i++) {
        specs[i].source_file = source;
        if (specs[i].layout == 0) specs[i].layout = run->conv_layout;
    }
    *specs_out = specs;
    *count_out = count;
    return 0;
}
