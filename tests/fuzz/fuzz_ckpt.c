/* fuzz_ckpt: the checkpoint reader on arbitrary files. The input is written
 * to a temporary .h5 file, then read with ars_ckpt_read_info, loaded with
 * ars_ckpt_load into the small fixed model of fuzz_common.h (Adam) and its
 * history read with ars_ckpt_read_history. The seed corpus holds real
 * checkpoints of that model (tests/fuzz/gen_ckpt_corpus.c).
 * Properties besides "no crash, no leak, no UB":
 *  - a failed load leaves the model's parameters, state and the optimizer
 *    exactly as they were (nothing partially loaded);
 *  - every call closes every HDF5 object it opened (a leaked id is an open
 *    file a long-running trainer keeps forever);
 *  - a success yields sane figures (counts >= 0, strings set).
 * The HDF5 library itself is not instrumented: libFuzzer's coverage guides
 * through arsenal's reader only, and a crash inside libhdf5 on a malformed
 * file is reported (the CLI reads a checkpoint in a checking child first,
 * ars_ckpt_validate, but a library caller does not). Format-1 seeds
 * (variable-length strings) stop at the version check in-process: they are
 * read only in that child. The v2-* seeds are the current format.
 * ARSENAL_FUZZ_CKPT_SANDBOX=1 puts that child in front (see below). */
#define _POSIX_C_SOURCE 200809L
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/ckpt.h"
#include "arsenal/error.h"
#include "arsenal/history.h"
#include "fuzz_common.h"

static ars_model model;
static ars_optimizer opt;
static float *saved;   /* params | state | m | v before the load */
static size_t n_params, n_state;

static void setup(void)
{
    if (saved) return;
    if (fuzz_ckpt_model(&model, &opt, ARS_OPT_ADAM) != 0) {
        fprintf(stderr, "fuzz_ckpt: cannot build the model: %s\n", ars_error_message());
        abort();
    }
    n_params = model.param_count;
    n_state = model.state_count;
    saved = malloc(sizeof(float) * (3 * n_params + n_state));
    if (!saved) abort();
}

/* A fixed, recognizable starting point for every input. */
static void reset_model(void)
{
    for (size_t i = 0; i < n_params; i++) {
        model.params[i] = 0.25f + (float)i;
        opt.m[i] = -1.0f - (float)i;
        opt.v[i] = 2.0f + (float)i;
    }
    for (size_t i = 0; i < n_state; i++) model.state[i] = 0.5f + (float)i;
    opt.step = 7;
    memcpy(saved, model.params, sizeof(float) * n_params);
    memcpy(saved + n_params, model.state, sizeof(float) * n_state);
    memcpy(saved + n_params + n_state, opt.m, sizeof(float) * n_params);
    memcpy(saved + 2 * n_params + n_state, opt.v, sizeof(float) * n_params);
}

static int unchanged(void)
{
    return memcmp(saved, model.params, sizeof(float) * n_params) == 0 &&
           memcmp(saved + n_params, model.state, sizeof(float) * n_state) == 0 &&
           memcmp(saved + n_params + n_state, opt.m, sizeof(float) * n_params) == 0 &&
           memcmp(saved + 2 * n_params + n_state, opt.v, sizeof(float) * n_params) == 0 && opt.step == 7;
}

static void check_no_open_objects(const char *after)
{
    ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    FUZZ_CHECK(open == 0, "%zd HDF5 objects left open after %s", open, after);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    const char *path = fuzz_write_file("input.h5", data, size);

    /* ARSENAL_FUZZ_CKPT_SANDBOX=1 (CI's short run): what the CLI does, the
     * checking child first, then in-process reads of the files it passed
     * only; the property is then the product's: never a crash or hang,
     * whatever libhdf5 does. Without it libhdf5 is fuzzed in-process, and
     * its own crashes on malformed object headers are reported. */
    static int sandbox = -1;
    if (sandbox < 0) {
        const char *env = getenv("ARSENAL_FUZZ_CKPT_SANDBOX");
        sandbox = env && strcmp(env, "1") == 0;
    }
    if (sandbox && ars_ckpt_validate(path) != 0) {
        FUZZ_CHECK(ars_error_message()[0] != '\0', "validation failed without a message");
        return 0;
    }

    ars_ckpt_info info;
    int rc = ars_ckpt_read_info(path, &info);
    check_no_open_objects("ars_ckpt_read_info");
    if (rc == 0) {
        FUZZ_CHECK(info.config_text != NULL, "no config text");
        FUZZ_CHECK(info.layer_count >= 0 && (info.layer_count == 0 || (info.layer_names && info.layer_kinds)),
                   "layer_count %d", info.layer_count);
        FUZZ_CHECK(info.step >= 0 && info.global_batch > 0 && info.world_size > 0 && info.steps_per_epoch > 0,
                   "implausible figures accepted");
        for (int l = 0; l < info.layer_count; l++)
            FUZZ_CHECK(memchr(info.layer_names[l], '\0', sizeof info.layer_names[l]) &&
                           memchr(info.layer_kinds[l], '\0', sizeof info.layer_kinds[l]),
                       "layer %d: name or kind not terminated", l);
    } else {
        FUZZ_CHECK(ars_error_message()[0] != '\0', "read_info failed without a message");
    }
    ars_ckpt_info_free(&info);

    reset_model();
    rc = ars_ckpt_load(path, &model, &opt);
    check_no_open_objects("ars_ckpt_load");
    if (rc) {
        FUZZ_CHECK(unchanged(), "a failed load (%d) changed the model or optimizer", rc);
        FUZZ_CHECK(ars_error_message()[0] != '\0', "load failed without a message");
    } else {
        FUZZ_CHECK(opt.step >= 0, "optimizer step %lld", (long long)opt.step);
    }

    ars_history history;
    rc = ars_ckpt_read_history(path, &history);
    check_no_open_objects("ars_ckpt_read_history");
    if (rc == 0) {
        FUZZ_CHECK(history.layer_count >= 0, "layer_count %d", history.layer_count);
        FUZZ_CHECK(history.count <= history.capacity || history.capacity == 0, "count %zu > capacity %zu",
                   history.count, history.capacity);
        /* every record's per-layer row must be readable */
        double sum = 0;
        for (size_t t = 0; t < history.count; t++) {
            const double *row = ars_history_layer_values(&history, t);
            for (size_t k = 0; k < (size_t)ARS_HIST_LAYER_COLUMNS * (size_t)history.layer_count; k++)
                sum += row[k];
        }
        for (size_t k = 0; k < history.hist_count * (size_t)history.layer_count * (size_t)history.bins; k++)
            sum += history.hist_counts[k];
        for (size_t e = 0; e < history.event_count; e++) FUZZ_CHECK(history.events[e] != NULL, "event %zu", e);
        (void)sum;
        ars_history_free(&history);
    } else {
        FUZZ_CHECK(ars_error_message()[0] != '\0', "read_history failed without a message");
    }
    return 0;
}
