/* exp_residual: section 4. Plain against residual MLPs of narrow width at
 * depths 10, 50, 200 and 1000 dense layers. The plain network is
 * dense-ReLU all the way with He initialization; the residual one has the
 * same layers with skip connections around each ReLU-dense pair,
 * x + W relu(x), its branch weights scaled by 1/sqrt(blocks) at
 * initialization so the sum of the branches keeps its variance (the usual
 * practice for residual networks without normalization). Both train with
 * the same Adam, warmup and clipping. Measured: accuracy and the first
 * layer's gradient at step 0. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "experiment.h"

enum { WIDTH = 32, MAX_DEPTHS = 4 };

typedef struct depths {
    int depth[MAX_DEPTHS];
    int count;
    ars_exp_run *plain[MAX_DEPTHS], *residual[MAX_DEPTHS];
} depths;

static int warmup_steps(const ars_exp *e) { return e->budget.steps_residual / 15; }

static void config_text(const ars_exp *e, int depth, int residual, ars_exp_text *t)
{
    char lines[160], init[96];
    snprintf(lines, sizeof lines, "optimizer = adam\nlr = 0.001\nwarmup_steps = %d\nclip_norm = 1\n", warmup_steps(e));
    ars_exp_config_run(e, t, e->budget.steps_residual, 0, lines);
    ars_exp_config_dense(t, WIDTH, "init = he_normal\n");
    const int blocks = depth - 2;
    ars_exp_text_printf(t, "[repeat]\ncount = %d\n", blocks);
    if (residual) {
        ars_exp_init_normal(init, sizeof init, sqrt(2.0 / WIDTH) / sqrt((double)blocks));
        ars_exp_text_printf(t, "[residual]\n[relu]\n");
        ars_exp_config_dense(t, WIDTH, init);
        ars_exp_text_printf(t, "[end]\n");
    } else {
        ars_exp_text_printf(t, "[relu]\n");
        ars_exp_config_dense(t, WIDTH, "init = he_normal\n");
    }
    ars_exp_text_printf(t, "[end]\n[relu]\n");
    ars_exp_config_dense(t, 10, "init = xavier_normal\n");
}

static void judge(ars_exp *e, const depths *d)
{
    const int S = ARS_EXP_RESIDUAL, last = d->count - 1;
    char list[256] = "", a[32], b[32];
    for (int i = 0; i < d->count; i++) {
        ars_exp_format_percent(a, sizeof a, d->plain[i]->test_accuracy);
        size_t used = strlen(list);
        snprintf(list + used, sizeof list - used, "%s%d: %s", i ? ", " : "", d->depth[i], a);
    }
    const ars_exp_run *deep_plain = d->plain[last], *deep_res = d->residual[last];
    int fails = !ars_exp_trains(deep_plain);
    int degrades = deep_plain->test_accuracy < d->plain[0]->test_accuracy || isnan(deep_plain->test_accuracy);
    ars_exp_verdict v = fails && degrades ? ARS_EXP_CONFIRMED : degrades ? ARS_EXP_QUALIFIED : ARS_EXP_NOT_CONFIRMED;
    ars_exp_claim *c = ars_exp_claim_add(e, S, v, "Without skip connections a deeper network trains worse, and a "
                                         "very deep one not at all.");
    snprintf(c->measured, sizeof c->measured, "plain network, test accuracy by depth: %s.", list);
    if (v == ARS_EXP_QUALIFIED)
        snprintf(c->note, sizeof c->note, "the %d-layer plain network degrades but still trains", d->depth[last]);
    else if (v == ARS_EXP_NOT_CONFIRMED)
        snprintf(c->note, sizeof c->note, "the plain network does not degrade with depth here");

    list[0] = '\0';
    int all_train = 1;
    for (int i = 0; i < d->count; i++) {
        ars_exp_format_percent(a, sizeof a, d->residual[i]->test_accuracy);
        size_t used = strlen(list);
        snprintf(list + used, sizeof list - used, "%s%d: %s", i ? ", " : "", d->depth[i], a);
        all_train &= ars_exp_trains(d->residual[i]);
    }
    int above_chance = deep_res->test_accuracy > 0.2;
    v = all_train ? ARS_EXP_CONFIRMED : above_chance ? ARS_EXP_QUALIFIED : ARS_EXP_NOT_CONFIRMED;
    char claim_text[160];
    snprintf(claim_text, sizeof claim_text, "Residual connections let a very deep network (here %d layers) train.",
             d->depth[last]);
    c = ars_exp_claim_add(e, S, v, claim_text);
    snprintf(c->measured, sizeof c->measured, "residual network, test accuracy by depth: %s.", list);
    if (v == ARS_EXP_QUALIFIED)
        snprintf(c->note, sizeof c->note, "above chance at every depth, but below %.0f%% at some within the budget",
                 100 * ARS_EXP_TRAINS_ACCURACY);
    char check[160];
    snprintf(check, sizeof check, "the %d-layer residual network's test accuracy is above 20%% (chance 10%%)",
             d->depth[last]);
    ars_exp_claim_check(c, above_chance, check);

    double rp = deep_plain->ratio_start, rr = deep_res->ratio_start;
    v = rr >= 1e-2 && rp < 1e-3 ? ARS_EXP_CONFIRMED : rr >= 1e-2 ? ARS_EXP_QUALIFIED : ARS_EXP_NOT_CONFIRMED;
    if (isnan(rr)) v = ARS_EXP_INCONCLUSIVE;
    c = ars_exp_claim_add(e, S, v, "The identity path carries the gradient back to the first layer, where a plain "
                          "deep network's vanishes.");
    ars_exp_format_sci(a, sizeof a, rp);
    ars_exp_format_sci(b, sizeof b, rr);
    snprintf(c->measured, sizeof c->measured, "gradient ratio at step 0, %d layers: plain %s, residual %s.",
             d->depth[last], a, b);
    if (v == ARS_EXP_QUALIFIED)
        snprintf(c->note, sizeof c->note, "the plain network's gradient reaches its first layer too (ratio %s): "
                 "its failure is not only a vanishing gradient", a);
    else if (v == ARS_EXP_NOT_CONFIRMED)
        snprintf(c->note, sizeof c->note, "the residual network's first layer gets %s of the output layer's gradient", b);
}

static void write_body(ars_exp *e, const depths *d)
{
    const int S = ARS_EXP_RESIDUAL;
    ars_exp_text *md = &e->body[S];
    ars_exp_text_printf(md, "## 4. Residual connections: plain against residual, 10 to %d layers\n\n",
                        d->depth[d->count - 1]);
    ars_exp_text_printf(md,
                        "**Setup.** Narrow MLPs (width %d). *Plain*: a 784→%d dense layer, then depth − 2 blocks "
                        "of ReLU → dense (He initialization), then ReLU → the 10-way output: depth dense layers. "
                        "*Residual*: the same layers, each block wrapped in a skip connection, x + W·ReLU(x), its "
                        "dense weights N(0, (2/%d)/(depth − 2)) so that the blocks' sum keeps the signal's variance "
                        "at initialization (without normalization, unscaled branches would double it per block). "
                        "Both: Adam, learning rate 0.001 with %d warmup steps, global-norm clipping at 1, %d steps "
                        "(the recipe that trains the residual network; the plain one gets the same).\n\n",
                        WIDTH, WIDTH, WIDTH, warmup_steps(e), e->budget.steps_residual);
    ars_exp_text_printf(md, "| depth | plain: test accuracy | plain: first-layer gradient, step 0 | plain: gradient "
                            "ratio, step 0 | residual: test accuracy | residual: first-layer gradient, step 0 | "
                            "residual: gradient ratio, step 0 |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    for (int i = 0; i < d->count; i++) {
        const ars_exp_run *runs[2] = {d->plain[i], d->residual[i]};
        ars_exp_text_printf(md, "| %d |", d->depth[i]);
        for (int k = 0; k < 2; k++) {
            char acc[32], grad[32], ratio[32];
            ars_exp_format_percent(acc, sizeof acc, runs[k]->test_accuracy);
            ars_exp_format_sci(grad, sizeof grad, runs[k]->first_grad_start);
            ars_exp_format_sci(ratio, sizeof ratio, runs[k]->ratio_start);
            ars_exp_text_printf(md, " %s | %s | %s |", runs[k]->error ? runs[k]->error_text : acc, grad, ratio);
        }
        ars_exp_text_printf(md, "\n");
    }
    ars_exp_text_printf(md, "\nDiagnosis of the health rules:\n\n");
    for (int i = 0; i < d->count; i++)
        ars_exp_text_printf(md, "- depth %d: plain — %s; residual — %s\n", d->depth[i],
                            d->plain[i]->diagnosis[0] ? d->plain[i]->diagnosis : "healthy",
                            d->residual[i]->diagnosis[0] ? d->residual[i]->diagnosis : "healthy");
    ars_exp_text_printf(md, "\n");

    ars_exp_curve acc[2], ratio[2];
    double xs[2][MAX_DEPTHS], ya[2][MAX_DEPTHS], yr[2][MAX_DEPTHS];
    ars_exp_panel panels[2];
    memset(panels, 0, sizeof panels);
    snprintf(panels[0].title, sizeof panels[0].title, "test accuracy after %d steps", e->budget.steps_residual);
    snprintf(panels[0].xlabel, sizeof panels[0].xlabel, "depth (dense layers)");
    snprintf(panels[0].ylabel, sizeof panels[0].ylabel, "test accuracy");
    panels[0].logx = 1;
    panels[0].hline = 0.1;
    snprintf(panels[0].hline_label, sizeof panels[0].hline_label, "chance (10%%)");
    snprintf(panels[1].title, sizeof panels[1].title, "first layer's gradient / output layer's, step 0");
    snprintf(panels[1].xlabel, sizeof panels[1].xlabel, "depth (dense layers)");
    snprintf(panels[1].ylabel, sizeof panels[1].ylabel, "gradient ratio");
    panels[1].logx = panels[1].logy = 1;
    panels[1].hline = 1e-3;
    snprintf(panels[1].hline_label, sizeof panels[1].hline_label, "vanishing (ratio 1e-3)");
    for (int k = 0; k < 2; k++) {
        acc[k] = (ars_exp_curve){.count = d->count, .x = xs[k], .y = ya[k]};
        ratio[k] = (ars_exp_curve){.count = d->count, .x = xs[k], .y = yr[k]};
        for (int i = 0; i < d->count; i++) {
            const ars_exp_run *r = k == 0 ? d->plain[i] : d->residual[i];
            xs[k][i] = d->depth[i];
            ya[k][i] = r->test_accuracy;
            yr[k][i] = r->ratio_start;
        }
        for (int p = 0; p < 2; p++) {
            ars_exp_series *s = &panels[p].series[panels[p].count++];
            snprintf(s->label, sizeof s->label, "%s", k == 0 ? "plain" : "residual");
            s->curve = p == 0 ? &acc[k] : &ratio[k];
            s->style = 1;
            s->marker = 1;
            s->vline = NAN;
        }
    }
    ars_exp_figure(e, S, "residual_depth",
                   "Left: test accuracy against depth. Right: the first dense layer's gradient norm relative to the "
                   "output layer's at step 0 (log scales).",
                   "Plain against residual MLPs (width 32) by depth", panels, 2);

    const int last = d->count - 1;
    ars_exp_panel flow;
    memset(&flow, 0, sizeof flow);
    snprintf(flow.title, sizeof flow.title, "%d dense layers", d->depth[last]);
    snprintf(flow.xlabel, sizeof flow.xlabel, "dense layer (1 = input side)");
    snprintf(flow.ylabel, sizeof flow.ylabel, "parameter gradient norm");
    flow.logy = 1;
    flow.hline = NAN;
    const ars_exp_run *deep[2] = {d->plain[last], d->residual[last]};
    for (int k = 0; k < 2; k++)
        for (int when = 0; when < 2; when++) {
            ars_exp_series *s = &flow.series[flow.count++];
            snprintf(s->label, sizeof s->label, "%s, %s", k == 0 ? "plain" : "residual",
                     when == 0 ? "step 0" : "after training");
            s->curve = when == 0 ? &deep[k]->flow_start : &deep[k]->flow_end;
            s->style = when == 0 ? 1 : 2;
            s->vline = NAN;
        }
    ars_exp_figure(e, S, "residual_gradient_flow",
                   "Gradient norm of every dense layer of the deepest networks, at step 0 (solid) and at the last "
                   "record (dashed), log scale.",
                   "Gradient flow: plain against residual", &flow, 1);
    ars_exp_body_claims(e, S);
}

int ars_exp_section_residual(ars_exp *e)
{
    static const int all[MAX_DEPTHS] = {10, 50, 200, 1000};
    depths d;
    memset(&d, 0, sizeof d);
    d.count = MAX_DEPTHS;
    memcpy(d.depth, all, sizeof all);
    for (int i = 0; i < d.count; i++)
        for (int residual = 0; residual < 2; residual++) {
            ars_exp_text t = {0};
            char key[64];
            config_text(e, d.depth[i], residual, &t);
            snprintf(key, sizeof key, "%s-%d", residual ? "residual" : "plain", d.depth[i]);
            ars_exp_run **slot = residual ? &d.residual[i] : &d.plain[i];
            int rc = t.failed ? ars_error(ARS_ENOMEM, "experiment: out of memory") : ars_exp_train(e, key, t.data, slot);
            ars_exp_text_free(&t);
            if (rc) return rc;
        }
    if (e->rank != 0) return 0;
    judge(e, &d);
    write_body(e, &d);
    return 0;
}
