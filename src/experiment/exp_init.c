/* exp_init: section 2. One 30-layer ReLU MLP under five initializations:
 * N(0, 0.01^2), N(0, 1), Xavier, He and LSUV; the same optimizer for all
 * (SGD with momentum). Does each train, and how fast? He et al. (2015)
 * report that at 30 layers Xavier stalls where He trains. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "experiment.h"

enum { DEPTH = ARS_EXP_DEEP_DEPTH, WIDTH = ARS_EXP_DEEP_WIDTH, INITS = 5 };
enum { SMALL, LARGE, XAVIER, HE, LSUV };

typedef struct init_kind {
    const char *key, *label, *lines;
    double std;   /* of a hidden layer's weights; NaN: set on data */
} init_kind;

static void init_table(init_kind out[INITS])
{
    const init_kind table[INITS] = {
        {"small", "N(0, 0.01²)", "init = normal\ninit_std = 0.01\n", 0.01},
        {"large", "N(0, 1)", "init = normal\ninit_std = 1\n", 1.0},
        {"xavier", "Xavier (Glorot normal)", "init = xavier_normal\n", sqrt(2.0 / (WIDTH + WIDTH))},
        {"he", "He (Kaiming normal)", "init = he_normal\n", sqrt(2.0 / WIDTH)},
        {"lsuv", "LSUV", "init = lsuv\n", NAN},
    };
    memcpy(out, table, sizeof table);
}

/* The learning rate of the comparison (SGD with momentum 0.9). */
static const double LR = 0.01;

