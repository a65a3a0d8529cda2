/* cmd_export: `arsenal export CKPT.h5 --onnx FILE.onnx`: a trained model as
 * an ONNX graph for other runtimes (docs/onnx.md). The checkpoint's model
 * is rebuilt as for evaluate and predict (src/eval/trained.c) and translated by
 * src/export/onnx_export.c, which is built only with protobuf-c; without
 * it this command says which packages bring it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/evaluate.h"
#include "arsenal/error.h"
#include "cli.h"
#ifdef ARSENAL_HAVE_ONNX
#include "../export/onnx_export.h"
#endif

static const char export_usage[] =
    "usage: arsenal export CKPT.h5 --onnx FILE.onnx [--input-shape SHAPE] [--probabilities | --logits-only]\n"
    "                      [--standardized-input]\n"
    "\n"
    "Writes the checkpoint's model as an ONNX graph (opset 13, docs/onnx.md) in evaluation form: BatchNorm\n"
    "with its running statistics, dropout as the identity. Input \"input\" [N, <sample shape>] (N: any batch),\n"
    "output \"logits\" [N, <output shape>] and, for a classifier, \"probabilities\" (their softmax).\n"
    "Every built-in layer kind exports; a kind registered at run time (no ONNX equivalent) is an error naming it.\n"
    "\n"
    "  --onnx FILE.onnx      the file to write (replaced only once complete)\n"
    "  --input-shape SHAPE   the shape of one sample, e.g. 1x28x28 or 784 (default: the run's data set)\n"
    "  --probabilities       add the \"probabilities\" output even if the run was not a classification\n"
    "  --logits-only         no \"probabilities\" output\n"
    "  --standardized-input  when the run standardized its data (its mean and std: the checkpoint's data_mean,\n"
    "                        data_std), do not standardize in the graph: it then takes standardized samples\n";

/* "1x28x28", "1,28,28" or "784": 1 to 4 positive sizes. */
static int parse_shape(const char *text, ars_shape *shape)
{
    memset(shape, 0, sizeof *shape);
    const char *p = text;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > (1L << 30) || shape->rank == ARS_SHAPE_MAX_RANK) return -1;
        shape->dims[shape->rank++] = (int)v;
        p = end;
        if (*p == 'x' || *p == ',') {
            p++;
            if (!*p) return -1;
        } else if (*p) {
            return -1;
        }
    }
    return shape->rank > 0 ? 0 : -1;
}

int ars_cmd_export(int argc, char **argv)
{
    const char *ckpt = NULL, *onnx = NULL, *shape_text = NULL, *value;
    int error = 0, probabilities = -1, standardize = 1;
    for (int i = 1; i < argc && !error; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(export_usage, stdout);
            return 0;
        } else if (ars_cli_option(argc, argv, &i, "--onnx", &value, &error)) {
            onnx = value;
        } else if (ars_cli_option(argc, argv, &i, "--input-shape", &value, &error)) {
            shape_text = value;
        } else if (strcmp(argv[i], "--probabilities") == 0) {
            probabilities = 1;
        } else if (strcmp(argv[i], "--logits-only") == 0) {
            probabilities = 0;
        } else if (strcmp(argv[i], "--standardized-input") == 0) {
            standardize = 0;
        } else if (argv[i][0] == '-' || ckpt) {
            fprintf(stderr, "arsenal export: unexpected argument '%s' (arsenal export --help)\n", argv[i]);
            error = 1;
        } else {
            ckpt = argv[i];
        }
    }
    if (!error && (!ckpt || !onnx)) {
        fprintf(stderr, "arsenal export: %s\n%s", !ckpt ? "which checkpoint?" : "--onnx FILE.onnx is required "
                "(the only export format so far)", export_usage);
        error = 1;
    }
    ars_shape shape;
    if (!error && shape_text && parse_shape(shape_text, &shape)) {
        fprintf(stderr, "arsenal export: --input-shape %s: expected 1 to 4 sizes like 1x28x28 or 784\n", shape_text);
        error = 1;
    }
    if (error) return 2;
#ifndef ARSENAL_HAVE_ONNX
    (void)probabilities;
    (void)standardize;
    fprintf(stderr, "arsenal export: this arsenal was built without ONNX export (CMake found no protobuf-c, or was told "
                    "-DARSENAL_WITH_ONNX=OFF): "
                    "install the Debian packages libprotobuf-c-dev and protobuf-c-compiler (scripts/setup.sh does) "
                    "and build again\n");
    return 1;
#else
    /* the model as evaluate and predict rebuild it (src/eval/trained.c) */
    ars_trained t;
    int rc = ars_trained_open(&t, ckpt, NULL, 0, NULL, NULL);
    if (!rc && shape_text) {
        char where[64];
        snprintf(where, sizeof where, "--input-shape %.40s", shape_text);
        if (t.input_shape.rank > 0) rc = ars_trained_check_shape(&t.input_shape, &shape, ckpt, where);
        if (!rc) t.input_shape = shape;
    }
    if (!rc) rc = ars_trained_resolve(&t, NULL);
    if (!rc) rc = ars_trained_build(&t, 1, NULL);
    ars_onnx_options options = {.probabilities = probabilities, .standardize = standardize};
    ars_onnx_summary summary;
    if (!rc) {
        rc = ars_onnx_export(&t, &options, onnx, &summary);
        if (rc) ars_error_context(rc, "%s", ckpt);
    }
    if (rc) {
        fprintf(stderr, "arsenal export: %s\n", ars_error_message());
        ars_trained_free(&t);
        return 1;
    }
    char in[48], out[48];
    ars_shape_text(&t.input_shape, in, sizeof in);
    ars_shape_text(&t.model.out_shape, out, sizeof out);
    printf("wrote %s: ONNX opset %d, %d nodes, %.0f parameters, %zu bytes\n", onnx, ARS_ONNX_OPSET, summary.nodes,
           summary.parameters, summary.bytes);
    printf("  input  \"input\" [N, %s%s\n", in + 1, summary.standardized ? " (raw samples: standardized in the graph)" : "");
    printf("  output \"logits\" [N, %s\n", out + 1);
    if (summary.probabilities) printf("  output \"probabilities\" [N, %s (softmax of the logits)\n", out + 1);
    if (!t.stats_stored && summary.standardized)
        printf("note: %s predates the stored standardization; it was recomputed from the run's training data "
               "(mean %.6g, std %.6g)\n", ckpt, t.data_mean, t.data_std);
    ars_trained_free(&t);
    return 0;
#endif
}
