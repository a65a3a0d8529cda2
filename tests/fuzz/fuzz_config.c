/* fuzz_config: the run-file parser as a user drives it. The input is a run
 * file, optionally followed by a line "%%" and --set assignments, one per
 * line. Steps: ars_config_load_string -> ars_config_override (each) ->
 * ars_config_expand -> ars_config_to_string -> ars_run_config_load.
 * Properties besides "no crash, no leak, no UB":
 *  - the printed file loads back and prints identically (to_string is a
 *    fixed point), expands alike and maps onto the same run and layers;
 *  - a failed override leaves the printed config unchanged;
 *  - ars_config_load_file on the same bytes agrees with load_string. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/config.h"
#include "arsenal/error.h"
#include "arsenal/train.h"
#include "fuzz_common.h"

enum { MAX_OVERRIDES = 64 };

/* The [run] fields and the layer specs with the source lines and file names
 * blanked: those differ between a file and its printed form, nothing else may. */
static void normalize(ars_layer_spec *specs, int count)
{
    for (int i = 0; i < count; i++) {
        specs[i].source_line = 0;
        specs[i].source_file = NULL;
    }
}

static int map_run(ars_config *c, ars_run_config *run, ars_layer_spec **specs, int *count)
{
    memset(run, 0, sizeof *run);
    int rc = ars_run_config_load(c, run, specs, count);
    if (rc == 0) normalize(*specs, *count);
    return rc;
}

/* Reloads text (the printed config) and checks it against the original. */
static void check_round_trip(const char *text, int expand_rc, int run_rc, const ars_run_config *run,
                             const ars_layer_spec *specs, int count)
{
    ars_config again;
    int rc = ars_config_load_string(&again, text, "<printed>");
    FUZZ_CHECK(rc == 0, "the printed config does not load back:\n%s", text);
    char *text2 = ars_config_to_string(&again);
    FUZZ_CHECK(text2 != NULL, "to_string failed");
    FUZZ_CHECK(strcmp(text, text2) == 0, "printing is not a fixed point:\n--- first\n%s--- second\n%s", text,
               text2);
    free(text2);
    int expand_again = ars_config_expand(&again);
    FUZZ_CHECK((expand_again == 0) == (expand_rc == 0), "expand: %d on the original, %d on the printed form",
               expand_rc, expand_again);
    if (expand_again == 0) {
        ars_run_config run2;
        ars_layer_spec *specs2 = NULL;
        int count2 = 0;
        int rc2 = map_run(&again, &run2, &specs2, &count2);
        FUZZ_CHECK(rc2 == run_rc, "run mapping: %d on the original, %d on the printed form", run_rc, rc2);
        if (rc2 == 0) {
            FUZZ_CHECK(memcmp(&run2, run, sizeof run2) == 0, "the printed form maps to another [run]");
            FUZZ_CHECK(count2 == count, "%d layers from the original, %d from the printed form", count, count2);
            FUZZ_CHECK(memcmp(specs2, specs, sizeof *specs * (size_t)count) == 0,
                       "the printed form maps to other layers");
        }
        free(specs2);
    }
    ars_config_free(&again);
}

/* load_file must see exactly what load_string sees (up to the first NUL,
 * which load_file rejects and load_string cannot see). */
static void check_load_file(const uint8_t *data, size_t size, int string_rc)
{
    if (memchr(data, '\0', size)) return;
    const char *path = fuzz_write_file("input.cfg", data, size);
    ars_config from_file;
    int rc = ars_config_load_file(&from_file, path);
    FUZZ_CHECK(rc == string_rc, "load_file returned %d, load_string %d", rc, string_rc);
    ars_config_free(&from_file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    /* Split off the overrides: the text after a line "%%". */
    char *overrides[MAX_OVERRIDES];
    int override_count = 0;
    char *mark = strncmp(text, "%%\n", 3) == 0 ? text : strstr(text, "\n%%\n");
    size_t cfg_size = strlen(text);
    if (mark) {
        char *rest = mark == text ? text + 3 : mark + 4;
        *(mark == text ? mark : mark + 1) = '\0';
        cfg_size = strlen(text);
        while (*rest && override_count < MAX_OVERRIDES) {
            char *eol = strchr(rest, '\n');
            if (eol) *eol = '\0';
            overrides[override_count++] = rest;
            if (!eol) break;
            rest = eol + 1;
        }
    }

    ars_config config;
    int rc = ars_config_load_string(&config, text, "<fuzz>");
    check_load_file((const uint8_t *)text, cfg_size, rc);
    if (rc) {
        FUZZ_CHECK(ars_error_message()[0] != '\0', "load failed without a message");
        ars_config_free(&config);   /* must be safe on a failed load */
        free(text);
        return 0;
    }
    for (int i = 0; i < override_count; i++) {
        char *before = ars_config_to_string(&config);
        if (ars_config_override(&config, overrides[i]) != 0 && before) {
            char *after = ars_config_to_string(&config);
            FUZZ_CHECK(after && strcmp(before, after) == 0, "a failed --set '%s' changed the config",
                       overrides[i]);
            free(after);
        }
        free(before);
    }
    int expand_rc = ars_config_expand(&config);
    char *printed = ars_config_to_string(&config);
    FUZZ_CHECK(printed != NULL, "to_string failed");

    ars_run_config run;
    ars_layer_spec *specs = NULL;
    int count = 0, run_rc = -1;
    if (expand_rc == 0) {
        run_rc = map_run(&config, &run, &specs, &count);
        FUZZ_CHECK(run_rc != 0 || (count > 0 && specs), "run mapping succeeded without layers");
        /* A second expansion rebuilds the list (documented): must not leak or break. */
        FUZZ_CHECK(ars_config_expand(&config) == 0, "a second expand failed");
    }
    check_round_trip(printed, expand_rc, run_rc, &run, specs, count);

    free(specs);
    free(printed);
    ars_config_free(&config);
    free(text);
    return 0;
}
