/* basic_block: the residual block of He et al. 2016's CIFAR ResNets (and
 * torchvision's BasicBlock) as run-file sugar:
 *     y = relu(BN(conv3x3(relu(BN(conv3x3(x, stride))))) + shortcut(x))
 * expanded into residual, conv2d, batchnorm2d, relu, conv2d, batchnorm2d,
 * residual_add, relu. The shortcut is the identity, or a 1x1 convolution of
 * the block's stride and a BatchNorm2d when the block changes the channels
 * or the size (residual_add does that by itself). Like [transformer], every
 * part is a layer of its own in probes, histories and checkpoints. Keys:
 * channels (required), stride (1 or 2 to halve the size), init (of the
 * convolutions; default he_normal with fan_out, as torchvision), and sync,
 * momentum, eps of the BatchNorms. */
#include <string.h>

#include "arsenal/error.h"
#include "layers_internal.h"

static int basic_block_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                            ars_layer_size *size)
{
    (void)in;
    (void)skip;
    (void)max_rows;
    (void)size;
    return ars_error(ARS_EINVAL, "[basic_block] is run-file sugar for residual, conv2d, batchnorm2d, relu, "
                     "conv2d, batchnorm2d, residual_add, relu; build a model from those layers (spec '%s')",
                     spec->kind);
}

static int basic_block_setup(ars_layer *layer, const ars_layer_size *size)
{
    (void)size;
    return basic_block_size(&layer->spec, &layer->in_shape, NULL, layer->max_rows, NULL);
}

static int basic_block_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    int rc, channels, stride;
    if (!ars_layer_parse_has(p, "channels")) return ars_layer_parse_error(p, "needs channels = <output channels>");
    if ((rc = ars_layer_parse_int(p, "channels", 0, 1, 1 << 20, &channels)) != 0) return rc;
    if ((rc = ars_layer_parse_int(p, "stride", 1, 1, 64, &stride)) != 0) return rc;
    if ((rc = ars_layer_parse_float(p, "momentum", 0.1, 0, 1, &spec->momentum)) != 0) return rc;
    if ((rc = ars_layer_parse_float(p, "eps", 1e-5, 1e-12, 1, &spec->eps)) != 0) return rc;
    if ((rc = ars_layer_parse_bool(p, "sync", 1, &spec->sync)) != 0) return rc;
    if (!ars_layer_parse_has(p, "init")) {   /* torchvision: kaiming_normal_(mode = fan_out) */
        strcpy(spec->init, "he_normal");
        strcpy(spec->init_mode, "fan_out");
    } else if ((rc = ars_layer_parse_init(p, spec)) != 0) {
        return rc;
    }
    static const char *const parts[] = {"residual", "conv2d", "batchnorm2d", "relu", "conv2d", "batchnorm2d",
                                        "residual_add", "relu"};
    for (int i = 0; i < 8; i++) {
        ars_layer_spec part;
        ars_layer_spec_defaults(&part, parts[i]);
        if (strcmp(parts[i], "conv2d") == 0) {
            part.channels = channels;
            part.kernel[0] = part.kernel[1] = 3;
            part.padding[0] = part.padding[1] = 1;
            part.stride[0] = part.stride[1] = i == 1 ? stride : 1;
            part.bias = 0;
        }
        if (strcmp(parts[i], "conv2d") == 0 || strcmp(parts[i], "residual_add") == 0) {
            memcpy(part.init, spec->init, sizeof part.init);
            part.init_arg = spec->init_arg;
            memcpy(part.init_mode, spec->init_mode, sizeof part.init_mode);
        }
        part.sync = spec->sync;
        part.momentum = spec->momentum;
        part.eps = spec->eps;
        if ((rc = ars_layer_parse_emit(p, &part)) != 0) return rc;
    }
    return 0;
}

const ars_layer_kind ars_kind_basic_block = {
    .name = "basic_block",
    .summary = "a ResNet basic block (eight layers)",
    .flags = ARS_KIND_PARAMS | ARS_KIND_NORMALIZATION | ARS_KIND_RESIDUAL | ARS_KIND_SUGAR,
    .parse = basic_block_parse,
    .size = basic_block_size,
    .setup = basic_block_setup,
};
