/* exp_degradation: section 7, the degradation problem of He et al. 2016
 * ("Deep residual learning for image recognition", Sec. 4.2, Figs. 1 and
 * 6) on Fashion-MNIST. Four CIFAR-style convolutional networks: plain ones
 * of 20 and 56 weight layers and the ResNet-20 and ResNet-56 with the same
 * layers (a 3x3 stem conv + BatchNorm2d + ReLU, 3 stages of n = 3 or 9
 * blocks of two 3x3 convs at w, 2w, 4w channels, stride 2 where stages 2
 * and 3 start, global average pooling, a dense layer to 10). The residual
 * ones are written with [basic_block], the plain ones as the same
 * conv2d/batchnorm2d/relu sections without the skip connections. All four
 * train with the same SGD recipe, data order and budget. Measured: the
 * training loss over the steps (its mean over the last fifth of the run
 * decides), test accuracy, and the first convolution's gradient relative
 * to the output layer's. Claims: the deeper plain network trains to a
 * higher loss than the shallower one, the deeper residual one to a lower
 * or equal loss, and (He et al.) the plain networks' difficulty is not a
 * vanishing gradient. Its budget (experiment.c) is its own: a step of a
 * 56-layer CNN costs far more than one of the other sections' MLPs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiment.h"

enum { PLAIN, RESIDUAL, KINDS };
enum { DEPTHS = 2, SMOOTH_RADIUS = 2, MIN_TAIL_RECORDS = 3 };

/* Blocks per stage for each depth: 6n + 2 weight layers. */
static const int blocks_per_stage[DEPTHS] = {3, 9};

/* The part of the run (its last fifth) over which the training loss is averaged. */
static const double TAIL_FRACTION = 0.2;
/* SGD as He et al. (momentum 0.9, weight decay 1e-4), their lr 0.1 at batch
 * 128 scaled to the batch, a short warmup, a cosine decay to 0 over the budget. */
static const double LR_AT_128 = 0.1;
/* The loss plot's top (chance is ln 10 = 2.30; a ResNet's first steps go higher). */
static const double LOSS_AXIS_TOP = 2.5;
/* One convolution layout for every run: a measured layout is the faster on
 * this machine at this moment, and the layouts round differently, which the
 * 56-layer networks amplify; fixed, two runs of the study are bit-identical. */
static const char FIXED_CONV_LAYOUT[] = "conv_layout = per_sample\n";

typedef struct net {
    int depth, residual;
    ars_exp_run *run;
    double tail_mean, tail_se;   /* training loss over the tail: mean, standard error */
    int tail_records;
    int64_t tail_from;           /* first step of the tail */
    ars_exp_curve smooth;        /* the recorded loss, centered moving average (owned) */
} net;

typedef struct study {
    net nets[KINDS][DEPTHS];
} study;

static int depth_of(int blocks) { return 6 * blocks + 2; }

static double learning_rate(const ars_exp *e) { return LR_AT_128 * e->budget.degradation_batch / 128.0; }

static int warmup_steps(const ars_exp *e) { return e->budget.steps_degradation / 25; }

static const char *kind_label(int residual) { return residual ? "ResNet" : "plain"; }

static void config_conv(ars_exp_text *t, int channels, int stride)
{
    ars_exp_text_printf(t, "[conv2d]\nchannels = %d\nkernel = 3\nstride = %d\npadding = 1\nbias = false\n"
                        "init = he_normal\ninit_mode = fan_out\n[batchnorm2d]\n", channels, stride);
}

static void config_text(const ars_exp *e, int blocks, int residual, ars_exp_text *t)
{
    const ars_exp_budget *b = &e->budget;
    char lines[256];
    snprintf(lines, sizeof lines,
             "optimizer = sgd\nlr = %g\nmomentum = 0.9\nweight_decay = 1e-4\nschedule = cosine\n"
             "warmup_steps = %d\n%s", learning_rate(e), warmup_steps(e), FIXED_CONV_LAYOUT);
    ars_exp_config_run_data(e, t, b->degradation_train_limit, b->degradation_test_limit, b->degradation_batch,
                            b->steps_degradation, b->degradation_probe_every, lines);
    const int w = b->degradation_width;
    config_conv(t, w, 1);   /* the stem */
    ars_exp_text_printf(t, "[relu]\n");
    for (int stage = 0; stage < 3; stage++)
        for (int k = 0; k < blocks; k++) {
            const int channels = w << stage, stride = stage > 0 && k == 0 ? 2 : 1;
            if (residual) {
                ars_exp_text_printf(t, "[basic_block]\nchannels = %d\nstride = %d\n", channels, stride);
            } else {   /* the same layers without [residual] / [residual_add] */
                config_conv(t, channels, stride);
                ars_exp_text_printf(t, "[relu]\n");
                config_conv(t, channels, 1);
                ars_exp_text_printf(t, "[relu]\n");
            }
        }
    ars_exp_text_printf(t, "[global_avgpool]\n[dense]\nunits = 10\n");
}

