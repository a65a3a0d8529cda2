/* exp_optimizers: section 6. SGD, SGD with momentum 0.9 and Adam on the
 * deep ReLU network of section 2 (He initialization), each over a small
 * grid of learning rates around its usual default, so that no optimizer is
 * judged at a rate that suits another. Each optimizer is represented by its
 * best rate (highest test accuracy); faster = fewer steps to loss < 1. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "experiment.h"

enum { OPTIMIZERS = 3, MAX_RATES = 4 };

static const char *const labels[OPTIMIZERS] = {"SGD", "SGD + momentum 0.9", "Adam"};

typedef struct grid {
    double lrs[OPTIMIZERS][MAX_RATES];
    int count[OPTIMIZERS];
    ars_exp_run *runs[OPTIMIZERS][MAX_RATES];
    int best[OPTIMIZERS];
} grid;

static void set_rates(const ars_exp *e, grid *g)
{
    static const double full[OPTIMIZERS][MAX_RATES] = {
        {0.003, 0.01, 0.03, 0.1}, {3e-4, 0.001, 0.003, 0.01}, {1e-4, 3e-4, 1e-3, 3e-3}};
    static const double quick[OPTIMIZERS] = {0.03, 0.003, 3e-4};
    for (int o = 0; o < OPTIMIZERS; o++) {
        g->count[o] = e->options->quick ? 1 : MAX_RATES;
        for (int k = 0; k < g->count[o]; k++) g->lrs[o][k] = e->options->quick ? quick[o] : full[o][k];
    }
}

/* Steps to the loss target, never = after every finite number. */
static int64_t speed(const ars_exp_run *r) { return r->steps_to_target < 0 ? INT64_MAX : r->steps_to_target; }

static double accuracy(const ars_exp_run *r) { return isnan(r->test_accuracy) ? -1 : r->test_accuracy; }

/* 1: a beats b (reaches the loss target earlier, or as early with a higher accuracy);
 * 0: it only has the higher accuracy; -1: neither. */
static int beats(const ars_exp_run *a, const ars_exp_run *b)
{
    if (speed(a) < speed(b) || (speed(a) == speed(b) && accuracy(a) > accuracy(b))) return 1;
    return accuracy(a) > accuracy(b) ? 0 : -1;
}

static void describe(const grid *g, int o, char *out, size_t size)
{
    const ars_exp_run *r = g->runs[o][g->best[o]];
    char acc[32], steps[32];
    ars_exp_format_percent(acc, sizeof acc, r->test_accuracy);
    ars_exp_format_step(steps, sizeof steps, r->steps_to_target);
    snprintf(out, size, "%s (lr %g): loss < %.1f at step %s, test accuracy %s", labels[o], g->lrs[o][g->best[o]],
             ARS_EXP_LOSS_TARGET, steps, acc);
}

static void judge(ars_exp *e, const grid *g)
{
    const int S = ARS_EXP_OPTIMIZERS;
    char a[160], b[160], d[160];
    describe(g, 0, a, sizeof a);
    describe(g, 1, b, sizeof b);
    describe(g, 2, d, sizeof d);
    const ars_exp_run *sgd = g->runs[0][g->best[0]], *momentum = g->runs[1][g->best[1]], *adam = g->runs[2][g->best[2]];

    int m = beats(momentum, sgd);
    ars_exp_claim *c = ars_exp_claim_add(e, S, m > 0 ? ARS_EXP_CONFIRMED : m == 0 ? ARS_EXP_QUALIFIED
                                                                                 : ARS_EXP_NOT_CONFIRMED,
                                         "Momentum accelerates SGD.");
    snprintf(c->measured, sizeof c->measured, "best of each grid: %s; %s.", a, b);
    if (m == 0) snprintf(c->note, sizeof c->note, "momentum ends more accurate but is not faster to the loss target");
    else if (m < 0) snprintf(c->note, sizeof c->note, "plain SGD at its best rate is as fast and as accurate");

    const ars_exp_run *rival = beats(momentum, sgd) > 0 ? momentum : sgd;
    int r = beats(adam, rival);
    c = ars_exp_claim_add(e, S, r > 0 ? ARS_EXP_CONFIRMED : r == 0 ? ARS_EXP_QUALIFIED : ARS_EXP_NOT_CONFIRMED,
                          "Adam (per-parameter step sizes from gradient moments) converges faster than SGD, with "
                          "or without momentum.");
    snprintf(c->measured, sizeof c->measured, "best of each grid: %s; %s.", d, rival == momentum ? b : a);
    if (r == 0) snprintf(c->note, sizeof c->note, "Adam ends more accurate but is not faster to the loss target");
    else if (r < 0)
        snprintf(c->note, sizeof c->note, "%s at its best rate is as fast or faster on this network",
                 rival == momentum ? "SGD with momentum" : "SGD");
}