static void judge(ars_exp *e, const init_kind *inits, ars_exp_run *const *runs)
{
    const int S = ARS_EXP_INIT;
    char a[32], b[32], c[32], d[32];
    const ars_exp_run *small = runs[SMALL], *large = runs[LARGE], *xavier = runs[XAVIER], *he = runs[HE],
                      *lsuv = runs[LSUV];

    int stalls = !ars_exp_trains(small);
    ars_exp_claim *claim = ars_exp_claim_add(e, S, stalls ? ARS_EXP_CONFIRMED : ARS_EXP_NOT_CONFIRMED,
                                             "Too small an initialization (N(0, 0.01²)) makes the signal and the "
                                             "gradient vanish in a deep network: it does not train.");
    ars_exp_format_sci(a, sizeof a, small->ratio_start);
    ars_exp_format_percent(b, sizeof b, small->test_accuracy);
    snprintf(claim->measured, sizeof claim->measured, "gradient ratio %s at step 0; test accuracy %s after %d steps.",
             a, b, e->budget.steps_deep);
    if (!stalls) snprintf(claim->note, sizeof claim->note, "it trains (%s)", b);

    int explodes = large->first_nonfinite >= 0 || !ars_exp_trains(large);
    claim = ars_exp_claim_add(e, S, explodes ? ARS_EXP_CONFIRMED : ARS_EXP_NOT_CONFIRMED,
                              "Too large an initialization (N(0, 1)) makes activations and gradients explode.");
    ars_exp_format_sci(a, sizeof a, large->loss_start);
    ars_exp_format_percent(b, sizeof b, large->test_accuracy);
    if (large->first_nonfinite >= 0)
        snprintf(claim->measured, sizeof claim->measured,
                 "the loss or gradient is NaN/Inf from step %lld on (%lld of %lld steps skipped); test accuracy %s.",
                 (long long)large->first_nonfinite, (long long)large->nonfinite_steps, (long long)large->steps, b);
    else
        snprintf(claim->measured, sizeof claim->measured, "first loss %s; test accuracy %s.", a, b);
    if (!explodes) snprintf(claim->note, sizeof claim->note, "it trains (%s)", b);

    ars_exp_verdict v;
    ars_exp_format_percent(a, sizeof a, xavier->test_accuracy);
    ars_exp_format_percent(b, sizeof b, he->test_accuracy);
    ars_exp_format_step(c, sizeof c, xavier->steps_to_target);
    ars_exp_format_step(d, sizeof d, he->steps_to_target);
    if (!ars_exp_trains(he)) v = ARS_EXP_NOT_CONFIRMED;
    else if (!ars_exp_trains(xavier)) v = ARS_EXP_CONFIRMED;
    else v = ARS_EXP_QUALIFIED;
    claim = ars_exp_claim_add(e, S, v, "He et al. (2015): at 30 layers a ReLU network initialized with Xavier "
                              "stalls where He initialization trains.");
    snprintf(claim->measured, sizeof claim->measured,
             "test accuracy Xavier %s, He %s; steps to loss < %.1f: Xavier %s, He %s.", a, b, ARS_EXP_LOSS_TARGET, c,
             d);
    if (v == ARS_EXP_NOT_CONFIRMED)
        snprintf(claim->note, sizeof claim->note, "He initialization does not train either within %d steps",
                 e->budget.steps_deep);
    else if (v == ARS_EXP_QUALIFIED) {
        if (xavier->steps_to_target < 0 || (he->steps_to_target >= 0 && xavier->steps_to_target > he->steps_to_target))
            snprintf(claim->note, sizeof claim->note, "Xavier does not stall here, it trains more slowly than He "
                     "(loss < %.1f at step %s against %s)", ARS_EXP_LOSS_TARGET, c, d);
        else
            snprintf(claim->note, sizeof claim->note, "Xavier trains as fast as He here (loss < %.1f at step %s "
                     "against %s): no stall with this optimizer and budget", ARS_EXP_LOSS_TARGET, c, d);
    }

    ars_exp_format_percent(a, sizeof a, lsuv->test_accuracy);
    ars_exp_format_step(c, sizeof c, lsuv->steps_to_target);
    int as_good = ars_exp_trains(lsuv) && lsuv->test_accuracy >= he->test_accuracy - 0.02;
    v = as_good ? ARS_EXP_CONFIRMED : ars_exp_trains(lsuv) ? ARS_EXP_QUALIFIED : ARS_EXP_NOT_CONFIRMED;
    claim = ars_exp_claim_add(e, S, v, "LSUV (orthogonal, then each layer rescaled to unit output variance on a "
                              "batch) trains a deep network at least as well as He.");
    snprintf(claim->measured, sizeof claim->measured,
             "test accuracy LSUV %s, He %s; steps to loss < %.1f: LSUV %s, He %s.", a, b, ARS_EXP_LOSS_TARGET, c, d);
    if (v == ARS_EXP_QUALIFIED)
        snprintf(claim->note, sizeof claim->note, "LSUV trains, but more than 2 points below He");
    else if (v == ARS_EXP_NOT_CONFIRMED)
        snprintf(claim->note, sizeof claim->note, "LSUV does not train within %d steps%s%s", e->budget.steps_deep,
                 lsuv->error ? ": " : "", lsuv->error ? lsuv->error_text : "");
    (void)inits;
}