/* The tail statistics and the smoothed curve of n's recorded loss. */
static int reduce(const ars_exp *e, net *n)
{
    const ars_exp_curve *c = &n->run->loss;
    n->tail_mean = n->tail_se = NAN;
    n->tail_records = 0;
    n->tail_from = -1;
    if (c->count <= 0) return 0;
    n->smooth.x = malloc(sizeof *n->smooth.x * (size_t)c->count);
    n->smooth.y = malloc(sizeof *n->smooth.y * (size_t)c->count);
    if (!n->smooth.x || !n->smooth.y) return ars_error(ARS_ENOMEM, "experiment: out of memory");
    const double from = (1.0 - TAIL_FRACTION) * e->budget.steps_degradation;
    int first = c->count;
    while (first > 0 && (c->x[first - 1] >= from || c->count - first < MIN_TAIL_RECORDS)) first--;
    double sum = 0, squares = 0;
    for (int i = first; i < c->count; i++) sum += c->y[i];
    const int k = c->count - first;
    const double mean = sum / k;
    for (int i = first; i < c->count; i++) squares += (c->y[i] - mean) * (c->y[i] - mean);
    n->tail_records = k;
    n->tail_from = (int64_t)c->x[first];
    n->tail_mean = mean;   /* NaN when a loss in the tail is */
    n->tail_se = k > 1 ? sqrt(squares / (k - 1) / k) : NAN;
    for (int i = 0; i < c->count; i++) {
        double s = 0;
        int m = 0;
        for (int j = i - SMOOTH_RADIUS; j <= i + SMOOTH_RADIUS; j++)
            if (j >= 0 && j < c->count) {
                s += c->y[j];
                m++;
            }
        n->smooth.x[i] = c->x[i];
        n->smooth.y[i] = s / m;   /* NaN near a non-finite loss */
    }
    n->smooth.count = c->count;
    return 0;
}

/* Two standard errors of a difference of two tail means. */
static double margin(const net *a, const net *b)
{
    return 2 * sqrt(a->tail_se * a->tail_se + b->tail_se * b->tail_se);
}

/* "0.412 ± 0.013" */
static void format_tail(char *out, size_t size, const net *n)
{
    if (n->run->error) snprintf(out, size, "failed");
    else if (!isfinite(n->tail_mean)) snprintf(out, size, "NaN");
    else snprintf(out, size, "%.3f ± %.3f", n->tail_mean, n->tail_se);
}

