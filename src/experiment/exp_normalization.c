/* exp_normalization: section 3. The deep ReLU network of section 2 (He
 * initialization, SGD with momentum) without normalization, with
 * synchronized BatchNorm and with LayerNorm before every ReLU, over a small
 * learning-rate sweep: accuracy, and the highest learning rate at which each
 * still trains. The sweep of a network goes upward and stops at its first
 * failure after a success (a higher rate is assumed to fail too); that
 * decision uses only figures every rank has. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "experiment.h"

enum { VARIANTS = 3, MAX_LRS = 8 };

typedef struct variant {
    const char *key, *label, *norm;
} variant;

static const variant variants[VARIANTS] = {
    {"none", "no normalization", NULL},
    {"bn", "BatchNorm (synchronized)", "batchnorm"},
    {"ln", "LayerNorm", "layernorm"},
};

typedef struct sweep {
    double lrs[MAX_LRS];
    int lr_count;
    ars_exp_run *runs[VARIANTS][MAX_LRS];   /* NULL: not run */
    int highest[VARIANTS];                  /* index of the highest rate that trains, -1: none */
    int best[VARIANTS];                     /* index of the best accuracy, -1: none */
} sweep;

static void set_rates(const ars_exp *e, sweep *w)
{
    static const double full[] = {0.003, 0.01, 0.03, 0.1, 0.3, 1.0}, quick[] = {0.01, 0.1};
    const double *rates = e->options->quick ? quick : full;
    w->lr_count = e->options->quick ? (int)(sizeof quick / sizeof quick[0]) : (int)(sizeof full / sizeof full[0]);
    memcpy(w->lrs, rates, sizeof(double) * (size_t)w->lr_count);
}

static int run_sweep(ars_exp *e, sweep *w)
{
    for (int v = 0; v < VARIANTS; v++) {
        w->highest[v] = w->best[v] = -1;
        for (int k = 0; k < w->lr_count; k++) {
            ars_exp_text t = {0};
            char key[64];
            ars_exp_config_deep(e, &t, ARS_EXP_MOMENTUM, w->lrs[k], variants[v].norm, "init = he_normal\n");
            snprintf(key, sizeof key, "norm-%s-lr%g", variants[v].key, w->lrs[k]);
            int rc = t.failed ? ars_error(ARS_ENOMEM, "experiment: out of memory")
                              : ars_exp_train(e, key, t.data, &w->runs[v][k]);
            ars_exp_text_free(&t);
            if (rc) return rc;
            const ars_exp_run *r = w->runs[v][k];
            if (ars_exp_trains(r)) w->highest[v] = k;
            if (!isnan(r->test_accuracy) && (w->best[v] < 0 || r->test_accuracy > w->runs[v][w->best[v]]->test_accuracy))
                w->best[v] = k;
            if (!ars_exp_trains(r) && w->highest[v] >= 0) break;   /* past its highest rate */
        }
    }
    return 0;
}

static double highest_lr(const sweep *w, int v) { return w->highest[v] >= 0 ? w->lrs[w->highest[v]] : 0; }

static double best_accuracy(const sweep *w, int v)
{
    return w->best[v] >= 0 ? w->runs[v][w->best[v]]->test_accuracy : NAN;
}

