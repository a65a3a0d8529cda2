/* exp_cure: section 8, the health monitor's automatic cures ([health] cure
 * = apply, docs/health.md). Two networks the earlier sections break, left
 * to cure themselves: examples/deep-sigmoid.cfg (20 sigmoid layers,
 * N(0, 0.01^2), SGD at 0.1: a vanishing gradient), against the same network
 * cured by hand (ReLU and He initialization in its hidden layers); and
 * section 5's 20-layer ReLU MLP at learning rate 0.5 without clipping (it
 * goes NaN at step 4), against itself without cures. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "experiment.h"

enum { DEPTH = 20, WIDTH = 128, SIGMOID, HAND, CURED_SIGMOID, EXPLODING_CURED };

static const double TARGET_ACCURACY = 0.84, HIGH_RATE = 0.5;

/* [run] of the budget with the monitor on and cure = apply (the experiment's runs otherwise replay the rules
 * afterwards with the monitor off) */
static void run_lines(const ars_exp *e, ars_exp_text *t, int steps, int probe_every, const char *optimizer, int cure)
{
    ars_exp_text run = {0};
    ars_exp_config_run(e, &run, steps, probe_every, optimizer);
    const char *off = "[health]\nenabled = false\n";
    char *at = run.data ? strstr(run.data, off) : NULL;
    if (at) *at = '\0';
    ars_exp_text_printf(t, "%s", run.data ? run.data : "");
    if (cure) ars_exp_text_printf(t, "[health]\ncure = apply\n");
    else ars_exp_text_printf(t, "%s", off);
    if (run.failed) t->failed = 1;
    ars_exp_text_free(&run);
}

static int steps_per_epoch(const ars_exp *e) { return (e->budget.train_limit + e->budget.batch - 1) / e->budget.batch; }

static void config_text(const ars_exp *e, int which, ars_exp_text *t)
{
    char lines[96];
    if (which == EXPLODING_CURED) {
        snprintf(lines, sizeof lines, "optimizer = sgd\nlr = %g\n", HIGH_RATE);
        run_lines(e, t, e->budget.steps_exploding, 1, lines, 1);
        ars_exp_config_mlp(t, DEPTH, WIDTH, "relu", NULL, "init = he_normal\n");
        return;
    }
    snprintf(lines, sizeof lines, "optimizer = sgd\nlr = 0.1\nhistogram_every = 50\n");
    run_lines(e, t, e->budget.cure_epochs * steps_per_epoch(e), 10, lines, which == CURED_SIGMOID);
    char init[96];
    ars_exp_init_normal(init, sizeof init, 0.01);
    ars_exp_config_mlp(t, DEPTH, WIDTH, which == HAND ? "relu" : "sigmoid", NULL,
                       which == HAND ? "init = he_normal\n" : init);
    if (which == HAND) {   /* the output layer keeps its N(0, 0.01^2), as in deep-sigmoid.cfg */
        char *last = strstr(t->data, "[end]\n[dense]");
        if (last) {
            t->length = (size_t)(last - t->data) + strlen("[end]\n");
            t->data[t->length] = '\0';
            ars_exp_config_dense(t, 10, init);
        }
    }
}

/* First epoch whose evaluation reached the target, -1: never. */
static int epochs_to_target(const ars_exp *e, const ars_exp_run *r)
{
    for (int k = 0; k < r->accuracy.count; k++)
        if (r->accuracy.y[k] >= TARGET_ACCURACY) return (int)(r->accuracy.x[k] / steps_per_epoch(e) + 0.5);
    return -1;
}

static void epochs_text(char *out, size_t size, int epochs)
{
    if (epochs < 0) snprintf(out, size, "never");
    else snprintf(out, size, "%d", epochs);
}