static void judge(ars_exp *e, const study *s)
{
    const int S = ARS_EXP_DEGRADATION;
    const net *p20 = &s->nets[PLAIN][0], *p56 = &s->nets[PLAIN][1];
    const net *r20 = &s->nets[RESIDUAL][0], *r56 = &s->nets[RESIDUAL][1];
    char a[48], b[48], c[48], d[48], x[32], y[32];
    int valid = 1;   /* every tail mean and standard error finite */
    for (int k = 0; k < KINDS; k++)
        for (int i = 0; i < DEPTHS; i++)
            valid &= isfinite(s->nets[k][i].tail_mean) && isfinite(s->nets[k][i].tail_se);
    const int64_t tail_steps = e->budget.steps_degradation - p20->tail_from;

    /* 1. degradation of the plain networks */
    const double plain_gap = p56->tail_mean - p20->tail_mean, plain_margin = margin(p56, p20);
    ars_exp_verdict v = !valid ? ARS_EXP_INCONCLUSIVE
                        : plain_gap > plain_margin ? ARS_EXP_CONFIRMED
                        : plain_gap > 0 ? ARS_EXP_QUALIFIED : ARS_EXP_NOT_CONFIRMED;
    char claim[256];
    snprintf(claim, sizeof claim, "He et al. 2016: a deeper plain network has a higher training error than a "
             "shallower one (%d against %d layers), and not from overfitting: the degradation problem.",
             p56->depth, p20->depth);
    ars_exp_claim *cl = ars_exp_claim_add(e, S, v, claim);
    format_tail(a, sizeof a, p20);
    format_tail(b, sizeof b, p56);
    ars_exp_format_percent(x, sizeof x, p20->run->test_accuracy);
    ars_exp_format_percent(y, sizeof y, p56->run->test_accuracy);
    snprintf(cl->measured, sizeof cl->measured,
             "training loss over the last %lld of %d steps (mean ± s.e.): plain-%d %s, plain-%d %s; test "
             "accuracy %s, %s.", (long long)tail_steps, e->budget.steps_degradation, p20->depth, a, p56->depth, b,
             x, y);
    if (v == ARS_EXP_QUALIFIED)
        snprintf(cl->note, sizeof cl->note, "the %d-layer plain network's loss is higher by %.3f, within two "
                 "standard errors (%.3f) of the shallower one's", p56->depth, plain_gap, plain_margin);
    else if (v == ARS_EXP_NOT_CONFIRMED)
        snprintf(cl->note, sizeof cl->note, "the %d-layer plain network trains to a loss no higher than the "
                 "%d-layer one's in this budget", p56->depth, p20->depth);
    else if (v == ARS_EXP_CONFIRMED && !ars_exp_trains(p56->run) && p56->tail_mean > 0.9 * log(10.0))
        snprintf(cl->note, sizeof cl->note, "the %d-layer plain network does not train at all here (loss %.3f, "
                 "chance ln 10 = 2.303)", p56->depth, p56->tail_mean);
    else if (v == ARS_EXP_CONFIRMED && !ars_exp_trains(p56->run))
        snprintf(cl->note, sizeof cl->note, "the %d-layer plain network learns, but slowly: its test accuracy (%s) "
                 "stays below the %.0f%% from which this document says a network trains", p56->depth, y,
                 100 * ARS_EXP_TRAINS_ACCURACY);

    /* 2. the residual networks do not degrade */
    const double res_gap = r56->tail_mean - r20->tail_mean, res_margin = margin(r56, r20);
    v = !valid ? ARS_EXP_INCONCLUSIVE
        : res_gap <= res_margin ? ARS_EXP_CONFIRMED
        : res_gap < plain_gap ? ARS_EXP_QUALIFIED : ARS_EXP_NOT_CONFIRMED;
    snprintf(claim, sizeof claim, "He et al. 2016: with residual connections the deeper network has a lower or "
             "equal training error (ResNet-%d against ResNet-%d): the degradation is gone.", r56->depth,
             r20->depth);
    cl = ars_exp_claim_add(e, S, v, claim);
    format_tail(c, sizeof c, r20);
    format_tail(d, sizeof d, r56);
    ars_exp_format_percent(x, sizeof x, r20->run->test_accuracy);
    ars_exp_format_percent(y, sizeof y, r56->run->test_accuracy);
    snprintf(cl->measured, sizeof cl->measured,
             "training loss over the last %lld steps: ResNet-%d %s, ResNet-%d %s (plain-%d %s); test accuracy %s, "
             "%s.", (long long)tail_steps, r20->depth, c, r56->depth, d, p56->depth, b, x, y);
    if (v == ARS_EXP_CONFIRMED && res_gap > 0)
        snprintf(cl->note, sizeof cl->note, "equal within two standard errors (ResNet-%d higher by %.3f, margin "
                 "%.3f), not lower", r56->depth, res_gap, res_margin);
    else if (v == ARS_EXP_QUALIFIED)
        snprintf(cl->note, sizeof cl->note, "ResNet-%d's loss is higher than ResNet-%d's by %.3f (beyond two "
                 "standard errors, %.3f), less than the plain networks' gap (%.3f): residual connections shrink "
                 "the degradation but do not remove it in this budget", r56->depth, r20->depth, res_gap,
                 res_margin, plain_gap);
    else if (v == ARS_EXP_NOT_CONFIRMED)
        snprintf(cl->note, sizeof cl->note, "ResNet-%d's loss is higher than ResNet-%d's by %.3f, no less than "
                 "the plain networks' gap (%.3f)", r56->depth, r20->depth, res_gap, plain_gap);

    /* 3. not a vanishing gradient (He et al., Sec. 4.1) */
    int measured = 1;
    for (int k = 0; k < KINDS; k++)
        for (int i = 0; i < DEPTHS; i++) {
            const double r = s->nets[k][i].run->ratio_start;
            measured &= isfinite(r) && r > 0;
        }
    const double start = p56->run->ratio_start, end = p56->run->ratio_end;
    v = !measured ? ARS_EXP_INCONCLUSIVE
        : start >= 1e-3 && end >= 1e-3 ? ARS_EXP_CONFIRMED
        : start >= 1e-3 || end >= 1e-3 ? ARS_EXP_QUALIFIED : ARS_EXP_NOT_CONFIRMED;
    cl = ars_exp_claim_add(e, S, v, "He et al. 2016: the plain networks' optimization difficulty is not a "
                           "vanishing gradient: with BatchNorm the gradient does not vanish on its way back to the "
                           "first layer.");
    ars_exp_format_sci(a, sizeof a, p20->run->ratio_start);
    ars_exp_format_sci(b, sizeof b, start);
    ars_exp_format_sci(c, sizeof c, end);
    ars_exp_format_sci(d, sizeof d, r56->run->ratio_start);
    ars_exp_format_sci(x, sizeof x, p20->run->ratio_end);
    snprintf(cl->measured, sizeof cl->measured,
             "first convolution's gradient / output layer's (below 1e-3: vanishing): plain-%d %s at step 0, %s "
             "after training; plain-%d %s at step 0, %s after training; ResNet-%d %s at step 0.", p20->depth, a, x,
             p56->depth, b, c, r56->depth, d);
    if (v == ARS_EXP_CONFIRMED) {
        if (start > 1e2)
            snprintf(cl->note, sizeof cl->note, "at step 0 the plain-%d network's gradient even grows toward the "
                     "input (%s times the output layer's), as BatchNorm makes it in section 3 (Yang et al. 2019)",
                     p56->depth, b);
        if (end < 1e-2) {
            size_t used = strlen(cl->note);
            snprintf(cl->note + used, sizeof cl->note - used, "%safter training it is weak (%s, against %s in "
                     "plain-%d) but above the 1e-3 of a vanishing gradient", used ? "; " : "", c, x, p20->depth);
        }
    } else if (v == ARS_EXP_QUALIFIED)
        snprintf(cl->note, sizeof cl->note, "it vanishes (below 1e-3) at the %s of training only",
                 start < 1e-3 ? "start" : "end");
    else if (v == ARS_EXP_NOT_CONFIRMED)
        snprintf(cl->note, sizeof cl->note, "the %d-layer plain network's first-layer gradient is below 1e-3 of "
                 "the output layer's: it vanishes here", p56->depth);
    ars_exp_claim_check(cl, measured, "the first convolution's gradient ratio at step 0 is measured (finite, > 0) "
                        "in all four networks");
}

