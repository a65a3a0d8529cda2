/* exp_exploding: section 5. Two ways to make a 20-layer ReLU MLP's
 * gradient explode, each trained without and with global-norm clipping:
 * too high a learning rate (He initialization, SGD at 0.5) and too large
 * an initialization (1.5 times He's standard deviation, SGD at 0.01).
 * Non-finite steps are skipped (the default policy), so a run that
 * diverges reports the step its loss first became NaN/Inf. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "experiment.h"

enum { DEPTH = 20, WIDTH = 128, INPUTS = 784, SCENARIOS = 2 };
enum { HIGH_LR, LARGE_INIT };

static const double HIGH_RATE = 0.5, LOW_RATE = 0.01, INIT_SCALE = 1.5, CLIP = 1.0;

static void config_text(const ars_exp *e, int scenario, int clip, ars_exp_text *t)
{
    char lines[128], clip_line[48] = "";
    if (clip) snprintf(clip_line, sizeof clip_line, "clip_norm = %g\n", CLIP);
    snprintf(lines, sizeof lines, "optimizer = sgd\nlr = %g\n%s", scenario == HIGH_LR ? HIGH_RATE : LOW_RATE,
             clip_line);
    ars_exp_config_run(e, t, e->budget.steps_exploding, 1, lines);   /* every step: the way up to the NaN */
    if (scenario == HIGH_LR) {
        ars_exp_config_mlp(t, DEPTH, WIDTH, "relu", NULL, "init = he_normal\n");
        return;
    }
    char init[96];
    ars_exp_init_normal(init, sizeof init, INIT_SCALE * sqrt(2.0 / INPUTS));
    ars_exp_config_dense(t, WIDTH, init);
    ars_exp_text_printf(t, "activation = relu\n");
    ars_exp_init_normal(init, sizeof init, INIT_SCALE * sqrt(2.0 / WIDTH));
    ars_exp_config_mlp(t, DEPTH - 1, WIDTH, "relu", NULL, init);
}

static const char *scenario_label(int scenario)
{
    return scenario == HIGH_LR ? "learning rate too high (0.5)" : "initialization too large (1.5 × He)";
}

/* "loss non-finite at step 12 (288 of 300 steps skipped)" or "no non-finite step" */
static void describe_divergence(const ars_exp_run *r, char *out, size_t size)
{
    if (r->error) snprintf(out, size, "failed: %.120s", r->error_text);
    else if (r->first_nonfinite >= 0)
        snprintf(out, size, "loss or gradient NaN/Inf at step %lld (%lld of %lld steps skipped)",
                 (long long)r->first_nonfinite,
                 (long long)r->nonfinite_steps, (long long)r->steps);
    else snprintf(out, size, "no non-finite step in %lld", (long long)r->steps);
}

static void judge(ars_exp *e, ars_exp_run *runs[SCENARIOS][2])
{
    const int S = ARS_EXP_EXPLODING;
    for (int sc = 0; sc < SCENARIOS; sc++) {
        const ars_exp_run *off = runs[sc][0], *on = runs[sc][1];
        int diverges = off->first_nonfinite >= 0, prevents = on->first_nonfinite < 0 && !on->error;
        ars_exp_verdict v;
        if (!diverges) v = ARS_EXP_INCONCLUSIVE;
        else if (!prevents) v = ARS_EXP_NOT_CONFIRMED;
        else v = ars_exp_trains(on) ? ARS_EXP_CONFIRMED : ARS_EXP_QUALIFIED;
        ars_exp_claim *c = ars_exp_claim_add(
            e, S, v, sc == HIGH_LR ? "Too high a learning rate makes the gradient explode until the loss is NaN; "
                                     "clipping the global gradient norm prevents it, and the network trains."
                                   : "Clipping also rescues a network whose initialization is too large.");
        char a[160], b[160], acc[32], loss[32];
        describe_divergence(off, a, sizeof a);
        describe_divergence(on, b, sizeof b);
        ars_exp_format_percent(acc, sizeof acc, on->test_accuracy);
        ars_exp_format_sci(loss, sizeof loss, on->test_loss);
        snprintf(c->measured, sizeof c->measured, "%s: without clipping, %s; with clip_norm = %g, %s, test "
                 "accuracy %s (test loss %s).", scenario_label(sc), a, CLIP, b, acc, loss);
        if (v == ARS_EXP_INCONCLUSIVE)
            snprintf(c->note, sizeof c->note, "this run does not diverge without clipping");
        else if (v == ARS_EXP_NOT_CONFIRMED)
            snprintf(c->note, sizeof c->note, "clipping does not prevent the non-finite loss");
        else if (v == ARS_EXP_QUALIFIED)
            snprintf(c->note, sizeof c->note, "clipping prevents the NaN but the network reaches only %s (test loss "
                     "%s): clipping bounds each step, it does not repair %s", acc, loss,
                     sc == HIGH_LR ? "the learning rate" : "the initialization (He does)");
        if (sc == HIGH_LR)
            ars_exp_claim_check(c, diverges && prevents, "without clipping the loss becomes non-finite, with "
                                "clipping it never does");
    }
}

