/* run_config: maps the run file onto an ars_run_config and the layer specs,
 * validating every key (range, choices); unknown keys are caught at the end
 * by ars_config_check_unused. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/data.h"
#include "arsenal/error.h"
#include "arsenal/init.h"
#include "arsenal/train.h"

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

static int load_run_section(ars_config *c, ars_config_section *s, ars_run_config *run)
{
    static const char *const data_sets[] = {"fashion-mnist", "mnist", "spirals", "blobs", "teacher", "adding",
                                            "copy", NULL};
    static const char *const optimizers[] = {"sgd", "adam", "adamw", NULL};
    static const char *const schedules[] = {"constant", "step", "cosine", NULL};
    static const char *const losses[] = {"cross_entropy", "mse", NULL};
    static const char *const policies[] = {"skip", "stop", NULL};
    static const char *const scopes[] = {"rank", "global", NULL};
    char text[64];
    long big;
    double value;

    memset(run, 0, sizeof *run);
    TRY(ars_config_get_string(c, s, "data", "fashion-mnist", data_sets, run->data, sizeof run->data));
    TRY(ars_config_get_string(c, s, "data_dir", ARS_FASHION_MNIST_DIR, NULL, run->data_dir, sizeof run->data_dir));
    if (strcmp(run->data, "mnist") == 0 && !ars_config_has(s, "data_dir"))
        strcpy(run->data_dir, "/usr/share/datasets/mnist");
    TRY(get_int(c, s, "train_limit", 0, 0, 100000000, &run->train_limit));
    TRY(get_int(c, s, "test_limit", 0, 0, 100000000, &run->test_limit));
    TRY(get_int(c, s, "train_samples", 4000, 1, 100000000, &run->train_samples));
    TRY(get_int(c, s, "test_samples", 1000, 1, 100000000, &run->test_samples));
    TRY(ars_config_get_bool(c, s, "standardize", 1, &run->standardize));
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
    return 0;
}

/* The initializer keys of a dense layer (or a residual projection). */
static int load_init_keys(ars_config *c, ars_config_section *s, ars_layer_spec *spec)
{
    static const char *const modes[] = {"fan_in", "fan_out", NULL};
    static const struct { const char *key; const char *kinds; } args[] = {
        {"init_std", "normal"},
        {"init_bound", "uniform"},
        {"init_gain", "xavier_uniform xavier_normal orthogonal lsuv"},
        {"init_slope", "he_uniform he_normal"},
    };
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

/* time: the default sequence length, that of the nearest sequence layer
 * before this section (0 if none, or if a readout ended the sequence). */
static int load_layer_section(ars_config *c, ars_config_section *s, int time, ars_layer_spec **specs, int *count,
                              int *capacity)
{
    static const char *const activations[] = {"none", "sigmoid", "tanh", "relu", "leaky_relu", "elu",
                                              "selu", "gelu", NULL};
    const char *kind = s->name;
    if (!ars_layer_kind_known(kind))
        return ars_error(ARS_EINVAL, "%s:%d: unknown section [%s] (expected [run], a layer: dense, sigmoid, "
                         "tanh, relu, leaky_relu, elu, selu, gelu, batchnorm, layernorm, dropout, a sequence "
                         "layer: embedding, seq_dense, positional, attention, seq_layernorm, rnn, mean_pool, "
                         "last_step, or a block: [residual] ... [end], [repeat] ... [end], [transformer])",
                         c->path, s->line, kind);
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, kind);
    spec.source_line = s->line;
    char activation[24] = "none";
    const int sequence = strcmp(kind, "embedding") == 0 || strcmp(kind, "seq_dense") == 0 ||
                         strcmp(kind, "positional") == 0 || strcmp(kind, "attention") == 0 ||
                         strcmp(kind, "seq_layernorm") == 0 || strcmp(kind, "rnn") == 0 ||
                         strcmp(kind, "mean_pool") == 0 || strcmp(kind, "last_step") == 0 ||
                         strcmp(kind, "transformer") == 0;
    if (sequence) {
        /* embedding takes its steps from its input width unless told */
        TRY(get_int(c, s, "time", strcmp(kind, "embedding") == 0 ? 0 : time, 1, 1 << 24, &spec.time));
        const int needs_units = strcmp(kind, "embedding") == 0 || strcmp(kind, "seq_dense") == 0 ||
                                strcmp(kind, "rnn") == 0 || strcmp(kind, "transformer") == 0;
        if (needs_units && !ars_config_has(s, "units"))
            return ars_error(ARS_EINVAL, "%s:%d: [%s] needs units = <width per step>", c->path, s->line, kind);
        if (needs_units) TRY(get_int(c, s, "units", 0, 1, 1 << 24, &spec.units));
    }
    if (strcmp(kind, "embedding") == 0) {
        if (!ars_config_has(s, "vocab"))
            return ars_error(ARS_EINVAL, "%s:%d: [embedding] needs vocab = <number of token ids>", c->path, s->line);
        TRY(get_int(c, s, "vocab", 0, 1, 1 << 24, &spec.vocab));
        if (ars_config_has(s, "init")) TRY(load_init_keys(c, s, &spec));   /* default N(0, 1) */
    } else if (strcmp(kind, "seq_dense") == 0) {
        TRY(get_int(c, s, "patch", 0, 0, 1 << 12, &spec.patch));
        TRY(ars_config_get_bool(c, s, "bias", 1, &spec.bias));
        TRY(load_init_keys(c, s, &spec));
        TRY(ars_config_get_string(c, s, "activation", "none", activations, activation, sizeof activation));
    } else if (strcmp(kind, "positional") == 0) {
        static const char *const encodings[] = {"learned", "sinusoidal", NULL};
        TRY(ars_config_get_string(c, s, "encoding", "learned", encodings, spec.encoding, sizeof spec.encoding));
        if (ars_config_has(s, "init")) TRY(load_init_keys(c, s, &spec));   /* default N(0, 0.02^2) */
    } else if (strcmp(kind, "attention") == 0) {
        TRY(get_int(c, s, "heads", 1, 1, 1 << 16, &spec.heads));
        TRY(ars_config_get_bool(c, s, "causal", 0, &spec.causal));
        TRY(load_init_keys(c, s, &spec));
    } else if (strcmp(kind, "seq_layernorm") == 0) {
        TRY(get_float(c, s, "eps", 1e-5, 1e-12, 1, &spec.eps));
    } else if (strcmp(kind, "rnn") == 0) {
        if (ars_config_has(s, "init")) TRY(load_init_keys(c, s, &spec));   /* default U(+-1/sqrt(units)) */
    } else if (strcmp(kind, "transformer") == 0) {
        /* Sugar for the pre-LayerNorm block x + MHA(LN(x)), then x + MLP(LN(x))
         * (src/layers/transformer.c): ten layers of the same time. units =
         * the block's width, checked against its input by the attention. */
        int hidden;
        char mlp_activation[24];
        TRY(get_int(c, s, "heads", 1, 1, 1 << 16, &spec.heads));
        TRY(ars_config_get_bool(c, s, "causal", 0, &spec.causal));
        TRY(get_int(c, s, "hidden", 4L * spec.units, 1, 1 << 24, &hidden));
        TRY(get_float(c, s, "eps", 1e-5, 1e-12, 1, &spec.eps));
        TRY(ars_config_get_string(c, s, "activation", "gelu", activations + 1, mlp_activation,
                                  sizeof mlp_activation));
        const char *block[] = {"residual", "seq_layernorm", "attention", "residual_add", "residual",
                               "seq_layernorm", "seq_dense", mlp_activation, "seq_dense", "residual_add"};
        for (int i = 0; i < 10; i++) {
            ars_layer_spec part;
            ars_layer_spec_defaults(&part, block[i]);
            part.source_line = s->line;
            part.time = spec.time;
            part.eps = spec.eps;
            if (i == 2) {
                part.heads = spec.heads;
                part.causal = spec.causal;
                part.units = spec.units;
            }
            if (i == 6) part.units = hidden;
            if (i == 8) part.units = spec.units;
            TRY(push_spec(specs, count, capacity, &part));
        }
        return 0;
    } else if (strcmp(kind, "dense") == 0) {
        long units;
        if (!ars_config_has(s, "units"))
            return ars_error(ARS_EINVAL, "%s:%d: [dense] needs units = <output width>", c->path, s->line);
        TRY(ars_config_get_int(c, s, "units", 0, 1, 1 << 24, &units));
        spec.units = (int)units;
        TRY(ars_config_get_bool(c, s, "bias", 1, &spec.bias));
        TRY(load_init_keys(c, s, &spec));
        TRY(ars_config_get_string(c, s, "activation", "none", activations, activation, sizeof activation));
    } else if (strcmp(kind, "residual_add") == 0) {
        TRY(load_init_keys(c, s, &spec));   /* the projection, when widths differ */
    } else if (strcmp(kind, "leaky_relu") == 0) {
        TRY(get_float(c, s, "slope", 0.01, 0, 1, &spec.alpha));
    } else if (strcmp(kind, "elu") == 0) {
        TRY(get_float(c, s, "alpha", 1.0, 0, 100, &spec.alpha));
    } else if (strcmp(kind, "batchnorm") == 0) {
        TRY(get_float(c, s, "momentum", 0.1, 0, 1, &spec.momentum));
        TRY(get_float(c, s, "eps", 1e-5, 1e-12, 1, &spec.eps));
        TRY(ars_config_get_bool(c, s, "sync", 1, &spec.sync));
    } else if (strcmp(kind, "layernorm") == 0) {
        TRY(get_float(c, s, "eps", 1e-5, 1e-12, 1, &spec.eps));
    } else if (strcmp(kind, "dropout") == 0) {
        TRY(get_float(c, s, "rate", 0.5, 0, 0.999, &spec.rate));
    }
    TRY(push_spec(specs, count, capacity, &spec));
    if (strcmp(activation, "none") != 0) {   /* [dense] activation = relu: sugar for a [relu] after it */
        ars_layer_spec act;
        ars_layer_spec_defaults(&act, activation);
        act.source_line = s->line;
        TRY(push_spec(specs, count, capacity, &act));
    }
    return 0;
}

int ars_run_config_load(ars_config *config, ars_run_config *run, ars_layer_spec **specs_out, int *count_out)
{
    ars_layer_spec *specs = NULL;
    int count = 0, capacity = 0, runs = 0, rc = 0;
    int time = 0;   /* carried forward, so that mapping stays linear in the layers */
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
            int first = count;
            rc = load_layer_section(config, s, time, &specs, &count, &capacity);
            /* Sequence layers set the time of those after them; a readout
             * (mean_pool, last_step) ends the sequence. */
            for (int k = first; k < count && !rc; k++) {
                if (strcmp(specs[k].kind, "mean_pool") == 0 || strcmp(specs[k].kind, "last_step") == 0) time = 0;
                else if (specs[k].time) time = specs[k].time;
            }
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
    /* the model's messages then say FILE:LINE, as the parser's do */
    const char *source = ars_layer_source_name(config->path);
    for (int i = 0; i < count; i++) specs[i].source_file = source;
    *specs_out = specs;
    *count_out = count;
    return 0;
}
