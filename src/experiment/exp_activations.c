/* exp_activations: section 1. A 20-layer MLP with each activation, at
 * matched initialization: every network starts variance-preserving for its
 * own activation, W ~ N(0, gain^2 / fan_in) with the activation's gain, and
 * the same random draws (seed) only rescaled. What then differs is the
 * activation and its derivative. Measured: the first layer's gradient
 * relative to the output layer's at step 0 and after training, test
 * accuracy after a fixed budget. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "experiment.h"

enum { DEPTH = 20, WIDTH = 128, INPUTS = 784, ACTIVATIONS = 7 };

typedef struct activation {
    const char *kind, *label, *gain_text;
    double gain;
    int relu_family;
} activation;

/* Gains: torch.nn.init.calculate_gain where it has one; He's sqrt(2) for
 * ELU and GELU (no standard gain); 1 for SELU, the LeCun normal init that
 * self-normalization assumes (Klambauer et al. 2017). */
static void activation_table(activation out[ACTIVATIONS])
{
    const activation table[ACTIVATIONS] = {
        {"sigmoid", "sigmoid", "1", 1.0, 0},
        {"tanh", "tanh", "5/3", 5.0 / 3.0, 0},
        {"relu", "ReLU", "√2", sqrt(2.0), 1},
        {"leaky_relu", "leaky ReLU (0.01)", "√(2/(1+0.01²))", sqrt(2.0 / (1.0 + 1e-4)), 1},
        {"elu", "ELU", "√2", sqrt(2.0), 1},
        {"selu", "SELU", "1 (LeCun)", 1.0, 1},
        {"gelu", "GELU", "√2", sqrt(2.0), 1},
    };
    memcpy(out, table, sizeof table);
}

static void config_text(const ars_exp *e, const activation *a, ars_exp_text *t)
{
    char init[96];
    ars_exp_config_run(e, t, e->budget.steps_activations, 0, "optimizer = sgd\nlr = 0.01\nmomentum = 0.9\n");
    ars_exp_init_normal(init, sizeof init, a->gain / sqrt((double)INPUTS));
    ars_exp_config_dense(t, WIDTH, init);
    ars_exp_text_printf(t, "activation = %s\n[repeat]\ncount = %d\n", a->kind, DEPTH - 2);
    ars_exp_init_normal(init, sizeof init, a->gain / sqrt((double)WIDTH));
    ars_exp_config_dense(t, WIDTH, init);
    ars_exp_text_printf(t, "activation = %s\n[end]\n", a->kind);
    ars_exp_init_normal(init, sizeof init, 1.0 / sqrt((double)WIDTH));   /* linear output: gain 1 */
    ars_exp_config_dense(t, 10, init);
}