static void write_body(ars_exp *e, const grid *g)
{
    const int S = ARS_EXP_OPTIMIZERS;
    ars_exp_text *md = &e->body[S];
    ars_exp_text_printf(md, "## 6. Optimizers: SGD, SGD with momentum, Adam\n\n");
    ars_exp_text_printf(md,
                        "**Setup.** The network of section 2 with He initialization (%d dense layers of %d units, "
                        "ReLU), %d steps per run, each optimizer over a small grid of learning rates around its "
                        "usual default; the best rate of each (highest test accuracy, in bold) represents it.\n\n",
                        ARS_EXP_DEEP_DEPTH, ARS_EXP_DEEP_WIDTH, e->budget.steps_deep);
    ars_exp_text_printf(md, "| optimizer | learning rate | steps to loss < %.1f | training loss at the end | test "
                            "accuracy | diagnosis |\n| --- | --- | --- | --- | --- | --- |\n",
                        ARS_EXP_LOSS_TARGET);
    for (int o = 0; o < OPTIMIZERS; o++)
        for (int k = 0; k < g->count[o]; k++) {
            const ars_exp_run *r = g->runs[o][k];
            char steps[32], loss[32], acc[32];
            const char *bold = k == g->best[o] ? "**" : "";
            ars_exp_format_step(steps, sizeof steps, r->steps_to_target);
            if (isfinite(r->loss_end)) snprintf(loss, sizeof loss, "%.3f", r->loss_end);
            else snprintf(loss, sizeof loss, "NaN");
            ars_exp_format_percent(acc, sizeof acc, r->test_accuracy);
            ars_exp_text_printf(md, "| %s | %s%g%s | %s | %s | %s%s%s | %s |\n", labels[o], bold, g->lrs[o][k], bold,
                                steps, loss, bold, acc, bold,
                                r->error ? r->error_text : r->diagnosis[0] ? r->diagnosis : "healthy");
        }
    ars_exp_text_printf(md, "\n");

    ars_exp_panel panels[2];
    ars_exp_curve curves[OPTIMIZERS];
    double xs[OPTIMIZERS][MAX_RATES], ys[OPTIMIZERS][MAX_RATES];
    memset(panels, 0, sizeof panels);
    snprintf(panels[0].title, sizeof panels[0].title, "training loss at each optimizer's best rate");
    snprintf(panels[0].xlabel, sizeof panels[0].xlabel, "step");
    snprintf(panels[0].ylabel, sizeof panels[0].ylabel, "training loss");
    panels[0].hline = ARS_EXP_LOSS_TARGET;
    panels[0].ymax = 5;
    snprintf(panels[0].hline_label, sizeof panels[0].hline_label, "loss target %.1f", ARS_EXP_LOSS_TARGET);
    snprintf(panels[1].title, sizeof panels[1].title, "test accuracy after %d steps", e->budget.steps_deep);
    snprintf(panels[1].xlabel, sizeof panels[1].xlabel, "learning rate");
    snprintf(panels[1].ylabel, sizeof panels[1].ylabel, "test accuracy");
    panels[1].logx = 1;
    panels[1].hline = NAN;
    for (int o = 0; o < OPTIMIZERS; o++) {
        curves[o] = (ars_exp_curve){.count = g->count[o], .x = xs[o], .y = ys[o]};
        for (int k = 0; k < g->count[o]; k++) {
            xs[o][k] = g->lrs[o][k];
            ys[o][k] = g->runs[o][k]->test_accuracy;
        }
        for (int p = 0; p < 2; p++) {
            ars_exp_series *s = &panels[p].series[panels[p].count++];
            snprintf(s->label, sizeof s->label, "%s", labels[o]);
            s->curve = p == 0 ? &g->runs[o][g->best[o]]->loss : &curves[o];
            s->style = 1;
            s->marker = p == 1;
            s->vline = NAN;
        }
    }
    ars_exp_figure(e, S, "optimizers_loss",
                   "Left: training loss of each optimizer at its best learning rate. Right: test accuracy over each "
                   "optimizer's grid of rates (log scale).",
                   "30-layer ReLU MLP: SGD, momentum and Adam", panels, 2);
    ars_exp_body_claims(e, S);
}

int ars_exp_section_optimizers(ars_exp *e)
{
    static const ars_exp_optimizer kinds[OPTIMIZERS] = {ARS_EXP_SGD, ARS_EXP_MOMENTUM, ARS_EXP_ADAM};
    static const char *const keys[OPTIMIZERS] = {"sgd", "momentum", "adam"};
    grid g;
    memset(&g, 0, sizeof g);
    set_rates(e, &g);
    for (int o = 0; o < OPTIMIZERS; o++)
        for (int k = 0; k < g.count[o]; k++) {
            ars_exp_text t = {0};
            char key[64];
            ars_exp_config_deep(e, &t, kinds[o], g.lrs[o][k], NULL, "init = he_normal\n");
            snprintf(key, sizeof key, "optim-%s-lr%g", keys[o], g.lrs[o][k]);
            int rc = t.failed ? ars_error(ARS_ENOMEM, "experiment: out of memory")
                              : ars_exp_train(e, key, t.data, &g.runs[o][k]);
            ars_exp_text_free(&t);
            if (rc) return rc;
            if (accuracy(g.runs[o][k]) > accuracy(g.runs[o][g.best[o]])) g.best[o] = k;
        }
    if (e->rank != 0) return 0;
    judge(e, &g);
    write_body(e, &g);
    return 0;
}
