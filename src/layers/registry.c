/* registry: every layer kind arsenal knows (its ars_layer_kind entry: name,
 * flags, run-file parsing, size and setup), per-sample shapes, and the
 * helpers every kind uses to declare its tensors. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "layers_internal.h"

/* The built-in kinds, in the order the unknown-kind message lists them.
 * Adding a kind: its file in src/layers/ defines `const ars_layer_kind
 * ars_kind_<name>` and gets one line here. */
#define BUILTIN_KINDS(X)                                                                            \
    X(dense) X(sigmoid) X(tanh) X(relu) X(leaky_relu) X(elu) X(selu) X(gelu) X(batchnorm) X(batchnorm2d) \
    X(layernorm) X(dropout) X(residual) X(residual_add) X(embedding) X(seq_dense) X(positional)     \
    X(attention) X(seq_layernorm) X(transformer) X(rnn) X(mean_pool) X(last_step) X(conv2d) X(maxpool2d)   \
    X(avgpool2d) X(global_avgpool) X(flatten) X(basic_block)

#define DECLARE_KIND(name) extern const ars_layer_kind ars_kind_##name;
#define KIND_ADDRESS(name) &ars_kind_##name,
BUILTIN_KINDS(DECLARE_KIND)
static const ars_layer_kind *const builtin_kinds[] = {BUILTIN_KINDS(KIND_ADDRESS)};
enum { BUILTIN_COUNT = sizeof builtin_kinds / sizeof builtin_kinds[0], MAX_REGISTERED = 32 };

/* Kinds registered at run time (ars_layer_kind_register), after the built-in ones. */
static const ars_layer_kind *registered_kinds[MAX_REGISTERED];
static int registered_count;

const ars_layer_kind *ars_layer_kind_at(int i)
{
    if (i < 0) return NULL;
    if (i < BUILTIN_COUNT) return builtin_kinds[i];
    return i - BUILTIN_COUNT < registered_count ? registered_kinds[i - BUILTIN_COUNT] : NULL;
}

const ars_layer_kind *ars_layer_kind_find(const char *name)
{
    const ars_layer_kind *kind;
    for (int i = 0; name && (kind = ars_layer_kind_at(i)) != NULL; i++)
        if (strcmp(kind->name, name) == 0) return kind;
    return NULL;
}

int ars_layer_kind_register(const ars_layer_kind *kind)
{
    if (!kind || !kind->name || !kind->size || !kind->setup)
        return ars_error(ARS_EINVAL, "layer kind: a kind needs a name, a size and a setup function");
    if (strlen(kind->name) >= sizeof(((ars_layer_spec *)0)->kind))
        return ars_error(ARS_EINVAL, "layer kind '%s': names are at most %zu characters", kind->name,
                         sizeof(((ars_layer_spec *)0)->kind) - 1);
    if (ars_layer_kind_find(kind->name))
        return ars_error(ARS_EINVAL, "layer kind '%s' is already registered", kind->name);
    if (registered_count == MAX_REGISTERED)
        return ars_error(ARS_ENOMEM, "layer kind '%s': at most %d kinds can be registered", kind->name,
                         MAX_REGISTERED);
    registered_kinds[registered_count++] = kind;
    return 0;
}

int ars_layer_kind_has(const char *name, unsigned flag)
{
    const ars_layer_kind *kind = ars_layer_kind_find(name);
    return kind && (kind->flags & flag) != 0;
}

void ars_layer_spec_defaults(ars_layer_spec *spec, const char *kind)
{
    memset(spec, 0, sizeof *spec);
    strncpy(spec->kind, kind, sizeof spec->kind - 1);
    spec->alpha = 1.0f;
    spec->momentum = 0.1f;
    spec->eps = 1e-5f;
    spec->sync = 1;
    spec->rate = 0.5f;
    spec->bias = 1;
    strcpy(spec->init_mode, "fan_in");
    spec->heads = 1;
    strcpy(spec->encoding, "learned");
    spec->stride[0] = spec->stride[1] = 1;
    spec->dilation[0] = spec->dilation[1] = 1;
    spec->groups = 1;
    const ars_layer_kind *entry = ars_layer_kind_find(kind);
    if (entry && entry->defaults) entry->defaults(spec);
}

/* A sequence layer without its own `time` takes the steps of its input
 * [time, features]; with one, its input is read as time steps of
 * count / time features (the layer checks that time divides it). */
static ars_layer_spec resolve_time(const ars_layer_kind *kind, const ars_layer_spec *spec, const ars_shape *in)
{
    ars_layer_spec resolved = *spec;
    if ((kind->flags & ARS_KIND_SEQUENCE) && resolved.time <= 0 && in->rank == 2) resolved.time = in->dims[0];
    return resolved;
}