static void judge(ars_exp *e, const activation *acts, ars_exp_run *const *runs)
{
    const int S = ARS_EXP_ACTIVATIONS;
    char a[32], b[32], c[32], d[32];
    const ars_exp_run *sigmoid = runs[0], *tanh_run = runs[1];

    ars_exp_format_sci(a, sizeof a, sigmoid->ratio_start);
    ars_exp_format_sci(b, sizeof b, sigmoid->ratio_end);
    ars_exp_format_percent(c, sizeof c, sigmoid->test_accuracy);
    int vanishes = sigmoid->ratio_start < 1e-3;
    ars_exp_claim *claim = ars_exp_claim_add(
        e, S, vanishes ? ARS_EXP_CONFIRMED : ARS_EXP_NOT_CONFIRMED,
        "Sigmoid's derivative is at most 0.25, so in a deep sigmoid network the gradient shrinks layer by layer "
        "and the first layers barely learn.");
    snprintf(claim->measured, sizeof claim->measured,
             "%d-layer sigmoid network: gradient ratio %s at step 0, %s after training; test accuracy %s.", DEPTH,
             a, b, c);
    if (!vanishes)
        snprintf(claim->note, sizeof claim->note, "the first layer gets %s of the output layer's gradient", a);
    ars_exp_claim_check(claim, vanishes, "the sigmoid network's gradient ratio at step 0 is below 1e-3");

    ars_exp_format_sci(a, sizeof a, tanh_run->ratio_start);
    ars_exp_format_sci(b, sizeof b, tanh_run->ratio_end);
    ars_exp_format_sci(c, sizeof c, sigmoid->ratio_start);
    ars_exp_format_percent(d, sizeof d, tanh_run->test_accuracy);
    double r = tanh_run->ratio_start;
    ars_exp_verdict v = r < 1e-3 ? ARS_EXP_CONFIRMED : r < 1e-1 ? ARS_EXP_QUALIFIED : ARS_EXP_NOT_CONFIRMED;
    if (isnan(r)) v = ARS_EXP_INCONCLUSIVE;
    claim = ars_exp_claim_add(e, S, v, "tanh (derivative at most 1, saturating) suffers from vanishing gradients too.");
    snprintf(claim->measured, sizeof claim->measured,
             "tanh network: gradient ratio %s at step 0, %s after training; test accuracy %s.", a, b, d);
    if (v == ARS_EXP_QUALIFIED)
        snprintf(claim->note, sizeof claim->note,
                 "tanh's gradient also shrinks toward the input (ratio %s) but far less than sigmoid's (%s): "
                 "its derivative is 1 at 0, not 0.25", a, c);
    else if (v == ARS_EXP_NOT_CONFIRMED)
        snprintf(claim->note, sizeof claim->note,
                 "initialized with its gain 5/3, tanh keeps the gradient (ratio %s at step 0, %s after training): "
                 "at this depth the vanishing is sigmoid's (%s), not tanh's", a, b, c);

    /* The ReLU family at step 0: within two decades of the output layer. */
    char outside[256] = "", ratios[384] = "";
    int all_within = 1;
    for (int i = 0; i < ACTIVATIONS; i++) {
        if (!acts[i].relu_family) continue;
        double x = runs[i]->ratio_start;
        ars_exp_format_sci(a, sizeof a, x);
        size_t used = strlen(ratios);
        snprintf(ratios + used, sizeof ratios - used, "%s%s %s", used ? ", " : "", acts[i].label, a);
        if (!(x >= 1e-2 && x <= 1e2)) {
            all_within = 0;
            used = strlen(outside);
            snprintf(outside + used, sizeof outside - used, "%s%s (%s)", used ? ", " : "", acts[i].label, a);
        }
    }
    claim = ars_exp_claim_add(e, S, all_within ? ARS_EXP_CONFIRMED : ARS_EXP_QUALIFIED,
                              "ReLU and its variants (derivative 1 where active) keep the gradient flowing through "
                              "depth.");
    snprintf(claim->measured, sizeof claim->measured, "gradient ratio at step 0 (between 1e-2 and 1e2 counts as "
             "flowing): %s.", ratios);
    if (!all_within)
        snprintf(claim->note, sizeof claim->note, "outside that band: %s", outside);

    /* Accuracy: the worst ReLU-family network against sigmoid and against tanh. */
    double worst = INFINITY, best = -INFINITY;
    int best_i = -1, worst_i = -1;
    for (int i = 0; i < ACTIVATIONS; i++) {
        if (!acts[i].relu_family) continue;
        double x = isnan(runs[i]->test_accuracy) ? 0 : runs[i]->test_accuracy;
        if (x > best) best = x, best_i = i;
        if (x < worst) worst = x, worst_i = i;
    }
    const double margin = 0.01;   /* a point of accuracy: closer is a tie */
    double sig = isnan(sigmoid->test_accuracy) ? 0 : sigmoid->test_accuracy;
    double tanh_acc = isnan(tanh_run->test_accuracy) ? 0 : tanh_run->test_accuracy;
    int beats_sigmoid = worst > sig + margin, beats_tanh = worst > tanh_acc + margin;
    v = beats_sigmoid && beats_tanh ? ARS_EXP_CONFIRMED
        : beats_sigmoid || beats_tanh ? ARS_EXP_QUALIFIED : ARS_EXP_NOT_CONFIRMED;
    claim = ars_exp_claim_add(e, S, v, "So a deep network with a ReLU-family activation trains better than one with "
                              "sigmoid or tanh.");
    ars_exp_format_percent(a, sizeof a, sigmoid->test_accuracy);
    ars_exp_format_percent(b, sizeof b, tanh_run->test_accuracy);
    ars_exp_format_percent(c, sizeof c, worst);
    ars_exp_format_percent(d, sizeof d, best);
    snprintf(claim->measured, sizeof claim->measured,
             "test accuracy after %d steps: sigmoid %s, tanh %s; ReLU family from %s (%s) to %s (%s).",
             e->budget.steps_activations, a, b, c, worst_i >= 0 ? acts[worst_i].label : "?", d,
             best_i >= 0 ? acts[best_i].label : "?");
    if (v == ARS_EXP_QUALIFIED && beats_sigmoid)
        snprintf(claim->note, sizeof claim->note, "every ReLU variant beats sigmoid (%s), but not tanh (%s): at "
                 "matched initialization and this depth tanh trains about as well as the ReLU family (%s to %s)",
                 a, b, c, d);
    else if (v == ARS_EXP_QUALIFIED)
        snprintf(claim->note, sizeof claim->note, "every ReLU variant beats tanh (%s), but not sigmoid (%s)", b, a);
    else if (v == ARS_EXP_NOT_CONFIRMED)
        snprintf(claim->note, sizeof claim->note, "the weakest ReLU variant (%s) is not a point above sigmoid (%s) "
                 "or tanh (%s)", c, a, b);
}