static void judge(ars_exp *e, const sweep *w)
{
    const int S = ARS_EXP_NORMALIZATION;
    const double none = highest_lr(w, 0);
    for (int v = 1; v < VARIANTS; v++) {
        double mine = highest_lr(w, v);
        ars_exp_verdict verdict = mine > none ? ARS_EXP_CONFIRMED : mine > 0 || none > 0 ? ARS_EXP_NOT_CONFIRMED
                                                                                         : ARS_EXP_INCONCLUSIVE;
        char claim_text[256];
        snprintf(claim_text, sizeof claim_text, v == 1 ? "BatchNorm lets a deep network train at higher learning "
                 "rates." : "LayerNorm (per sample, no batch statistics) likewise allows higher learning rates.");
        ars_exp_claim *c = ars_exp_claim_add(e, S, verdict, claim_text);
        char a[32] = "none", b[32] = "none";
        if (none > 0) snprintf(a, sizeof a, "%g", none);
        if (mine > 0) snprintf(b, sizeof b, "%g", mine);
        snprintf(c->measured, sizeof c->measured,
                 "highest learning rate that trains (sweep %g to %g): without normalization %s, with %s %s.",
                 w->lrs[0], w->lrs[w->lr_count - 1], a, variants[v].label, b);
        if (verdict == ARS_EXP_NOT_CONFIRMED)
            snprintf(c->note, sizeof c->note, "%s", mine == none ? "the same highest rate as without normalization"
                                                                  : "a lower highest rate than without normalization");
        else if (verdict == ARS_EXP_INCONCLUSIVE)
            snprintf(c->note, sizeof c->note, "no network trains at any rate of the sweep within %d steps",
                     e->budget.steps_deep);
        else if (w->highest[v] == w->lr_count - 1)
            snprintf(c->note, sizeof c->note, "it still trains at the top of the sweep: its limit is higher");
    }
    /* Accuracy at each network's best rate; within a point is a tie. */
    const double margin = 0.01;
    double base = best_accuracy(w, 0), bn = best_accuracy(w, 1), ln = best_accuracy(w, 2);
    double floor_acc = isnan(base) ? 0 : base;
    int bn_better = bn > floor_acc + margin, ln_better = ln > floor_acc + margin;
    ars_exp_verdict verdict = bn_better && ln_better ? ARS_EXP_CONFIRMED
                              : bn_better || ln_better ? ARS_EXP_QUALIFIED : ARS_EXP_NOT_CONFIRMED;
    ars_exp_claim *c = ars_exp_claim_add(e, S, verdict, "Normalization makes a deep network train better: higher "
                                         "accuracy in the same budget.");
    char a[32], b[32], d[32];
    ars_exp_format_percent(a, sizeof a, base);
    ars_exp_format_percent(b, sizeof b, bn);
    ars_exp_format_percent(d, sizeof d, ln);
    snprintf(c->measured, sizeof c->measured,
             "best test accuracy over the sweep (%d steps): none %s, BatchNorm %s, LayerNorm %s.", e->budget.steps_deep,
             a, b, d);
    const char *bn_word = bn_better ? "better" : bn < floor_acc - margin ? "worse" : "within a point";
    const char *ln_word = ln_better ? "better" : ln < floor_acc - margin ? "worse" : "within a point";
    if (verdict != ARS_EXP_CONFIRMED)
        snprintf(c->note, sizeof c->note, "against the unnormalized network at its own best rate, BatchNorm is %s "
                 "and LayerNorm %s", bn_word, ln_word);

    /* The gradient's scale through depth at initialization (the same at every rate). */
    const ars_exp_run *r_none = w->runs[0][0], *r_bn = w->runs[1][0], *r_ln = w->runs[2][0];
    double g = r_bn->ratio_start;
    verdict = isnan(g) ? ARS_EXP_INCONCLUSIVE : g >= 0.1 && g <= 10 ? ARS_EXP_CONFIRMED : ARS_EXP_QUALIFIED;
    c = ars_exp_claim_add(e, S, verdict, "BatchNorm keeps the gradient's scale steady from layer to layer.");
    ars_exp_format_sci(a, sizeof a, r_none->ratio_start);
    ars_exp_format_sci(b, sizeof b, g);
    ars_exp_format_sci(d, sizeof d, r_ln->ratio_start);
    snprintf(c->measured, sizeof c->measured, "gradient ratio (first dense layer / output layer) at step 0: none %s, "
             "BatchNorm %s, LayerNorm %s.", a, b, d);
    if (verdict == ARS_EXP_QUALIFIED)
        snprintf(c->note, sizeof c->note, "with BatchNorm the first layer starts with %s times the output layer's "
                 "gradient: in a deep network, batch normalization makes the gradient %s toward the input at "
                 "initialization (as Yang et al. 2019 predict); its tolerance of high learning rates comes with it",
                 b, g > 10 ? "grow" : "shrink");
}

