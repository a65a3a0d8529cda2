/* test_health: the gradient-health rules (src/health.c) on histories built
 * in memory with known problems (vanishing, exploding, non-finite,
 * saturation, dead ReLUs, plateau, oscillation, a healthy run), their
 * hysteresis (one start and one end per episode), the [health] keys; then
 * `arsenal inspect` (src/inspect/) on real short runs through ars_train and
 * checkpoints: a deep sigmoid network with naive init is vanishing, a huge
 * init with a high learning rate explodes, a ReLU + He + BatchNorm residual
 * network raises no alarm; the report, JSON, plots (PNG signature, SVG) and
 * the one-line errors for files that are not checkpoints. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../src/inspect/inspect.h"
#include "arsenal/config.h"
#include "arsenal/error.h"
#include "arsenal/health.h"
#include "arsenal/history.h"
#include "arsenal/train.h"

/* ---- in-memory histories ------------------------------------------------------ */

/* dense_count dense layers, each but the last followed by `activation`
 * (NULL: none): names "000_dense", "001_sigmoid", ... */
static void make_history(ars_history *h, int dense_count, const char *activation)
{
    int L = activation ? 2 * dense_count - 1 : dense_count;
    char (*names)[40] = calloc((size_t)L, sizeof *names);
    for (int l = 0, d = 0; l < L; d++) {
        snprintf(names[l], sizeof names[l], "%03d_dense", l);
        l++;
        if (activation && d < dense_count - 1) {
            snprintf(names[l], sizeof names[l], "%03d_%s", l, activation);
            l++;
        }
    }
    ARS_ASSERT_OK(ars_history_init(h, L, (const char (*)[40])names, 0));
    free(names);
}

static int is_dense(const ars_history *h, int l) { return strstr(h->layer_names[l], "_dense") != NULL; }

/* Appends record r (step 10 r): every dense layer gets gradient norm
 * ratio[k] x output (ratio NULL: 1), weight norm 1, update ratio 1e-3. */
static double *append_record(ars_history *h, int r, double loss, double grad_norm, const double *ratio)
{
    ars_history_step step = {.step = 10 * r, .loss = loss, .lr = 0.1, .grad_norm = grad_norm, .clip_scale = 1};
    step.nonfinite = !isfinite(loss) || !isfinite(grad_norm);
    step.skipped = step.nonfinite;
    double *row;
    ARS_ASSERT_OK(ars_history_append(h, &step, &row));
    const int L = h->layer_count;
    for (int l = 0, k = 0; l < L; l++) {
        if (!is_dense(h, l)) continue;
        row[ARS_HIST_GRAD_NORM * L + l] = ratio ? ratio[k] : 1.0;
        row[ARS_HIST_WEIGHT_NORM * L + l] = 1.0;
        row[ARS_HIST_UPDATE_RATIO * L + l] = 1e-3;
        k++;
    }
    return row;
}

static void set_value(ars_history *h, double *row, ars_history_column column, int layer, double v)
{
    row[column * h->layer_count + layer] = v;
}

/* A healthy loss: decays from 2.3 toward 0.3. */
static double falling_loss(int r) { return 0.3 + 2.0 * exp(-0.08 * r); }

static int count_events(const ars_history *h, const char *fragment)
{
    int n = 0;
    for (size_t e = 0; e < h->event_count; e++) n += strstr(h->events[e], fragment) != NULL;
    return n;
}

static void print_events(const ars_history *h)
{
    for (size_t e = 0; e < h->event_count; e++) printf("  event: %s\n", h->events[e]);
}

static void monitor_for(ars_health_monitor *m, const ars_history *h, const ars_health_config *config,
                        const char *optimizer)
{
    ARS_ASSERT_OK(ars_health_init(m, config, h->layer_count, (const char (*)[40])h->layer_names, NULL, optimizer));
}

/* ---- the rules ------------------------------------------------------------------- */

/* 6 sigmoid layers: dense k receives 10^-(5-k) of the output layer's
 * gradient; layers 000-006 are below 1e-3 (010 is exactly 1e-3: not). */
