/* registry: layer kind name -> setup function, and the helpers every kind
 * uses to declare its tensors. */
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "layers_internal.h"

typedef struct {
    const char *kind;
    int (*size)(const ars_layer_spec *spec, int in_dim, int skip_dim, int max_rows, ars_layer_size *size);
    int (*setup)(ars_layer *layer, int in_dim, const ars_layer_size *size);
} kind_entry;

static const kind_entry kinds[] = {
    {"dense", ars_dense_size, ars_dense_setup},
    {"sigmoid", ars_activation_size, ars_activation_setup},
    {"tanh", ars_activation_size, ars_activation_setup},
    {"relu", ars_activation_size, ars_activation_setup},
    {"leaky_relu", ars_activation_size, ars_activation_setup},
    {"elu", ars_activation_size, ars_activation_setup},
    {"selu", ars_activation_size, ars_activation_setup},
    {"gelu", ars_activation_size, ars_activation_setup},
    {"batchnorm", ars_batchnorm_size, ars_batchnorm_setup},
    {"layernorm", ars_layernorm_size, ars_layernorm_setup},
    {"dropout", ars_dropout_size, ars_dropout_setup},
    {"residual", ars_residual_begin_size, ars_residual_begin_setup},
    {"residual_add", ars_residual_add_size, ars_residual_add_setup},
    {"embedding", ars_embedding_size, ars_embedding_setup},
    {"seq_dense", ars_seq_dense_size, ars_seq_dense_setup},
    {"positional", ars_positional_size, ars_positional_setup},
    {"attention", ars_attention_size, ars_attention_setup},
    {"seq_layernorm", ars_seq_layernorm_size, ars_seq_layernorm_setup},
    {"transformer", ars_transformer_size, ars_transformer_setup},
    {"rnn", ars_rnn_size, ars_rnn_setup},
    {"mean_pool", ars_pooling_size, ars_pooling_setup},
    {"last_step", ars_pooling_size, ars_pooling_setup},
};

static const kind_entry *find_kind(const char *kind)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kinds[i].kind, kind) == 0) return &kinds[i];
    return NULL;
}

int ars_layer_kind_known(const char *kind) { return find_kind(kind) != NULL; }

void ars_layer_spec_defaults(ars_layer_spec *spec, const char *kind)
{
    memset(spec, 0, sizeof *spec);
    strncpy(spec->kind, kind, sizeof spec->kind - 1);
    spec->alpha = strcmp(kind, "leaky_relu") == 0 ? 0.01f : 1.0f;
    spec->momentum = 0.1f;
    spec->eps = 1e-5f;
    spec->sync = 1;
    spec->rate = 0.5f;
    spec->bias = 1;
    strcpy(spec->init_mode, "fan_in");
    spec->heads = 1;
    strcpy(spec->encoding, "learned");
}

int ars_layer_size_of(const ars_layer_spec *spec, int in_dim, int skip_dim, int max_rows, ars_layer_size *size)
{
    const kind_entry *entry = find_kind(spec->kind);
    memset(size, 0, sizeof *size);
    if (!entry) return ars_error(ARS_EINVAL, "unknown layer kind '%s'", spec->kind);
    if (in_dim <= 0) return ars_error(ARS_EINVAL, "layer '%s' gets inputs of width %d", spec->kind, in_dim);
    int rc = entry->size(spec, in_dim, skip_dim, max_rows > 0 ? max_rows : 0, size);
    /* past these no size_t holds the bytes (the setup casts them) */
    if (!rc && (size->params > 0x1p60 || size->state > 0x1p60 || size->workspace > 0x1p62))
        rc = ars_error(ARS_ENOMEM, "[%s] needs %.3g parameters and %.3g bytes of workspace: more than memory "
                       "can address", spec->kind, size->params + size->state, size->workspace);
    return rc;
}

int ars_layer_setup(ars_layer *layer, const ars_layer_spec *spec, int in_dim, int max_rows)
{
    ars_layer_size size;
    const int skip_dim = layer->partner ? layer->partner->in_dim : 0;
    int rc = ars_layer_size_of(spec, in_dim, skip_dim, max_rows, &size);
    if (rc) return rc;
    layer->spec = *spec;
    layer->in_dim = in_dim;
    layer->max_rows = max_rows;
    rc = find_kind(spec->kind)->setup(layer, in_dim, &size);
    if (rc) return rc;
    /* the estimate of a model is only as good as this agreement */
    if (layer->out_dim != size.out_dim || (double)layer->param_size != size.params ||
        (double)layer->state_size != size.state)
        return ars_error(ARS_EINVAL, "internal: layer '%s' set up %d outputs, %zu parameters, %zu state but "
                         "its size function says %d, %.0f, %.0f", spec->kind, layer->out_dim, layer->param_size,
                         layer->state_size, size.out_dim, size.params, size.state);
    return 0;
}

/* One node per distinct name, reachable from a static list for the life of
 * the process: a spec may outlive the config its name came from. */
typedef struct source_name {
    struct source_name *next;
    char text[];
} source_name;

static source_name *source_names;

const char *ars_layer_source_name(const char *path)
{
    if (!path) return NULL;
    for (source_name *n = source_names; n; n = n->next)
        if (strcmp(n->text, path) == 0) return n->text;
    size_t length = strlen(path);
    source_name *n = malloc(sizeof *n + length + 1);
    if (!n) return NULL;
    memcpy(n->text, path, length + 1);
    n->next = source_names;
    source_names = n;
    return n->text;
}

static void add_view(ars_tensor_view *views, int *count, size_t *size, const char *name,
                     int rows, int cols, ars_role role)
{
    ars_tensor_view *v = &views[(*count)++];
    memset(v, 0, sizeof *v);
    strncpy(v->name, name, sizeof v->name - 1);
    v->rows = rows;
    v->cols = cols;
    v->offset = *size;
    v->count = (size_t)rows * (size_t)cols;
    v->role = role;
    *size += v->count;
}

void ars_layer_add_param(ars_layer *layer, const char *name, int rows, int cols, ars_role role)
{
    add_view(layer->params, &layer->param_count, &layer->param_size, name, rows, cols, role);
}

void ars_layer_add_buffer(ars_layer *layer, const char *name, int rows, int cols, ars_role role)
{
    add_view(layer->buffers, &layer->buffer_count, &layer->state_size, name, rows, cols, role);
}

static const char *const activation_names[] = {
    [ARS_ACT_NONE] = "none", [ARS_ACT_SIGMOID] = "sigmoid", [ARS_ACT_TANH] = "tanh",
    [ARS_ACT_RELU] = "relu", [ARS_ACT_LEAKY_RELU] = "leaky_relu", [ARS_ACT_ELU] = "elu",
    [ARS_ACT_SELU] = "selu", [ARS_ACT_GELU] = "gelu"};

ars_activation ars_activation_from_name(const char *name)
{
    for (int i = 1; i < (int)(sizeof activation_names / sizeof activation_names[0]); i++)
        if (strcmp(activation_names[i], name) == 0) return (ars_activation)i;
    return ARS_ACT_NONE;
}

const char *ars_activation_name(ars_activation act) { return activation_names[act]; }