static void write_body(ars_exp *e, const activation *acts, ars_exp_run *const *runs)
{
    const int S = ARS_EXP_ACTIVATIONS;
    ars_exp_text *md = &e->body[S];
    ars_exp_text_printf(md, "## 1. Activations: sigmoid and tanh against the ReLU family\n\n");
    ars_exp_text_printf(md,
                        "**Setup.** %d dense layers (%d hidden layers of %d units and the 10-way output), one "
                        "activation throughout; SGD with momentum 0.9, learning rate 0.01, %d steps. **Matched "
                        "initialization** means every network starts variance-preserving *for its own "
                        "activation*: every weight W ~ N(0, gain² / fan_in) with the activation's gain (the output "
                        "layer gain 1), from the same random draws (seed %llu), so the networks differ only in the "
                        "scale of their weights and in the activation and its derivative. Gains: "
                        "`torch.nn.init.calculate_gain` where it defines one, He's √2 for ELU and GELU, 1 for SELU "
                        "(the LeCun init its self-normalization assumes). A network with the same init for all "
                        "would instead start sigmoid or tanh too small or ReLU too large, and measure the init "
                        "rather than the activation.\n\n",
                        DEPTH, DEPTH - 1, WIDTH, e->budget.steps_activations, (unsigned long long)e->options->seed);
    ars_exp_text_printf(md, "| activation | gain | gradient ratio, step 0 | after training | test accuracy | "
                            "steps to loss < %.1f | diagnosis |\n| --- | --- | --- | --- | --- | --- | --- |\n",
                        ARS_EXP_LOSS_TARGET);
    for (int i = 0; i < ACTIVATIONS; i++) {
        const ars_exp_run *r = runs[i];
        char r0[32], r1[32], acc[32], steps[32];
        ars_exp_format_sci(r0, sizeof r0, r->ratio_start);
        ars_exp_format_sci(r1, sizeof r1, r->ratio_end);
        ars_exp_format_percent(acc, sizeof acc, r->test_accuracy);
        ars_exp_format_step(steps, sizeof steps, r->steps_to_target);
        ars_exp_text_printf(md, "| %s | %s | %s | %s | %s | %s | %s |\n", acts[i].label, acts[i].gain_text, r0, r1,
                            acc, steps, r->error ? r->error_text : r->diagnosis[0] ? r->diagnosis : "healthy");
    }
    ars_exp_text_printf(md, "\n");

    ars_exp_panel panels[2];
    memset(panels, 0, sizeof panels);
    for (int p = 0; p < 2; p++) {
        ars_exp_panel *panel = &panels[p];
        snprintf(panel->title, sizeof panel->title, p == 0 ? "step 0" : "after training (last record)");
        snprintf(panel->xlabel, sizeof panel->xlabel, "dense layer (1 = input side, %d = output)", DEPTH);
        snprintf(panel->ylabel, sizeof panel->ylabel, "parameter gradient norm");
        panel->logy = 1;
        panel->hline = NAN;
        for (int i = 0; i < ACTIVATIONS; i++) {
            ars_exp_series *s = &panel->series[panel->count++];
            snprintf(s->label, sizeof s->label, "%s", acts[i].label);
            s->curve = p == 0 ? &runs[i]->flow_start : &runs[i]->flow_end;
            s->style = acts[i].relu_family ? 1 : 2;
            s->marker = 1;
            s->vline = NAN;
        }
    }
    ars_exp_figure(e, S, "activations_gradient_flow",
                   "Gradient norm of each dense layer's parameters, input side left (log scale), at step 0 and at "
                   "the last record; dashed: sigmoid and tanh.",
                   "Gradient flow through a 20-layer MLP, by activation", panels, 2);
    ars_exp_panel loss;
    memset(&loss, 0, sizeof loss);
    snprintf(loss.title, sizeof loss.title, "training loss (recorded steps)");
    snprintf(loss.xlabel, sizeof loss.xlabel, "step");
    snprintf(loss.ylabel, sizeof loss.ylabel, "training loss");
    loss.hline = log(10.0);
    loss.ymax = 5;
    snprintf(loss.hline_label, sizeof loss.hline_label, "chance (ln 10)");
    for (int i = 0; i < ACTIVATIONS; i++) {
        ars_exp_series *s = &loss.series[loss.count++];
        snprintf(s->label, sizeof s->label, "%s", acts[i].label);
        s->curve = &runs[i]->loss;
        s->style = acts[i].relu_family ? 1 : 2;
        s->vline = NAN;
    }
    ars_exp_figure(e, S, "activations_loss", "Training loss of the 20-layer MLP by activation.",
                   "Training loss, 20-layer MLP, by activation", &loss, 1);
    ars_exp_body_claims(e, S);
}

int ars_exp_section_activations(ars_exp *e)
{
    activation acts[ACTIVATIONS];
    ars_exp_run *runs[ACTIVATIONS];
    activation_table(acts);
    for (int i = 0; i < ACTIVATIONS; i++) {
        ars_exp_text t = {0};
        char key[64];
        config_text(e, &acts[i], &t);
        snprintf(key, sizeof key, "act-%s", acts[i].kind);
        int rc = t.failed ? ars_error(ARS_ENOMEM, "experiment: out of memory") : ars_exp_train(e, key, t.data, &runs[i]);
        ars_exp_text_free(&t);
        if (rc) return rc;
    }
    if (e->rank != 0) return 0;
    judge(e, acts, runs);
    write_body(e, acts, runs);
    return 0;
}