static void test_vanishing_named_with_ranges(void **state)
{
    (void)state;
    ars_history h;
    make_history(&h, 6, "sigmoid");
    ars_health_monitor m;
    monitor_for(&m, &h, NULL, "sgd");
    double ratio[6] = {1e-5, 1e-4, 1e-3 * 0.5, 1e-3, 1e-1, 1};
    for (int r = 0; r < 30; r++) {
        append_record(&h, r, falling_loss(r), 1.0, ratio);
        ARS_ASSERT_OK(ars_health_update(&m, &h, NULL));
    }
    print_events(&h);
    assert_int_equal(h.event_count, 1);
    assert_non_null(strstr(h.events[0], "step 20: vanishing gradient starts: layers 000-004 (dense) receive"));
    assert_non_null(strstr(h.events[0], "1.0e-05 to 5.0e-04 of the output layer's gradient norm"));
    assert_non_null(strstr(h.events[0], "try ReLU with He initialization instead of sigmoid/tanh"));
    assert_non_null(strstr(h.events[0], "Adam"));   /* the run uses SGD */
    const ars_health_summary *s = &m.summary[ARS_HEALTH_VANISHING];
    assert_int_equal(s->episodes, 1);
    assert_true(s->active);
    assert_int_equal(s->worst_layer, 0);
    assert_true(fabs(s->worst - 1e-5) < 1e-12);
    const unsigned char *ever = ars_health_ever(&m, ARS_HEALTH_VANISHING);
    assert_true(ever[0] && ever[2] && ever[4] && !ever[6] && !ever[8] && !ever[10]);
    char text[1024];
    ars_health_describe(&m, ARS_HEALTH_VANISHING, text, sizeof text);
    printf("describe: %s\n", text);
    assert_non_null(strstr(text, "layers 000-004 (dense) received gradients down to 1.0e-05"));
    assert_non_null(strstr(text, "still at the end"));
    for (int p = 0; p < ARS_HEALTH_PROBLEMS; p++)
        if (p != ARS_HEALTH_VANISHING) assert_int_equal(m.summary[p].episodes, 0);
    ars_health_free(&m);
    ars_history_free(&h);
}

/* Bad records 10-19 (but 13), good 20-39 (but 25): with patience 3 and
 * recovery 5 that is one start (record 12) and one end (record 24). */
static void test_hysteresis_one_start_one_end(void **state)
{
    (void)state;
    ars_history h;
    make_history(&h, 3, "tanh");
    ars_health_monitor m;
    monitor_for(&m, &h, NULL, "adam");
    for (int r = 0; r < 40; r++) {
        int bad = (r >= 10 && r < 20 && r != 13) || r == 25;
        double ratio[3] = {bad ? 1e-6 : 0.5, 0.8, 1};
        append_record(&h, r, falling_loss(r), 1.0, ratio);
        ARS_ASSERT_OK(ars_health_update(&m, &h, NULL));
    }
    print_events(&h);
    assert_int_equal(h.event_count, 2);
    assert_non_null(strstr(h.events[0], "step 120: vanishing gradient starts: layer 000 (dense) receive 1.0e-06"));
    assert_string_equal(h.events[1], "step 240: vanishing gradient ends");
    assert_int_equal(m.summary[ARS_HEALTH_VANISHING].episodes, 1);
    assert_false(m.summary[ARS_HEALTH_VANISHING].active);
    assert_int_equal(m.summary[ARS_HEALTH_VANISHING].last_end_step, 240);
    ars_health_free(&m);
    ars_history_free(&h);
}

/* Updates that stall: the update/weight ratio of one layer stays below the
 * floor while the output layer's is normal -> vanishing after
 * vanish_update_records records even though its gradient ratio is fine. */
static void test_vanishing_by_update_ratio(void **state)
{
    (void)state;
    ars_history h;
    make_history(&h, 3, "relu");
    ars_health_config config;
    ars_health_config_defaults(&config);
    config.vanish_update_records = 8;
    ars_health_monitor m;
    monitor_for(&m, &h, &config, "adam");
    for (int r = 0; r < 12; r++) {
        double *row = append_record(&h, r, falling_loss(r), 1.0, NULL);
        set_value(&h, row, ARS_HIST_UPDATE_RATIO, 0, 1e-9);
        ARS_ASSERT_OK(ars_health_update(&m, &h, NULL));
    }
    print_events(&h);
    assert_int_equal(h.event_count, 1);
    assert_non_null(strstr(h.events[0], "step 70: vanishing gradient starts: layer 000 (dense)"));
    assert_non_null(strstr(h.events[0], "update/weight ratio below 1e-07 for 8 records"));
    ars_health_free(&m);
    ars_history_free(&h);
}