static void write_body(ars_exp *e, study *s)
{
    const int S = ARS_EXP_DEGRADATION;
    const ars_exp_budget *b = &e->budget;
    ars_exp_text *md = &e->body[S];
    const int w = b->degradation_width;
    const int epochs_x10 = (int)(10.0 * b->steps_degradation * b->degradation_batch / b->degradation_train_limit);
    ars_exp_text_printf(md, "## 7. Degradation: plain against residual CNNs, %d and %d layers\n\n",
                        depth_of(blocks_per_stage[0]), depth_of(blocks_per_stage[1]));
    ars_exp_text_printf(md,
                        "**Setup.** He et al. 2016's CIFAR networks on Fashion-MNIST: a 3×3 convolution of %d "
                        "channels + BatchNorm2d + ReLU, then 3 stages of n blocks, each conv3×3 → BatchNorm2d → "
                        "ReLU → conv3×3 → BatchNorm2d → ReLU, at %d, %d and %d channels (28×28, 14×14, 7×7: "
                        "stride 2 in the first convolution of stages 2 and 3), global average pooling, a dense "
                        "layer to 10: 6n + 2 weight layers, %d for n = %d and %d for n = %d. *ResNet*: each block "
                        "a `[basic_block]` (the shortcut added before the last ReLU: the identity, or a 1×1 "
                        "convolution of stride 2 + BatchNorm2d where a stage starts: He et al.'s option B, where "
                        "their CIFAR networks use option A, a zero-padded identity; the two projections are not "
                        "counted as layers). *Plain*: the same convolutions, BatchNorms and ReLUs written out "
                        "without the shortcut. Convolutions He-initialized (fan-out, as torchvision). All four: "
                        "SGD with momentum 0.9, weight decay 1e-4, learning rate %g (He et al.'s 0.1 at batch "
                        "128, scaled to the batch) after %d warmup step%s, cosine decay "
                        "to 0; global batch %d, %d steps on the first %d training images (%.1f epochs, the same "
                        "order for all), no augmentation; test accuracy on the first %d test images; gradient "
                        "norms recorded every %d steps.%s\n\n",
                        w, w, 2 * w, 4 * w, depth_of(blocks_per_stage[0]), blocks_per_stage[0],
                        depth_of(blocks_per_stage[1]), blocks_per_stage[1], learning_rate(e), warmup_steps(e),
                        warmup_steps(e) == 1 ? "" : "s",
                        b->degradation_batch, b->steps_degradation, b->degradation_train_limit, epochs_x10 / 10.0,
                        b->degradation_test_limit, b->degradation_probe_every,
                        w != 16 ? " **The widths are reduced for this mode** (He et al. start at 16 channels)."
                                : "");
    ars_exp_text_printf(md,
                        "*Training error* is measured as the training loss (cross-entropy of each recorded "
                        "mini-batch, before the step; arsenal does not record the training classification error "
                        "He et al. plot). The loss at the end is its mean over the records of the last %.0f%% of "
                        "the steps, ± its standard error; a network trains to a *higher* loss than another when "
                        "the difference exceeds two standard errors of the difference, *lower or equal* "
                        "otherwise. The *gradient ratio* is the first convolution's parameter-gradient norm over "
                        "the output layer's.\n\n",
                        100 * TAIL_FRACTION);
    ars_exp_text_printf(md, "| network | weight layers | training loss, step 0 | training loss, last %.0f%% "
                            "(mean ± s.e.) | test accuracy | gradient ratio, step 0 | after training | seconds "
                            "| diagnosis |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
                        100 * TAIL_FRACTION);
    for (int k = 0; k < KINDS; k++)
        for (int i = 0; i < DEPTHS; i++) {
            const net *n = &s->nets[k][i];
            const ars_exp_run *r = n->run;
            char start[32], tail[48], acc[32], r0[32], r1[32];
            if (isfinite(r->loss_start)) snprintf(start, sizeof start, "%.3f", r->loss_start);
            else snprintf(start, sizeof start, "—");
            format_tail(tail, sizeof tail, n);
            ars_exp_format_percent(acc, sizeof acc, r->test_accuracy);
            ars_exp_format_sci(r0, sizeof r0, r->ratio_start);
            ars_exp_format_sci(r1, sizeof r1, r->ratio_end);
            ars_exp_text_printf(md, "| %s-%d | %d | %s | %s | %s | %s | %s | %.0f | %s |\n", kind_label(k), n->depth,
                                n->depth, start, tail, r->error ? r->error_text : acc, r0, r1, r->seconds,
                                r->diagnosis[0] ? r->diagnosis : "healthy");
        }
    ars_exp_text_printf(md, "\n");

    ars_exp_panel panels[KINDS];
    memset(panels, 0, sizeof panels);
    for (int k = 0; k < KINDS; k++) {
        ars_exp_panel *p = &panels[k];
        snprintf(p->title, sizeof p->title, "%s networks", k == PLAIN ? "plain" : "residual (ResNet)");
        snprintf(p->xlabel, sizeof p->xlabel, "step");
        snprintf(p->ylabel, sizeof p->ylabel, "training loss");
        p->ymax = LOSS_AXIS_TOP;   /* both panels on about one scale: above it drawn at it */
        p->hline = log(10.0);
        snprintf(p->hline_label, sizeof p->hline_label, "chance: ln 10");
        for (int i = 0; i < DEPTHS; i++) {
            ars_exp_series *se = &p->series[p->count++];
            snprintf(se->label, sizeof se->label, "%d layers", s->nets[k][i].depth);
            se->curve = &s->nets[k][i].smooth;
            se->style = 1;
            se->vline = NAN;
        }
    }
    char caption[320], title[160];
    snprintf(caption, sizeof caption,
             "Training loss of the plain (left) and residual (right) networks of %d and %d layers, each point "
             "the mean of %d consecutive records (%d steps apart), values above %.1f drawn at %.1f; compare He "
             "et al. 2016, Fig. 1 and Fig. 6 (left, middle).",
             depth_of(blocks_per_stage[0]), depth_of(blocks_per_stage[1]), 2 * SMOOTH_RADIUS + 1,
             b->degradation_probe_every, LOSS_AXIS_TOP, LOSS_AXIS_TOP);
    snprintf(title, sizeof title, "Degradation on Fashion-MNIST: plain against ResNet, %d and %d layers",
             depth_of(blocks_per_stage[0]), depth_of(blocks_per_stage[1]));
    ars_exp_figure(e, S, "degradation_loss", caption, title, panels, KINDS);

    ars_exp_panel flow;
    memset(&flow, 0, sizeof flow);
    snprintf(flow.title, sizeof flow.title, "%d weight layers", s->nets[PLAIN][1].depth);
    snprintf(flow.xlabel, sizeof flow.xlabel, "weight layer (1 = the first convolution)");
    snprintf(flow.ylabel, sizeof flow.ylabel, "parameter gradient norm");
    flow.logy = 1;
    flow.hline = NAN;
    for (int k = 0; k < KINDS; k++)
        for (int when = 0; when < 2; when++) {
            const ars_exp_run *r = s->nets[k][1].run;
            ars_exp_series *se = &flow.series[flow.count++];
            snprintf(se->label, sizeof se->label, "%s, %s", kind_label(k), when == 0 ? "step 0" : "after training");
            se->curve = when == 0 ? &r->flow_start : &r->flow_end;
            se->style = when == 0 ? 1 : 2;
            se->vline = NAN;
        }
    snprintf(title, sizeof title, "Gradient flow: plain-%d against ResNet-%d", s->nets[PLAIN][1].depth,
             s->nets[RESIDUAL][1].depth);
    ars_exp_figure(e, S, "degradation_gradient_flow",
                   "Gradient norm of each convolution and of the output layer of the deeper networks, at step 0 "
                   "(solid) and at the last record (dashed), log scale.",
                   title, &flow, 1);

    const double samples = (double)b->steps_degradation * b->degradation_batch;
    ars_exp_text_printf(md,
                        "**What this reproduces, and what not.** The comparison of He et al.'s Fig. 1 and 6 "
                        "(left, middle): the same four architectures (up to the two projection shortcuts), their "
                        "BatchNorm, initialization and optimizer, judged by the training loss. Not reproduced: "
                        "their data (CIFAR-10, with augmentation), their budget (64k iterations of batch 128 with "
                        "the learning rate divided by 10 at 32k and 48k: %.0f times the %.0f samples seen here), "
                        "the training "
                        "classification error itself (the loss stands for it), several seeds, and the deeper "
                        "networks (ResNet-110, 1202). In so short a run a verdict says which network trains "
                        "faster to a lower loss, which is what degradation looks like early in He et al.'s "
                        "curves too, not where each would end.\n\n",
                        64000.0 * 128.0 / samples, samples);
    ars_exp_body_claims(e, S);
}