static void judge(ars_exp *e, ars_exp_run *sigmoid, ars_exp_run *hand, ars_exp_run *cured, ars_exp_run *noclip,
                  ars_exp_run *exploding)
{
    const int S = ARS_EXP_CURE;
    char a[32], b[32], c[32], ha[16], ca[16];
    ars_exp_format_percent(a, sizeof a, sigmoid->test_accuracy);
    ars_exp_format_percent(b, sizeof b, hand->test_accuracy);
    ars_exp_format_percent(c, sizeof c, cured->test_accuracy);
    const int hand_epochs = epochs_to_target(e, hand), cured_epochs = epochs_to_target(e, cured);
    epochs_text(ha, sizeof ha, hand_epochs);
    epochs_text(ca, sizeof ca, cured_epochs);
    const int reaches = cured_epochs >= 0 && hand_epochs >= 0 && cured_epochs <= 2 * hand_epochs;
    ars_exp_claim *claim = ars_exp_claim_add(
        e, S, cured->cures == 0 ? ARS_EXP_NOT_CONFIRMED : reaches ? ARS_EXP_CONFIRMED : ARS_EXP_QUALIFIED,
        "The health monitor can cure the deep sigmoid network itself: it reaches 84% test accuracy within twice "
        "the epochs of the network cured by hand.");
    snprintf(claim->measured, sizeof claim->measured, "after %d epochs: uncured %s, cured by hand %s, cured "
             "automatically %s (%d cure%s: %.200s); epochs to 84%%: by hand %s, automatically %s.", e->budget.cure_epochs, a,
             b, c, cured->cures, cured->cures == 1 ? "" : "s", cured->cure_text[0] ? cured->cure_text : "none", ha, ca);
    if (cured->cures == 0) snprintf(claim->note, sizeof claim->note, "no cure was applied");
    else if (hand_epochs < 0)
        snprintf(claim->note, sizeof claim->note, "in this budget (%d epochs) not even the network cured by hand "
                 "reaches 84%%", e->budget.cure_epochs);
    else if (!reaches)
        snprintf(claim->note, sizeof claim->note, "cured, but it reached 84%% %s%s against %s epochs by hand",
                 cured_epochs < 0 ? "" : "after ", cured_epochs < 0 ? "never" : ca, ha);
    const int after_cure_finite = exploding->cures > 0 && exploding->nonfinite_steps == 0 && !exploding->error;
    char first[32], acc[32];
    ars_exp_format_step(first, sizeof first, noclip->first_nonfinite);
    ars_exp_format_percent(acc, sizeof acc, exploding->test_accuracy);
    claim = ars_exp_claim_add(e, S, after_cure_finite ? (exploding->cures == 1 ? ARS_EXP_CONFIRMED : ARS_EXP_QUALIFIED)
                                                      : ARS_EXP_NOT_CONFIRMED,
                              "The learning rate 0.5 run without clipping trains without a non-finite step after one "
                              "cure.");
    snprintf(claim->measured, sizeof claim->measured, "without cures: first non-finite step %s (%lld of %lld steps "
             "skipped); with cure = apply: %d cure%s (%.300s), %lld non-finite steps, test accuracy %s.", first,
             (long long)noclip->nonfinite_steps, (long long)noclip->steps, exploding->cures,
             exploding->cures == 1 ? "" : "s", exploding->cure_text[0] ? exploding->cure_text : "none",
             (long long)exploding->nonfinite_steps, acc);
    if (!after_cure_finite)
        snprintf(claim->note, sizeof claim->note, "%s", exploding->cures ? "a non-finite step after the cure"
                                                                          : "no cure was applied");
    else if (exploding->cures > 1)
        snprintf(claim->note, sizeof claim->note, "no non-finite step, but a later episode took %d more cure%s",
                 exploding->cures - 1, exploding->cures == 2 ? "" : "s");
    ars_exp_claim_check(claim, after_cure_finite, "with cure = apply, the learning rate 0.5 run is cured and has no "
                        "non-finite step");
}