/* A global-norm spike, then non-finite records, then recovery. */
static void test_exploding_then_nonfinite(void **state)
{
    (void)state;
    ars_history h;
    make_history(&h, 4, "relu");
    ars_health_monitor m;
    monitor_for(&m, &h, NULL, "sgd");
    for (int r = 0; r < 40; r++) {
        double g = 1.0 + 0.1 * sin(r), loss = falling_loss(r);
        if (r == 20) g = 500;
        if (r == 21 || r == 22) g = loss = NAN;
        append_record(&h, r, loss, g, NULL);
        ARS_ASSERT_OK(ars_health_update(&m, &h, NULL));
    }
    print_events(&h);
    assert_int_equal(count_events(&h, "exploding gradient starts"), 1);
    assert_int_equal(count_events(&h, "exploding gradient ends"), 1);
    assert_int_equal(count_events(&h, "non-finite loss or gradient starts"), 1);
    assert_int_equal(count_events(&h, "non-finite loss or gradient ends"), 1);
    assert_int_equal(count_events(&h, "step 200: exploding gradient starts: global gradient norm 500, "), 1);
    assert_int_equal(count_events(&h, "x its running median"), 1);
    assert_int_equal(count_events(&h, "step 210: non-finite loss or gradient starts: loss NaN, global gradient "
                                      "norm NaN; the update was skipped"), 1);
    assert_int_equal(count_events(&h, "gradient clipping ([run] clip_norm = 1)"), 2);
    assert_int_equal(count_events(&h, "step 270: non-finite loss or gradient ends"), 1);
    assert_int_equal(m.summary[ARS_HEALTH_NONFINITE].worst, 2);   /* records */
    assert_int_equal(m.summary[ARS_HEALTH_VANISHING].episodes, 0);
    ars_health_free(&m);
    ars_history_free(&h);
}

/* Gradients that grow toward the input (the deep-product explosion) and a
 * norm that doubles record over record. */
static void test_exploding_through_depth_and_growth(void **state)
{
    (void)state;
    ars_history h;
    make_history(&h, 5, "tanh");
    ars_health_monitor m;
    monitor_for(&m, &h, NULL, "adam");
    for (int r = 0; r < 12; r++) {
        double ratio[5] = {5e4, 2e3, 10, 2, 1};
        append_record(&h, r, falling_loss(r), pow(2.5, r), ratio);
        ARS_ASSERT_OK(ars_health_update(&m, &h, NULL));
    }
    print_events(&h);
    assert_int_equal(h.event_count, 1);
    assert_non_null(strstr(h.events[0], "exploding gradient starts"));
    const unsigned char *ever = ars_health_ever(&m, ARS_HEALTH_EXPLODING);
    assert_true(ever[0] && ever[2] && !ever[4] && !ever[6] && !ever[8]);
    assert_true(ever[h.layer_count]);   /* the whole network: the growth rule */
    char text[1024];
    ars_health_describe(&m, ARS_HEALTH_EXPLODING, text, sizeof text);
    printf("describe: %s\n", text);
    assert_non_null(strstr(text, "layers 000-002 (dense) received up to 5.0e+04 times the output layer's"));
    ars_health_free(&m);
    ars_history_free(&h);
}

static void test_saturation_and_dead_units(void **state)
{
    (void)state;
    ars_history sig, relu;
    make_history(&sig, 4, "sigmoid");
    make_history(&relu, 4, "relu");
    ars_health_monitor ms, mr;
    monitor_for(&ms, &sig, NULL, "adam");
    monitor_for(&mr, &relu, NULL, "adam");
    for (int r = 0; r < 10; r++) {
        double *row = append_record(&sig, r, falling_loss(r), 1.0, NULL);
        set_value(&sig, row, ARS_HIST_ACT_SATURATED, 1, 0.2);
        set_value(&sig, row, ARS_HIST_ACT_SATURATED, 3, 0.93);
        set_value(&sig, row, ARS_HIST_ACT_SATURATED, 5, 0.7);
        ARS_ASSERT_OK(ars_health_update(&ms, &sig, NULL));
        row = append_record(&relu, r, falling_loss(r), 1.0, NULL);
        set_value(&relu, row, ARS_HIST_ACT_DEAD, 1, 0.8);
        set_value(&relu, row, ARS_HIST_ACT_DEAD, 3, 0.1);
        ARS_ASSERT_OK(ars_health_update(&mr, &relu, NULL));
    }
    print_events(&sig);
    print_events(&relu);
    assert_int_equal(sig.event_count, 1);
    assert_non_null(strstr(sig.events[0], "sigmoid/tanh saturation starts: layers 003-005 (sigmoid): 70% to 93% of "
                                          "outputs saturated"));
    assert_non_null(strstr(sig.events[0], "ReLU with He initialization"));
    assert_int_equal(relu.event_count, 1);
    assert_non_null(strstr(relu.events[0], "dead ReLU units starts: layer 001 (relu): 80% of units dead"));
    assert_non_null(strstr(relu.events[0], "leaky_relu"));
    ars_health_free(&ms);
    ars_health_free(&mr);
    ars_history_free(&sig);
    ars_history_free(&relu);
}