static int size_with(const ars_layer_kind *kind, const ars_layer_spec *spec, const ars_shape *in,
                     const ars_shape *skip, int max_rows, ars_layer_size *size)
{
    memset(size, 0, sizeof *size);
    if (!kind) return ars_error(ARS_EINVAL, "unknown layer kind '%s'", spec->kind);
    char text[48];
    if (in->rank < 1 || in->rank > ARS_SHAPE_MAX_RANK || !(ars_shape_count(in) >= 1) ||
        ars_shape_count(in) > INT_MAX)
        return ars_error(ARS_EINVAL, "layer '%s' gets inputs of shape %s", spec->kind,
                         ars_shape_text(in, text, sizeof text));
    int rc = kind->size(spec, in, skip, max_rows > 0 ? max_rows : 0, size);
    if (rc) return rc;
    const double out = ars_shape_count(&size->out);
    if (size->out.rank < 1 || size->out.rank > ARS_SHAPE_MAX_RANK || !(out >= 1))
        return ars_error(ARS_EINVAL, "internal: layer '%s' gives outputs of shape %s", spec->kind,
                         ars_shape_text(&size->out, text, sizeof text));
    if (out > INT_MAX)
        return ars_error(ARS_EINVAL, "[%s] gives %s = %.0f values per sample, more than %d", spec->kind,
                         ars_shape_text(&size->out, text, sizeof text), out, INT_MAX);
    size->out_dim = (int)out;
    /* past these no size_t holds the bytes (the setup casts them) */
    if (size->params > 0x1p60 || size->state > 0x1p60 || size->workspace > 0x1p62)
        return ars_error(ARS_ENOMEM, "[%s] needs %.3g parameters and %.3g bytes of workspace: more than memory "
                         "can address", spec->kind, size->params + size->state, size->workspace);
    return 0;
}

int ars_layer_size_of(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                      ars_layer_size *size)
{
    const ars_layer_kind *kind = ars_layer_kind_find(spec->kind);
    ars_layer_spec resolved = kind ? resolve_time(kind, spec, in) : *spec;
    return size_with(kind, &resolved, in, skip, max_rows, size);
}

int ars_layer_setup(ars_layer *layer, const ars_layer_spec *spec, const ars_shape *in, int max_rows)
{
    ars_layer_size size;
    const ars_layer_kind *kind = ars_layer_kind_find(spec->kind);
    ars_layer_spec resolved = kind ? resolve_time(kind, spec, in) : *spec;
    /* the end of a residual block: its start (earlier in the same layer array) is set up */
    const ars_shape *skip = layer->partner && layer->partner < layer ? &layer->partner->in_shape : NULL;
    int rc = size_with(kind, &resolved, in, skip, max_rows, &size);
    if (rc) return rc;
    layer->kind = kind;
    layer->spec = resolved;
    layer->in_shape = *in;
    layer->in_dim = (int)ars_shape_count(in);
    layer->out_shape = size.out;
    layer->out_dim = size.out_dim;
    layer->max_rows = max_rows;
    rc = kind->setup(layer, &size);
    if (rc) return rc;
    /* the estimate of a model is only as good as this agreement */
    if ((double)layer->param_size != size.params || (double)layer->state_size != size.state)
        return ars_error(ARS_EINVAL, "internal: layer '%s' set up %zu parameters, %zu state but its size "
                         "function says %.0f, %.0f", spec->kind, layer->param_size, layer->state_size,
                         size.params, size.state);
    return 0;
}

void ars_tensor_fans(const ars_tensor_view *view, int *fan_in, int *fan_out)
{
    const ars_shape *s = &view->shape;
    if (s->rank < 2) {
        *fan_in = s->rank == 1 ? s->dims[0] : 1;
        *fan_out = 1;
        return;
    }
    double receptive = 1;
    for (int i = 2; i < s->rank; i++) receptive *= s->dims[i];
    *fan_in = (int)(s->dims[1] * receptive);
    *fan_out = (int)(s->dims[0] * receptive);
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

static void add_view(ars_tensor_view *views, int *count, size_t *size, const char *name, ars_shape shape,
                     ars_role role)
{
    ars_tensor_view *v = &views[(*count)++];
    memset(v, 0, sizeof *v);
    strncpy(v->name, name, sizeof v->name - 1);
    v->shape = shape;
    v->offset = *size;
    v->count = (size_t)ars_shape_count(&shape);
    v->role = role;
    *size += v->count;
}

void ars_layer_add_param(ars_layer *layer, const char *name, ars_shape shape, ars_role role)
{
    add_view(layer->params, &layer->param_count, &layer->param_size, name, shape, role);
}

void ars_layer_add_buffer(ars_layer *layer, const char *name, ars_shape shape, ars_role role)
{
    add_view(layer->buffers, &layer->buffer_count, &layer->state_size, name, shape, role);
}

ars_activation ars_activation_from_name(const char *name)
{
    const ars_layer_kind *kind = ars_layer_kind_find(name);
    return kind ? kind->activation : ARS_ACT_NONE;
}
