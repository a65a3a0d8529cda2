/* transformer: the pre-LayerNorm Transformer block
 *     x = x + MHA(LN(x));  x = x + MLP(LN(x)),  MLP = seq_dense, gelu, seq_dense
 * is sugar in the run file (its parse function below expands a [transformer]
 * section into the ten layers below), not one composite layer: every part then
 * shows up by name in the probes and the gradient history, the residual
 * and activation layers are reused as they are, and a layer keeps at most
 * ARS_MAX_TENSORS parameter tensors (the block has twelve).
 *     residual, seq_layernorm, attention, residual_add,
 *     residual, seq_layernorm, seq_dense (hidden), gelu, seq_dense (units), residual_add
 * This file holds the kind's entry: the expansion of its section. */
#include <stdio.h>
#include <string.h>

#include "arsenal/error.h"
#include "layers_internal.h"

static int transformer_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                            ars_layer_size *size)
{
    return ars_error(ARS_EINVAL, "[transformer] is run-file sugar: the run file expands it into residual, "
                     "seq_layernorm, attention, residual_add, residual, seq_layernorm, seq_dense, gelu, seq_dense, "
                     "residual_add (see docs/attention.md); build a model from those layers");
}

static int transformer_setup(ars_layer *layer, const ars_layer_size *size)
{
    return transformer_size(&layer->spec, &layer->in_shape, NULL, layer->max_rows, NULL);
}

/* units = the block's width, checked against its input by the attention;
 * hidden = the MLP's width (4 units by default). */
static int transformer_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    int hidden, rc;
    char mlp_activation[24];
    if ((rc = ars_layer_parse_int(p, "heads", 1, 1, 1 << 16, &spec->heads)) != 0) return rc;
    if ((rc = ars_layer_parse_bool(p, "causal", 0, &spec->causal)) != 0) return rc;
    if ((rc = ars_layer_parse_int(p, "hidden", 4L * spec->units, 1, 1 << 24, &hidden)) != 0) return rc;
    if ((rc = ars_layer_parse_float(p, "eps", 1e-5, 1e-12, 1, &spec->eps)) != 0) return rc;
    if ((rc = ars_layer_parse_activation_name(p, "activation", "gelu", 0, mlp_activation, sizeof mlp_activation)))
        return rc;
    const char *block[] = {"residual", "seq_layernorm", "attention", "residual_add", "residual",
                           "seq_layernorm", "seq_dense", mlp_activation, "seq_dense", "residual_add"};
    for (int i = 0; i < 10; i++) {
        ars_layer_spec part;
        ars_layer_spec_defaults(&part, block[i]);
        part.time = spec->time;
        part.eps = spec->eps;
        if (i == 2) {
            part.heads = spec->heads;
            part.causal = spec->causal;
            part.units = spec->units;
        }
        if (i == 6) part.units = hidden;
        if (i == 8) part.units = spec->units;
        if ((rc = ars_layer_parse_emit(p, &part)) != 0) return rc;
    }
    return 0;
}

const ars_layer_kind ars_kind_transformer = {
    .name = "transformer",
    .summary = "a pre-LayerNorm Transformer block (ten layers)",
    .flags = ARS_KIND_SEQUENCE | ARS_KIND_PARAMS | ARS_KIND_NORMALIZATION | ARS_KIND_RESIDUAL | ARS_KIND_SUGAR,
    .units = "<width per step>",
    .parse = transformer_parse,
    .size = transformer_size,
    .setup = transformer_setup,
};