/* A loss stuck near its first value is a plateau; one that converged and
 * then flattened is not. */
static void test_plateau_only_while_high(void **state)
{
    (void)state;
    ars_history stuck, converged;
    make_history(&stuck, 3, "relu");
    make_history(&converged, 3, "relu");
    ars_health_monitor a, b;
    monitor_for(&a, &stuck, NULL, "sgd");
    monitor_for(&b, &converged, NULL, "sgd");
    for (int r = 0; r < 80; r++) {
        append_record(&stuck, r, 2.30 + 0.01 * sin(r), 1.0, NULL);
        ARS_ASSERT_OK(ars_health_update(&a, &stuck, NULL));
        append_record(&converged, r, r < 20 ? 2.3 - 0.1 * r : 0.3 + 0.01 * sin(r), 1.0, NULL);   /* 13% of it */
        ARS_ASSERT_OK(ars_health_update(&b, &converged, NULL));
    }
    print_events(&stuck);
    assert_int_equal(stuck.event_count, 1);
    assert_non_null(strstr(stuck.events[0], "step 410: loss plateau starts: the loss"));
    assert_non_null(strstr(stuck.events[0], "Adam"));
    assert_int_equal(converged.event_count, 0);
    ars_health_free(&a);
    ars_health_free(&b);
    ars_history_free(&stuck);
    ars_history_free(&converged);
}

static void test_oscillation(void **state)
{
    (void)state;
    ars_history h;
    make_history(&h, 3, "relu");
    ars_health_monitor m;
    monitor_for(&m, &h, NULL, "sgd");
    for (int r = 0; r < 30; r++) {
        double loss = r < 10 ? falling_loss(r) : r % 2 ? 6.0 : 1.0;   /* swings of 5 > 0.5 x 2.3 */
        append_record(&h, r, loss, 1.0, NULL);
        ARS_ASSERT_OK(ars_health_update(&m, &h, NULL));
    }
    print_events(&h);
    assert_int_equal(count_events(&h, "loss oscillation starts"), 1);
    assert_int_equal(count_events(&h, "loss oscillation ends"), 0);
    assert_int_equal(count_events(&h, "step 150: loss oscillation starts"), 1);
    assert_int_equal(count_events(&h, "a lower learning rate"), 1);
    ars_health_free(&m);
    ars_history_free(&h);
}

/* Ratios within 0.3-2, noise in the loss and norm: no event at all. */
static void test_healthy_run_no_alarm(void **state)
{
    (void)state;
    ars_history h;
    make_history(&h, 8, "relu");
    ars_health_monitor m;
    monitor_for(&m, &h, NULL, "adam");
    for (int r = 0; r < 200; r++) {
        double ratio[8];
        for (int k = 0; k < 8; k++) ratio[k] = 0.3 + 0.2 * k + 0.05 * sin(r + k);
        ratio[7] = 1;
        double *row = append_record(&h, r, falling_loss(r) * (1 + 0.1 * sin(3.0 * r)), 2.0 + 0.8 * sin(1.7 * r),
                                    ratio);
        for (int l = 1; l < h.layer_count; l += 2) set_value(&h, row, ARS_HIST_ACT_DEAD, l, 0.05);
        ARS_ASSERT_OK(ars_health_update(&m, &h, NULL));
    }
    print_events(&h);
    assert_int_equal(h.event_count, 0);
    ars_health_free(&m);
    ars_history_free(&h);
}

/* A resumed run: the monitor created after the history was read back sees
 * the old records silently (their events are already in the file), then
 * reports only what changes. */
static void test_resume_catches_up_silently(void **state)
{
    (void)state;
    ars_history h;
    make_history(&h, 3, "sigmoid");
    ars_health_monitor first;
    monitor_for(&first, &h, NULL, "sgd");
    double bad[3] = {1e-7, 1e-5, 1};
    for (int r = 0; r < 20; r++) {
        append_record(&h, r, falling_loss(r), 1.0, bad);
        ARS_ASSERT_OK(ars_health_update(&first, &h, NULL));
    }
    ars_health_free(&first);
    assert_int_equal(h.event_count, 1);
    /* "resume": a new monitor, one more bad record, then healthy ones */
    ars_health_monitor resumed;
    monitor_for(&resumed, &h, NULL, "sgd");
    append_record(&h, 20, falling_loss(20), 1.0, bad);
    ARS_ASSERT_OK(ars_health_update(&resumed, &h, NULL));
    assert_int_equal(h.event_count, 1);
    double good[3] = {0.5, 0.7, 1};
    for (int r = 21; r < 30; r++) {
        append_record(&h, r, falling_loss(r), 1.0, good);
        ARS_ASSERT_OK(ars_health_update(&resumed, &h, NULL));
    }
    print_events(&h);
    assert_int_equal(h.event_count, 2);
    assert_string_equal(h.events[1], "step 250: vanishing gradient ends");
    ars_health_free(&resumed);
    ars_history_free(&h);
}

