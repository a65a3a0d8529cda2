/* onnx_export: a checkpoint's model as an ONNX graph (`arsenal export
 * --onnx`, docs/onnx.md): opset ARS_ONNX_OPSET, input "input" [N, <sample
 * shape>] with a symbolic batch dimension N, output "logits" and, for
 * classifiers, "probabilities" (Softmax). Each layer becomes the ONNX
 * operators that compute what its evaluation-mode forward computes; a kind
 * with no such equivalent is refused naming the layer. Serialized with
 * protobuf-c from third_party/onnx/onnx.proto (compiled at build time);
 * built only when CMake found protobuf-c (ARSENAL_HAVE_ONNX). */
#ifndef ARSENAL_EXPORT_ONNX_EXPORT_H
#define ARSENAL_EXPORT_ONNX_EXPORT_H

#include <stddef.h>

#include "arsenal/evaluate.h"

#define ARS_ONNX_OPSET 13      /* the default ("ai.onnx") operator set imported */
#define ARS_ONNX_IR_VERSION 7  /* the IR version of ONNX 1.8, the first with opset 13 */

typedef struct ars_onnx_options {
    /* 1: a second output "probabilities" = Softmax(logits) over the classes;
     * 0: none; -1: for a classifier (loss = cross_entropy with vector
     * outputs), not otherwise */
    int probabilities;
    /* 1: when the run standardized its data (m->data_mean, data_std not 0
     * and 1), the graph starts with (input - data_mean) / data_std, so that
     * it takes raw samples like arsenal does; 0: the graph takes
     * standardized samples */
    int standardize;
} ars_onnx_options;

typedef struct ars_onnx_summary {
    int nodes, initializers;
    double parameters;     /* floats stored in initializers */
    size_t bytes;          /* of the file written */
    int standardized;      /* the graph standardizes its input */
    int probabilities;     /* it has the "probabilities" output */
} ars_onnx_summary;

/* Writes m's model (built: ars_trained_build) to path (through path.tmp-<pid>, renamed when complete).
 * Errors: a layer without an ONNX equivalent ("layer 004_attention: no
 * ONNX export for kind attention ..."), out of memory, I/O. summary may be
 * NULL. */
int ars_onnx_export(const ars_trained *m, const ars_onnx_options *options, const char *path,
                    ars_onnx_summary *summary);

#endif