static void write_body(ars_exp *e, const init_kind *inits, ars_exp_run *const *runs)
{
    const int S = ARS_EXP_INIT;
    ars_exp_text *md = &e->body[S];
    ars_exp_text_printf(md, "## 2. Initialization of a 30-layer ReLU network\n\n");
    ars_exp_text_printf(md,
                        "**Setup.** %d dense layers (%d hidden layers of %d units with ReLU, then the 10-way "
                        "output), every layer initialized the same way; SGD with momentum 0.9, learning rate %g, "
                        "%d steps (the same optimizer for all, as in He et al. 2015). Xavier (Glorot) keeps the "
                        "variance of a *linear* layer, so through ReLU (which zeroes half of it) the signal's "
                        "variance halves at every layer; He doubles the variance to compensate; LSUV sets each layer on data.\n\n",
                        DEPTH, DEPTH - 1, WIDTH, LR, e->budget.steps_deep);
    ars_exp_text_printf(md, "| initialization | hidden weight std | gradient ratio, step 0 | steps to loss < %.1f | "
                            "test accuracy | trains | first non-finite step | diagnosis |\n"
                            "| --- | --- | --- | --- | --- | --- | --- | --- |\n",
                        ARS_EXP_LOSS_TARGET);
    for (int i = 0; i < INITS; i++) {
        const ars_exp_run *r = runs[i];
        char std[48], r0[32], steps[32], acc[32], nonfinite[32];
        if (isnan(inits[i].std)) snprintf(std, sizeof std, "set on data");
        else snprintf(std, sizeof std, "%.3g", inits[i].std);
        ars_exp_format_sci(r0, sizeof r0, r->ratio_start);
        ars_exp_format_step(steps, sizeof steps, r->steps_to_target);
        ars_exp_format_percent(acc, sizeof acc, r->test_accuracy);
        ars_exp_format_step(nonfinite, sizeof nonfinite, r->first_nonfinite);
        ars_exp_text_printf(md, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", inits[i].label, std, r0, steps, acc,
                            ars_exp_trains(r) ? "yes" : "no", nonfinite,
                            r->error ? r->error_text : r->diagnosis[0] ? r->diagnosis : "healthy");
    }
    ars_exp_text_printf(md, "\n");

    ars_exp_panel panels[2];
    memset(panels, 0, sizeof panels);
    snprintf(panels[0].title, sizeof panels[0].title, "training loss");
    snprintf(panels[0].xlabel, sizeof panels[0].xlabel, "step");
    snprintf(panels[0].ylabel, sizeof panels[0].ylabel, "training loss (recorded steps)");
    panels[0].hline = log(10.0);
    panels[0].ymax = 5;
    snprintf(panels[0].hline_label, sizeof panels[0].hline_label, "chance (ln 10)");
    snprintf(panels[1].title, sizeof panels[1].title, "gradient norm per layer at step 0");
    snprintf(panels[1].xlabel, sizeof panels[1].xlabel, "dense layer (1 = input side)");
    snprintf(panels[1].ylabel, sizeof panels[1].ylabel, "parameter gradient norm");
    panels[1].logy = 1;
    panels[1].hline = NAN;
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < INITS; i++) {
            ars_exp_series *s = &panels[p].series[panels[p].count++];
            if (runs[i]->first_nonfinite >= 0)
                snprintf(s->label, sizeof s->label, "%s (NaN from step %lld)", inits[i].label,
                         (long long)runs[i]->first_nonfinite);
            else snprintf(s->label, sizeof s->label, "%s", inits[i].label);
            s->curve = p == 0 ? &runs[i]->loss : &runs[i]->flow_start;
            s->style = 1;
            s->marker = p == 1;
            s->vline = NAN;
        }
    ars_exp_figure(e, S, "init_loss",
                   "Left: training loss per initialization (a curve stops where the loss became non-finite; losses "
                   "above 5 are drawn at 5). Right: gradient norm of each dense layer at step 0, log scale.",
                   "30-layer ReLU MLP: five initializations", panels, 2);
    ars_exp_body_claims(e, S);
}

int ars_exp_section_init(ars_exp *e)
{
    init_kind inits[INITS];
    ars_exp_run *runs[INITS];
    init_table(inits);
    for (int i = 0; i < INITS; i++) {
        ars_exp_text t = {0};
        char key[64];
        ars_exp_config_deep(e, &t, ARS_EXP_MOMENTUM, LR, NULL, inits[i].lines);
        snprintf(key, sizeof key, "init-%s", inits[i].key);
        int rc = t.failed ? ars_error(ARS_ENOMEM, "experiment: out of memory") : ars_exp_train(e, key, t.data, &runs[i]);
        ars_exp_text_free(&t);
        if (rc) return rc;
    }
    if (e->rank != 0) return 0;
    judge(e, inits, runs);
    write_body(e, inits, runs);
    return 0;
}