/* The monitor prints each start and end once on its log. */
static void test_log_lines(void **state)
{
    (void)state;
    ars_history h;
    make_history(&h, 3, "sigmoid");
    ars_health_monitor m;
    monitor_for(&m, &h, NULL, "sgd");
    char *text = NULL;
    size_t size = 0;
    FILE *log = open_memstream(&text, &size);
    double bad[3] = {1e-7, 1e-5, 1};
    for (int r = 0; r < 10; r++) {
        append_record(&h, r, falling_loss(r), 1.0, bad);
        ARS_ASSERT_OK(ars_health_update(&m, &h, log));
    }
    fclose(log);
    printf("%s", text);
    assert_non_null(strstr(text, "arsenal: health: step 20: vanishing gradient starts: layers 000-002 (dense)"));
    assert_null(strstr(strstr(text, "starts") + 1, "starts"));   /* once */
    free(text);
    ars_health_free(&m);
    ars_history_free(&h);
}

/* ---- configuration and formatting --------------------------------------------------- */

static void test_config_keys(void **state)
{
    (void)state;
    ars_health_config c;
    ARS_ASSERT_OK(ars_health_config_load(NULL, NULL, &c));
    assert_int_equal(c.patience, 3);
    assert_true(c.vanish_ratio == 1e-3 && c.explode_ratio == 1e3 && c.saturation_max == 0.5);
    ars_config config;
    ARS_ASSERT_OK(ars_config_load_string(&config,
                                         "[health]\npatience = 5\nvanish_ratio = 1e-4\nenabled = false\n"
                                         "plateau_window = 0\ndead_max = 0.9\n",
                                         "h.cfg"));
    ARS_ASSERT_OK(ars_config_expand(&config));
    ARS_ASSERT_OK(ars_health_config_load(&config, ars_config_find(&config, "health"), &c));
    assert_int_equal(c.patience, 5);
    assert_true(c.vanish_ratio == 1e-4 && c.dead_max == 0.9);
    assert_false(c.enabled);
    assert_int_equal(c.plateau_window, 0);
    assert_int_equal(c.recovery, 5);   /* default kept */
    ars_config_free(&config);
    ARS_ASSERT_OK(ars_config_load_string(&config, "[health]\npatience = 0\n", "h.cfg"));
    ARS_ASSERT_OK(ars_config_expand(&config));
    int rc = ars_health_config_load(&config, ars_config_find(&config, "health"), &c);
    assert_int_equal(rc, ARS_EINVAL);
    printf("error: %s\n", ars_error_message());
    assert_non_null(strstr(ars_error_message(), "patience"));
    ars_config_free(&config);
}

static void test_layer_ranges(void **state)
{
    (void)state;
    char names[12][40];
    for (int l = 0; l < 12; l++) snprintf(names[l], sizeof names[l], "%03d_%s", l, l % 2 ? "relu" : "dense");
    unsigned char flags[12] = {1, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0};
    unsigned char dense[12] = {1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0};
    char out[256];
    ars_health_format_layers((const char (*)[40])names, 12, flags, dense, out, sizeof out);
    assert_string_equal(out, "layers 000-004, 008");
    unsigned char one[12] = {0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0};
    ars_health_format_layers((const char (*)[40])names, 12, one, dense, out, sizeof out);
    assert_string_equal(out, "layer 006");
    unsigned char none[12] = {0};
    ars_health_format_layers((const char (*)[40])names, 12, none, dense, out, sizeof out);
    assert_string_equal(out, "");
}

/* ---- inspect on in-memory histories -------------------------------------------------- */

