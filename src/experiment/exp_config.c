/* exp_config: the experiment's configurations are run-file text, built
 * here piece by piece ([run] with the mode's budget or a section's own data
 * sizes, [dense] sections) into a growable string, then loaded like any
 * run file. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiment.h"

void ars_exp_text_printf(ars_exp_text *t, const char *fmt, ...)
{
    if (t->failed) return;
    for (;;) {
        size_t room = t->capacity - t->length;
        va_list args;
        va_start(args, fmt);
        int n = t->data ? vsnprintf(t->data + t->length, room, fmt, args) : -2;
        va_end(args);
        if (n == -1) {
            t->failed = 1;
            return;
        }
        if (n >= 0 && (size_t)n < room) {
            t->length += (size_t)n;
            return;
        }
        size_t need = t->length + (n > 0 ? (size_t)n : 0) + 1;
        size_t grown = t->capacity ? 2 * t->capacity : 256;
        while (grown < need) grown *= 2;
        char *p = realloc(t->data, grown);
        if (!p) {
            t->failed = 1;
            return;
        }
        if (!t->data) p[0] = '\0';
        t->data = p;
        t->capacity = grown;
    }
}

void ars_exp_text_free(ars_exp_text *t)
{
    free(t->data);
    memset(t, 0, sizeof *t);
}

void ars_exp_config_run(const ars_exp *e, ars_exp_text *t, int steps, int probe_every, const char *optimizer_lines)
{
    const ars_exp_budget *b = &e->budget;
    ars_exp_config_run_data(e, t, b->train_limit, b->test_limit, b->batch, steps,
                            probe_every > 0 ? probe_every : b->probe_every, optimizer_lines);
}

void ars_exp_config_run_data(const ars_exp *e, ars_exp_text *t, int train_limit, int test_limit, int batch,
                             int steps, int probe_every, const char *optimizer_lines)
{
    ars_exp_text_printf(t, "[run]\ndata = fashion-mnist\n");
    if (e->options->data_dir) ars_exp_text_printf(t, "data_dir = %s\n", e->options->data_dir);
    ars_exp_text_printf(t,
                        "train_limit = %d\ntest_limit = %d\nmax_steps = %d\nbatch = %d\nbatch_scope = global\n"
                        "seed = %llu\nprobe_every = %d\nlog_every = 1000000\nckpt_keep = 1\n%s",
                        train_limit, test_limit, steps, batch, (unsigned long long)e->options->seed, probe_every,
                        optimizer_lines);
    /* The rules are replayed on the history afterwards (exp_run.c). */
    ars_exp_text_printf(t, "[health]\nenabled = false\n");
}

void ars_exp_config_dense(ars_exp_text *t, int units, const char *init_lines)
{
    ars_exp_text_printf(t, "[dense]\nunits = %d\n%s", units, init_lines);
}

void ars_exp_init_normal(char *out, size_t size, double std)
{
    snprintf(out, size, "init = normal\ninit_std = %.6g\n", std);
}

void ars_exp_config_mlp(ars_exp_text *t, int depth, int units, const char *activation, const char *norm,
                        const char *init_lines)
{
    ars_exp_text_printf(t, "[repeat]\ncount = %d\n", depth - 1);
    ars_exp_config_dense(t, units, init_lines);
    if (norm) ars_exp_text_printf(t, "[%s]\n", norm);
    ars_exp_text_printf(t, "[%s]\n[end]\n", activation);
    ars_exp_config_dense(t, 10, init_lines);
}

void ars_exp_optimizer_lines(char *out, size_t size, ars_exp_optimizer optimizer, double lr)
{
    switch (optimizer) {
    case ARS_EXP_SGD: snprintf(out, size, "optimizer = sgd\nlr = %g\n", lr); break;
    case ARS_EXP_MOMENTUM: snprintf(out, size, "optimizer = sgd\nlr = %g\nmomentum = 0.9\n", lr); break;
    default: snprintf(out, size, "optimizer = adam\nlr = %g\n", lr); break;
    }
}

void ars_exp_config_deep(const ars_exp *e, ars_exp_text *t, ars_exp_optimizer optimizer, double lr,
                         const char *norm, const char *init_lines)
{
    char lines[96];
    ars_exp_optimizer_lines(lines, sizeof lines, optimizer, lr);
    ars_exp_config_run(e, t, e->budget.steps_deep, 0, lines);
    ars_exp_config_mlp(t, ARS_EXP_DEEP_DEPTH, ARS_EXP_DEEP_WIDTH, "relu", norm, init_lines);
}
