/* gen_ckpt_corpus: writes the seed corpus of the checkpoint fuzz target:
 * real checkpoints, made by ars_ckpt_write (format 2: fixed-length
 * strings), of the fixed model in fuzz_common.h. Usage: gen_ckpt_corpus
 * DIR. Run by hand (or by scripts/fuzz.sh --regen-ckpt-seeds) when the
 * format changes; the files are committed in tests/fuzz/corpus/ckpt/.
 *   v2-adam-history.h5   Adam after 2 steps, 3 history records, gradient
 *                        histograms, an evaluation and an event
 *   v2-adam-empty.h5     Adam, an empty history (no records, no histograms)
 *   v2-adam-nohistory.h5 Adam, no /history group at all
 *   v2-sgd-momentum.h5   SGD with momentum (loads only into an SGD run)
 * adam-history.h5, adam-empty.h5 and sgd-momentum.h5 beside them are the
 * same checkpoints in format 1 (variable-length strings), written by an
 * earlier arsenal: kept as seeds of the format-1 refusal in-process. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>

#include "arsenal/ckpt.h"
#include "arsenal/error.h"
#include "arsenal/history.h"
#include "fuzz_common.h"

static int write_one(const char *dir, const char *name, ars_optimizer_kind kind, int records, int bins,
                     int with_history)
{
    ars_model model;
    ars_optimizer opt;
    ars_optim_config config;
    memset(&opt, 0, sizeof opt);
    int rc = 0;
    if (kind == ARS_OPT_SGD) {
        rc = fuzz_ckpt_model(&model, &opt, ARS_OPT_ADAM);
        ars_optimizer_destroy(&opt);
        ars_optim_config_defaults(&config, ARS_OPT_SGD);
        config.momentum = 0.9f;
        if (!rc) rc = ars_optimizer_create(&opt, &config, model.param_count);
    } else {
        rc = fuzz_ckpt_model(&model, &opt, kind);
    }
    if (rc) return rc;
    for (size_t i = 0; i < model.state_count; i++) model.state[i] = 0.5f + (float)i;
    for (size_t i = 0; i < model.param_count; i++) model.grads[i] = ((float)i - 20.0f) * 1e-3f;
    ars_optimizer_step(&opt, model.params, model.grads, 1e-3f);
    ars_optimizer_step(&opt, model.params, model.grads, 1e-3f);

    ars_history history;
    char names[FUZZ_CKPT_LAYERS][40];
    for (int l = 0; l < FUZZ_CKPT_LAYERS; l++) memcpy(names[l], model.layers[l].name, 40);
    rc = ars_history_init(&history, FUZZ_CKPT_LAYERS, (const char (*)[40])names, bins);
    for (int t = 0; t < records && !rc; t++) {
        ars_history_step s = {.step = t * 10, .epoch = t / 2, .loss = 2.0 - t * 0.1, .lr = 1e-3,
                              .grad_norm = 1.5 - t * 0.2, .clip_scale = t == 1 ? 0.5 : 1, .nonfinite = t == 2,
                              .skipped = t == 2};
        double *row;
        rc = ars_history_append(&history, &s, &row);
        for (int k = 0; !rc && k < ARS_HIST_LAYER_COLUMNS * FUZZ_CKPT_LAYERS; k++) row[k] = t + k * 0.01;
    }
    if (!rc && bins) {
        size_t offsets[FUZZ_CKPT_LAYERS], counts[FUZZ_CKPT_LAYERS];
        for (int l = 0; l < FUZZ_CKPT_LAYERS; l++) {
            offsets[l] = model.layers[l].param_offset;
            counts[l] = model.layers[l].param_size;
        }
        rc = ars_history_add_histograms(&history, 20, model.grads, offsets, counts);
    }
    if (!rc && records) {
        ars_history_eval eval = {.step = 20, .epoch = 1, .train_loss = 1.7, .test_loss = 1.8, .test_accuracy = 0.6};
        rc = ars_history_add_eval(&history, &eval);
        if (!rc) rc = ars_history_add_event(&history, "step 20: exploding gradient starts");
    }
    ars_ckpt_state state = {.step = 20, .epoch = 1, .steps_per_epoch = 10, .world_size = 2, .global_batch = 8,
                            .seed = 11, .nonfinite_steps = 1, .last_loss = 1.6, .test_loss = 1.8,
                            .test_accuracy = 0.6,
                            .config_text = "[run]\ndata = blobs\nseed = 11\n\n[dense]\nunits = 8\n\n[batchnorm]\n\n"
                                           "[relu]\n\n[dense]\nunits = 3\n"};
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!rc) rc = ars_ckpt_write(path, &model, &opt, with_history ? &history : NULL, &state);
    if (!rc) printf("wrote %s\n", path);
    ars_history_free(&history);
    ars_optimizer_destroy(&opt);
    ars_model_destroy(&model);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_ckpt_corpus DIR\n");
        return 2;
    }
    int rc = write_one(argv[1], "v2-adam-history.h5", ARS_OPT_ADAM, 3, 4, 1);
    if (!rc) rc = write_one(argv[1], "v2-adam-empty.h5", ARS_OPT_ADAM, 0, 0, 1);
    if (!rc) rc = write_one(argv[1], "v2-adam-nohistory.h5", ARS_OPT_ADAM, 0, 0, 0);
    if (!rc) rc = write_one(argv[1], "v2-sgd-momentum.h5", ARS_OPT_SGD, 2, 0, 1);
    if (rc) fprintf(stderr, "gen_ckpt_corpus: %s\n", ars_error_message());
    return rc ? 1 : 0;
}