int ars_exp_section_degradation(ars_exp *e)
{
    study s;
    memset(&s, 0, sizeof s);
    for (int k = 0; k < KINDS; k++)
        for (int i = 0; i < DEPTHS; i++) {
            net *n = &s.nets[k][i];
            n->depth = depth_of(blocks_per_stage[i]);
            n->residual = k == RESIDUAL;
            ars_exp_text t = {0};
            char key[64];
            config_text(e, blocks_per_stage[i], n->residual, &t);
            snprintf(key, sizeof key, "degradation-%s-%d", k == RESIDUAL ? "resnet" : "plain", n->depth);
            int rc = t.failed ? ars_error(ARS_ENOMEM, "experiment: out of memory")
                              : ars_exp_train(e, key, t.data, &n->run);
            ars_exp_text_free(&t);
            if (rc) return rc;
        }
    if (e->rank != 0) return 0;
    int rc = 0;
    for (int k = 0; k < KINDS && !rc; k++)
        for (int i = 0; i < DEPTHS && !rc; i++) rc = reduce(e, &s.nets[k][i]);
    if (!rc) {
        judge(e, &s);
        write_body(e, &s);
    }
    for (int k = 0; k < KINDS; k++)
        for (int i = 0; i < DEPTHS; i++) {
            free(s.nets[k][i].smooth.x);
            free(s.nets[k][i].smooth.y);
        }
    return rc;
}