static void write_body(ars_exp *e, const sweep *w)
{
    const int S = ARS_EXP_NORMALIZATION;
    ars_exp_text *md = &e->body[S];
    ars_exp_text_printf(md, "## 3. Normalization: without, with BatchNorm, with LayerNorm\n\n");
    ars_exp_text_printf(md,
                        "**Setup.** The network of section 2 with He initialization (%d dense layers of %d units, "
                        "ReLU), and the same with BatchNorm (statistics synchronized over the %d rank%s) or "
                        "LayerNorm between every hidden dense layer and its ReLU; SGD with momentum 0.9, %d steps "
                        "per run. Learning rates are swept upward; a network's sweep stops at its first failure "
                        "after a success. Each cell: test accuracy, \"(fails)\" when the run does not train, and "
                        "the step the loss or gradient first became NaN/Inf if it did.\n\n",
                        ARS_EXP_DEEP_DEPTH, ARS_EXP_DEEP_WIDTH, e->world, e->world == 1 ? "" : "s",
                        e->budget.steps_deep);
    ars_exp_text_printf(md, "| network |");
    for (int k = 0; k < w->lr_count; k++) ars_exp_text_printf(md, " lr %g |", w->lrs[k]);
    ars_exp_text_printf(md, " highest rate that trains | best accuracy |\n| --- |");
    for (int k = 0; k < w->lr_count + 2; k++) ars_exp_text_printf(md, " --- |");
    ars_exp_text_printf(md, "\n");
    for (int v = 0; v < VARIANTS; v++) {
        ars_exp_text_printf(md, "| %s |", variants[v].label);
        for (int k = 0; k < w->lr_count; k++) {
            const ars_exp_run *r = w->runs[v][k];
            char acc[32];
            if (!r) {
                ars_exp_text_printf(md, " not run |");
                continue;
            }
            ars_exp_format_percent(acc, sizeof acc, r->test_accuracy);
            if (r->error) ars_exp_text_printf(md, " failed: %s |", r->error_text);
            else if (r->first_nonfinite >= 0)
                ars_exp_text_printf(md, " %s (NaN at step %lld) |", acc, (long long)r->first_nonfinite);
            else ars_exp_text_printf(md, " %s%s |", acc, ars_exp_trains(r) ? "" : " (fails)");
        }
        char best[32];
        ars_exp_format_percent(best, sizeof best, best_accuracy(w, v));
        if (w->highest[v] >= 0) ars_exp_text_printf(md, " %g |", highest_lr(w, v));
        else ars_exp_text_printf(md, " none |");
        if (w->best[v] >= 0) ars_exp_text_printf(md, " %s (lr %g) |\n", best, w->lrs[w->best[v]]);
        else ars_exp_text_printf(md, " — |\n");
    }
    ars_exp_text_printf(md, "\n");

    /* accuracy against the rate; losses at the highest rate the plain network trains at */
    ars_exp_curve curves[VARIANTS];
    double xs[VARIANTS][MAX_LRS], ys[VARIANTS][MAX_LRS];
    ars_exp_panel panels[2];
    memset(panels, 0, sizeof panels);
    snprintf(panels[0].title, sizeof panels[0].title, "test accuracy after %d steps", e->budget.steps_deep);
    snprintf(panels[0].xlabel, sizeof panels[0].xlabel, "learning rate (SGD, momentum 0.9)");
    snprintf(panels[0].ylabel, sizeof panels[0].ylabel, "test accuracy");
    panels[0].logx = 1;
    panels[0].hline = ARS_EXP_TRAINS_ACCURACY;
    snprintf(panels[0].hline_label, sizeof panels[0].hline_label, "trains from here");
    int common = w->highest[0] >= 0 ? w->highest[0] : 0;
    snprintf(panels[1].title, sizeof panels[1].title, "training loss at lr %g", w->lrs[common]);
    snprintf(panels[1].xlabel, sizeof panels[1].xlabel, "step");
    snprintf(panels[1].ylabel, sizeof panels[1].ylabel, "training loss");
    panels[1].hline = NAN;
    panels[1].ymax = 5;
    for (int v = 0; v < VARIANTS; v++) {
        curves[v] = (ars_exp_curve){.x = xs[v], .y = ys[v]};
        for (int k = 0; k < w->lr_count; k++)
            if (w->runs[v][k]) {
                xs[v][curves[v].count] = w->lrs[k];
                ys[v][curves[v].count++] = w->runs[v][k]->test_accuracy;
            }
        ars_exp_series *s = &panels[0].series[panels[0].count++];
        snprintf(s->label, sizeof s->label, "%s", variants[v].label);
        s->curve = &curves[v];
        s->style = 1;
        s->marker = 1;
        s->vline = NAN;
        s = &panels[1].series[panels[1].count++];
        snprintf(s->label, sizeof s->label, "%s", variants[v].label);
        s->curve = w->runs[v][common] ? &w->runs[v][common]->loss : NULL;
        s->style = 1;
        s->vline = NAN;
    }
    ars_exp_figure(e, S, "normalization_lr",
                   "Left: test accuracy against the learning rate (log scale); a missing point was not run "
                   "(a lower rate already failed). Right: training loss of the three networks at the highest rate "
                   "the unnormalized one trains at.",
                   "30-layer ReLU MLP: normalization and the learning rate", panels, 2);
    ars_exp_body_claims(e, S);
}

int ars_exp_section_normalization(ars_exp *e)
{
    sweep w;
    memset(&w, 0, sizeof w);
    set_rates(e, &w);
    int rc = run_sweep(e, &w);
    if (rc || e->rank != 0) return rc;
    judge(e, &w);
    write_body(e, &w);
    return 0;
}