static void write_body(ars_exp *e, ars_exp_run *runs[5])
{
    const int S = ARS_EXP_CURE;
    ars_exp_text *md = &e->body[S];
    ars_exp_text_printf(md, "## 8. Automatic cures\n\n");
    ars_exp_text_printf(md,
                        "**Setup.** `[health] cure = apply` (docs/health.md): when a health rule starts, every rank "
                        "rolls back to the last healthy state, applies the remedy of that rule and continues. "
                        "*Deep sigmoid*: examples/deep-sigmoid.cfg (20 dense layers, sigmoid, N(0, 0.01²), SGD at "
                        "0.1, %d epochs), uncured, cured by hand (ReLU and He initialization in the 19 hidden "
                        "layers) and cured automatically. *Learning rate too high*: section 5's 20-layer ReLU MLP "
                        "(He, SGD at %g, no clipping, %d steps recorded every step), without and with cures.\n\n",
                        e->budget.cure_epochs, HIGH_RATE, e->budget.steps_exploding);
    ars_exp_text_printf(md, "| run | test accuracy | epochs to 84%% | non-finite steps | cures | diagnosis |\n"
                            "| --- | --- | --- | --- | --- | --- |\n");
    static const char *const labels[] = {"deep sigmoid, uncured", "deep sigmoid, cured by hand",
                                         "deep sigmoid, cure = apply", "lr 0.5 without clipping, no cure",
                                         "lr 0.5 without clipping, cure = apply"};
    for (int k = 0; k < 5; k++) {
        const ars_exp_run *r = runs[k];
        char acc[32], epochs[16];
        ars_exp_format_percent(acc, sizeof acc, r->test_accuracy);
        if (k < 3) epochs_text(epochs, sizeof epochs, epochs_to_target(e, r));
        else snprintf(epochs, sizeof epochs, "—");
        ars_exp_text_printf(md, "| %s | %s | %s | %lld | %s | %s |\n", labels[k], acc, epochs,
                            (long long)r->nonfinite_steps, r->cure_text[0] ? r->cure_text : "none",
                            r->error ? r->error_text : r->diagnosis[0] ? r->diagnosis : "healthy");
    }
    ars_exp_text_printf(md, "\n");
    ars_exp_panel panel;
    memset(&panel, 0, sizeof panel);
    snprintf(panel.title, sizeof panel.title, "deep sigmoid network");
    snprintf(panel.xlabel, sizeof panel.xlabel, "step");
    snprintf(panel.ylabel, sizeof panel.ylabel, "test accuracy");
    panel.hline = TARGET_ACCURACY;
    snprintf(panel.hline_label, sizeof panel.hline_label, "84%%");
    for (int k = 0; k < 3; k++) {
        ars_exp_series *s = &panel.series[panel.count++];
        snprintf(s->label, sizeof s->label, "%s", labels[k] + strlen("deep sigmoid, "));
        s->curve = &runs[k]->accuracy;
        s->style = 1;
        s->marker = 1;
        s->vline = NAN;
    }
    ars_exp_figure(e, S, "cure_accuracy", "Test accuracy per epoch of the deep sigmoid network: uncured, cured by "
                   "hand and cured by the health monitor (the dotted line: 84%).", "Automatic cure of a vanishing "
                   "gradient", &panel, 1);
    ars_exp_body_claims(e, S);
}

int ars_exp_section_cure(ars_exp *e)
{
    /* the uncured lr 0.5 run is section 5's: trained once when both run */
    static const int which[5] = {SIGMOID, HAND, CURED_SIGMOID, 0, EXPLODING_CURED};
    static const char *const keys[5] = {"cure-sigmoid", "cure-hand", "cure-sigmoid-apply", "exploding-lr-noclip",
                                        "cure-exploding-apply"};
    ars_exp_run *runs[5];
    for (int k = 0; k < 5; k++) {
        ars_exp_text t = {0};
        if (which[k]) {
            config_text(e, which[k], &t);
        } else {   /* exp_exploding.c's text for it */
            char lines[64];
            snprintf(lines, sizeof lines, "optimizer = sgd\nlr = %g\n", HIGH_RATE);
            ars_exp_config_run(e, &t, e->budget.steps_exploding, 1, lines);
            ars_exp_config_mlp(&t, DEPTH, WIDTH, "relu", NULL, "init = he_normal\n");
        }
        int rc = t.failed ? ars_error(ARS_ENOMEM, "experiment: out of memory") : ars_exp_train(e, keys[k], t.data, &runs[k]);
        ars_exp_text_free(&t);
        if (rc) return rc;
    }
    if (e->rank != 0) return 0;
    judge(e, runs[0], runs[1], runs[2], runs[3], runs[4]);
    write_body(e, runs);
    return 0;
}