/* Takes h over into an inspect run with made-up run facts. */
static void inspect_memory(ars_inspect_run *run, ars_history *h, const char *path, const char *optimizer)
{
    ars_ckpt_info info;
    memset(&info, 0, sizeof info);
    info.format_version = 1;
    info.step = h->count ? h->steps[h->count - 1].step + 1 : 0;
    info.steps_per_epoch = 100;
    info.world_size = 2;
    info.global_batch = 128;
    info.last_loss = h->count ? h->steps[h->count - 1].loss : NAN;
    info.test_loss = NAN;
    info.test_accuracy = NAN;
    snprintf(info.optimizer, sizeof info.optimizer, "%s", optimizer);
    info.lr = 0.1;
    info.layer_count = h->layer_count;
    info.layer_names = calloc((size_t)h->layer_count, sizeof *info.layer_names);
    info.layer_kinds = calloc((size_t)h->layer_count, sizeof *info.layer_kinds);
    for (int l = 0; l < h->layer_count; l++) {
        memcpy(info.layer_names[l], h->layer_names[l], sizeof info.layer_names[l]);
        snprintf(info.layer_kinds[l], sizeof info.layer_kinds[l], "%s", strchr(h->layer_names[l], '_') + 1);
    }
    ARS_ASSERT_OK(ars_inspect_from(run, path, &info, h));
}

static char *capture(void (*print)(FILE *, const void *), const void *what)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    print(out, what);
    fclose(out);
    return text;
}

static void print_run(FILE *out, const void *run) { ars_inspect_print(out, run); }

static void print_json(FILE *out, const void *run)
{
    const ars_inspect_run *runs[1] = {run};
    ars_inspect_json(out, runs, 1);
}

static void test_report_and_json(void **state)
{
    (void)state;
    ars_history h;
    make_history(&h, 6, "sigmoid");
    double ratio[6] = {1e-9, 1e-7, 1e-5, 1e-3 * 0.5, 1e-1, 1};
    for (int r = 0; r < 50; r++) {
        double *row = append_record(&h, r, 2.3, 0.5, ratio);
        set_value(&h, row, ARS_HIST_ACT_SATURATED, 3, 0.93);
    }
    ars_history_add_event(&h, "step 20: vanishing gradient starts: (recorded during training)");
    ars_inspect_run run;
    inspect_memory(&run, &h, "runs/sig/latest.h5", "sgd");
    assert_string_equal(run.label, "sig/latest.h5");
    assert_int_equal(run.layer_count, 6);
    assert_true(fabs(ars_inspect_first_to_output(&run) - 1e-9) < 1e-15);
    char *text = capture(print_run, &run);
    printf("%s", text);
    assert_non_null(strstr(text, "model       11 layers: 6 dense, 5 sigmoid"));
    assert_non_null(strstr(text, "000_dense"));
    assert_non_null(strstr(text, "010_dense (out)"));
    assert_non_null(strstr(text, "sigmoid 93% saturated"));
    assert_non_null(strstr(text, "* vanishing gradient: layers 000-006 (dense) received gradients down to 1.0e-09"));
    assert_non_null(strstr(text, "* sigmoid/tanh saturation: up to 93% of 003_sigmoid's outputs were saturated"));
    assert_non_null(strstr(text, "* loss plateau"));
    assert_non_null(strstr(text, "try ReLU with He initialization instead of sigmoid/tanh"));
    assert_non_null(strstr(text, "events recorded during training (1)"));
    free(text);
    text = capture(print_json, &run);
    assert_non_null(strstr(text, "\"problem\": \"vanishing\""));
    assert_non_null(strstr(text, "\"problem\": \"saturation\""));
    assert_non_null(strstr(text, "\"healthy\": false"));
    assert_non_null(strstr(text, "\"test_loss\": null"));   /* NaN -> null */
    assert_null(strstr(text, "nan"));
    int depth = 0;
    for (const char *p = text; *p; p++) depth += (*p == '{' || *p == '[') - (*p == '}' || *p == ']');
    assert_int_equal(depth, 0);
    free(text);
    ars_inspect_free(&run);
}

/* ---- plots --------------------------------------------------------------------------- */

static void expect_png(const char *dir, const char *name)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/%s.png", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s was not written (is plplot-driver-cairo installed?)", path);
    unsigned char head[8] = {0};
    size_t n = fread(head, 1, 8, f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    static const unsigned char signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    assert_int_equal(n, 8);
    assert_memory_equal(head, signature, 8);
    assert_true(size > 2000);
}