static void write_body(ars_exp *e, ars_exp_run *runs[SCENARIOS][2])
{
    const int S = ARS_EXP_EXPLODING;
    ars_exp_text *md = &e->body[S];
    ars_exp_text_printf(md, "## 5. Exploding gradients and clipping\n\n");
    ars_exp_text_printf(md,
                        "**Setup.** A %d-layer ReLU MLP (width %d), plain SGD, %d steps, in two scenarios: "
                        "*learning rate too high*, He initialization and learning rate %g; *initialization too "
                        "large*, every weight N(0, (%g × He's std)²) and learning rate %g. "
                        "Each without clipping and with the global gradient norm clipped to %g "
                        "(`torch.nn.utils.clip_grad_norm_`). A step whose loss or gradient is not finite is "
                        "skipped (`nonfinite = skip`), so a diverged run stays diverged and its first non-finite "
                        "step is where it broke. These runs record every step.\n\n",
                        DEPTH, WIDTH, e->budget.steps_exploding, HIGH_RATE, INIT_SCALE, LOW_RATE, CLIP);
    ars_exp_text_printf(md, "| scenario | clipping | first non-finite step | non-finite steps | largest gradient norm "
                            "(before clipping) | records clipped | test accuracy | training loss at the end | "
                            "diagnosis |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (int sc = 0; sc < SCENARIOS; sc++)
        for (int k = 0; k < 2; k++) {
            const ars_exp_run *r = runs[sc][k];
            char first[32], grad[32], clipped[32], acc[32], loss[32];
            ars_exp_format_step(first, sizeof first, r->first_nonfinite);
            ars_exp_format_sci(grad, sizeof grad, r->max_grad_norm);
            ars_exp_format_percent(clipped, sizeof clipped, r->clipped_fraction);
            ars_exp_format_percent(acc, sizeof acc, r->test_accuracy);
            if (isfinite(r->loss_end)) snprintf(loss, sizeof loss, "%.3g", r->loss_end);
            else snprintf(loss, sizeof loss, "NaN");
            ars_exp_text_printf(md, "| %s | %s | %s | %lld | %s | %s | %s | %s | %s |\n", scenario_label(sc),
                                k ? "clip_norm = 1" : "none", first, (long long)r->nonfinite_steps, grad, clipped,
                                acc, loss, r->error ? r->error_text : r->diagnosis[0] ? r->diagnosis : "healthy");
        }
    ars_exp_text_printf(md, "\n");

    ars_exp_panel panels[SCENARIOS];
    memset(panels, 0, sizeof panels);
    for (int sc = 0; sc < SCENARIOS; sc++) {
        ars_exp_panel *p = &panels[sc];
        snprintf(p->title, sizeof p->title, "%s", scenario_label(sc));
        snprintf(p->xlabel, sizeof p->xlabel, "step");
        snprintf(p->ylabel, sizeof p->ylabel, "training loss (log scale)");
        p->logy = 1;
        p->hline = NAN;
        for (int k = 0; k < 2; k++) {
            const ars_exp_run *r = runs[sc][k];
            ars_exp_series *s = &p->series[p->count++];
            snprintf(s->label, sizeof s->label, "%s", k ? "clip_norm = 1" : "no clipping");
            s->curve = &r->loss;
            s->style = 1;
            s->vline = r->first_nonfinite >= 0 ? (double)r->first_nonfinite : NAN;
            if (r->first_nonfinite >= 0)
                snprintf(s->vline_label, sizeof s->vline_label, "NaN/Inf at step %lld", (long long)r->first_nonfinite);
        }
    }
    ars_exp_figure(e, S, "exploding_loss",
                   "Training loss (log scale) without and with global-norm clipping. A dotted vertical line marks "
                   "the first step whose loss or gradient was NaN/Inf; from there every update is skipped, so the "
                   "unclipped network stays where it broke (its loss stays huge, or is NaN where the curve stops).",
                   "20-layer ReLU MLP: divergence and clipping", panels, SCENARIOS);
    ars_exp_body_claims(e, S);
}

int ars_exp_section_exploding(ars_exp *e)
{
    ars_exp_run *runs[SCENARIOS][2];
    for (int sc = 0; sc < SCENARIOS; sc++)
        for (int k = 0; k < 2; k++) {
            ars_exp_text t = {0};
            char key[64];
            config_text(e, sc, k, &t);
            snprintf(key, sizeof key, "exploding-%s-%s", sc == HIGH_LR ? "lr" : "init", k ? "clip" : "noclip");
            int rc = t.failed ? ars_error(ARS_ENOMEM, "experiment: out of memory")
                              : ars_exp_train(e, key, t.data, &runs[sc][k]);
            ars_exp_text_free(&t);
            if (rc) return rc;
        }
    if (e->rank != 0) return 0;
    judge(e, runs);
    write_body(e, runs);
    return 0;
}