static void expect_svg(const char *dir, const char *name)
{
    char path[1100], text[512] = "";
    snprintf(path, sizeof path, "%s/%s.svg", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s was not written", path);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    text[n] = '\0';
    assert_non_null(strstr(text, "<svg"));
    assert_true(size > 2000);
}

static void expect_plots(const char *dir, const char *const *names, int count)
{
    for (int i = 0; i < count; i++) {
        expect_png(dir, names[i]);
        expect_svg(dir, names[i]);
    }
}

/* ---- real runs through ars_train and checkpoints -------------------------------------- */

/* Trains text into dir/ (checkpoints) and inspects dir/latest.h5. */
static void train_and_inspect(const char *text, const char *dir, ars_inspect_run *run)
{
    ars_config config;
    ARS_ASSERT_OK(ars_config_load_string(&config, text, "test.cfg"));
    ARS_ASSERT_OK(ars_config_expand(&config));
    ars_run_config rc;
    ars_layer_spec *specs = NULL;
    int count = 0;
    ARS_ASSERT_OK(ars_run_config_load(&config, &rc, &specs, &count));
    ars_train_options options = {.quiet = 1, .ckpt_dir = dir};
    ars_train_result result;
    ARS_ASSERT_OK(ars_train(&rc, specs, count, NULL, &options, &result));
    free(specs);
    ars_config_free(&config);
    char path[1100];
    snprintf(path, sizeof path, "%s/latest.h5", dir);
    ARS_ASSERT_OK(ars_inspect_load(run, path));
    ars_inspect_print(stdout, run);
}

static int has_problem(const ars_inspect_run *run, ars_health_problem p) { return run->health.summary[p].episodes > 0; }

static const char deep_sigmoid[] =
    "[run]\ndata = spirals\ntrain_samples = 1200\ntest_samples = 300\nmax_steps = 80\nbatch = 32\nseed = 5\n"
    "optimizer = sgd\nlr = 0.1\nprobe_every = 4\nhistogram_every = 20\n"
    "[repeat]\ncount = 12\n[dense]\nunits = 32\ninit = normal\ninit_std = 0.01\nactivation = sigmoid\n[end]\n"
    "[dense]\nunits = 3\ninit = normal\ninit_std = 0.01\n";

static const char relu_bn_residual[] =
    "[run]\ndata = spirals\ntrain_samples = 1200\ntest_samples = 300\nmax_steps = 200\nbatch = 32\nseed = 5\n"
    "optimizer = adam\nlr = 1e-2\nclip_norm = 1\nprobe_every = 4\nhistogram_every = 40\n"
    "[dense]\nunits = 32\ninit = he_normal\n"
    "[repeat]\ncount = 6\n[residual]\n[batchnorm]\n[relu]\n[dense]\nunits = 32\ninit = he_normal\n[end]\n[end]\n"
    "[batchnorm]\n[relu]\n[dense]\nunits = 3\n";

static const char huge_init[] =
    "[run]\ndata = spirals\ntrain_samples = 1200\ntest_samples = 300\nmax_steps = 60\nbatch = 32\nseed = 5\n"
    "optimizer = sgd\nlr = 0.5\nprobe_every = 1\n"
    "[repeat]\ncount = 6\n[dense]\nunits = 48\ninit = normal\ninit_std = 1.0\nactivation = relu\n[end]\n"
    "[dense]\nunits = 3\ninit = normal\ninit_std = 1.0\n";

static void test_real_runs(void **state)
{
    (void)state;
    char base[512], dir[3][600], plots[600];
    ars_test_tempdir(base, sizeof base, "health");
    const char *tags[3] = {"sigmoid", "relu-bn", "huge"};
    for (int i = 0; i < 3; i++) snprintf(dir[i], sizeof dir[i], "%s/%s", base, tags[i]);
    ars_inspect_run sig, good, boom;

    train_and_inspect(deep_sigmoid, dir[0], &sig);
    assert_true(has_problem(&sig, ARS_HEALTH_VANISHING));
    assert_true(ars_inspect_first_to_output(&sig) < 1e-3);
    assert_false(has_problem(&sig, ARS_HEALTH_EXPLODING));
    assert_false(has_problem(&sig, ARS_HEALTH_NONFINITE));

    train_and_inspect(relu_bn_residual, dir[1], &good);
    for (int p = 0; p < ARS_HEALTH_PROBLEMS; p++) {
        if (has_problem(&good, (ars_health_problem)p))
            fail_msg("false alarm on the ReLU + He + BatchNorm residual network: %s",
                     ars_health_problem_name((ars_health_problem)p));
    }
    assert_true(ars_inspect_first_to_output(&good) > 1e-2);

    train_and_inspect(huge_init, dir[2], &boom);
    assert_true(has_problem(&boom, ARS_HEALTH_EXPLODING));
    assert_true(has_problem(&boom, ARS_HEALTH_NONFINITE));

#ifdef ARSENAL_HAVE_PLPLOT
    /* one run, then sigmoid against ReLU overlaid */
    snprintf(plots, sizeof plots, "%s/plots-one", base);
    const ars_inspect_run *one[1] = {&sig};
    ARS_ASSERT_OK(ars_inspect_plot(plots, one, 1, stdout));
    static const char *const single[] = {"gradient_flow", "grad_heatmap", "loss_gradnorm", "grad_histograms"};
    expect_plots(plots, single, 4);
    snprintf(plots, sizeof plots, "%s/plots-two", base);
    const ars_inspect_run *two[2] = {&sig, &good};
    ARS_ASSERT_OK(ars_inspect_plot(plots, two, 2, stdout));
    static const char *const pair[] = {"gradient_flow", "loss_gradnorm", "grad_heatmap_1", "grad_heatmap_2",
                                       "grad_histograms_1", "grad_histograms_2"};
    expect_plots(plots, pair, 6);
    snprintf(plots, sizeof plots, "%s/plots-boom", base);
    const ars_inspect_run *exploded[1] = {&boom};
    ARS_ASSERT_OK(ars_inspect_plot(plots, exploded, 1, stdout));
    expect_plots(plots, single, 4);
#else
    (void)plots;
    (void)expect_plots;
    printf("built without PLplot: plots not tested\n");
#endif
    /* the comparison screen names both runs and their problems */
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    ars_inspect_print_compare(out, &sig, &good);
    fclose(out);
    printf("%s", text);
    assert_non_null(strstr(text, "problems               vanishing"));
    assert_non_null(strstr(text, "first/output ratio"));
    free(text);
    ars_inspect_free(&sig);
    ars_inspect_free(&good);
    ars_inspect_free(&boom);
    ars_test_remove_tree(base);
}

/* ---- files that are not checkpoints ------------------------------------------------------ */

static void expect_load_error(const char *path, int code, const char *fragment)
{
    ars_inspect_run run;
    int rc = ars_inspect_load(&run, path);
    printf("%s -> %s\n", path, ars_error_message());
    assert_int_equal(rc, code);
    assert_non_null(strstr(ars_error_message(), path));
    assert_non_null(strstr(ars_error_message(), fragment));
    assert_null(strchr(ars_error_message(), '\n'));   /* one line */
    ars_inspect_free(&run);
}

static void test_not_a_checkpoint(void **state)
{
    (void)state;
    char dir[512], path[600];
    ars_test_tempdir(dir, sizeof dir, "inspect-errors");
    snprintf(path, sizeof path, "%s/missing.h5", dir);
    expect_load_error(path, ARS_EIO, "No such file");
    snprintf(path, sizeof path, "%s/text.h5", dir);
    ars_test_write_file(path, "not hdf5\n", 9);
    expect_load_error(path, ARS_EFORMAT, "not an HDF5 file");
    /* HDF5, but another format (strings as format 1 stored them), then the
     * right format at version 3 */
    const char *formats[2] = {"something-else", "arsenal-checkpoint"};
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/v%d.h5", dir, k);
        hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        hid_t space = H5Screate(H5S_SCALAR);
        hid_t type = H5Tcopy(H5T_C_S1);
        H5Tset_size(type, H5T_VARIABLE);
        H5Tset_cset(type, H5T_CSET_UTF8);
        hid_t attr = H5Acreate2(file, "format", type, space, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(attr, type, &formats[k]);
        H5Aclose(attr);
        int32_t version = k == 0 ? 1 : 3;
        attr = H5Acreate2(file, "format_version", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(attr, H5T_NATIVE_INT32, &version);
        H5Aclose(attr);
        H5Tclose(type);
        H5Sclose(space);
        H5Fclose(file);
    }
    snprintf(path, sizeof path, "%s/v0.h5", dir);
    expect_load_error(path, ARS_EFORMAT, "not an arsenal checkpoint");
    snprintf(path, sizeof path, "%s/v1.h5", dir);
    expect_load_error(path, ARS_EFORMAT, "version 3");
    ars_test_remove_tree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vanishing_named_with_ranges),
        cmocka_unit_test(test_hysteresis_one_start_one_end),
        cmocka_unit_test(test_vanishing_by_update_ratio),
        cmocka_unit_test(test_exploding_then_nonfinite),
        cmocka_unit_test(test_exploding_through_depth_and_growth),
        cmocka_unit_test(test_saturation_and_dead_units),
        cmocka_unit_test(test_plateau_only_while_high),
        cmocka_unit_test(test_oscillation),
        cmocka_unit_test(test_healthy_run_no_alarm),
        cmocka_unit_test(test_resume_catches_up_silently),
        cmocka_unit_test(test_log_lines),
        cmocka_unit_test(test_config_keys),
        cmocka_unit_test(test_layer_ranges),
        cmocka_unit_test(test_report_and_json),
        cmocka_unit_test(test_real_runs),
        cmocka_unit_test(test_not_a_checkpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
