/* ckpt: the HDF5 checkpoint writer and reader (format 2, see
 * docs/checkpoint-format.md). Writing is atomic: a temporary file next to
 * the target, fsync, rename, fsync of the directory. HDF5 writes the file
 * through our sink driver (ckpt_sink.c), which keeps a write error to itself
 * so that libhdf5 always closes the file cleanly (a full disk made 1.10.8
 * crash at exit, F1) and we report it. Reading validates the format, the
 * version, and every tensor's presence, type and shape; ars_ckpt_validate
 * first runs the whole reader in a child process with limits, so that a
 * crash or hang of libhdf5 on a corrupted file becomes an error. */
#define _POSIX_C_SOURCE 200809L
#include "arsenal/ckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "arsenal/error.h"
#include "ckpt_io.h"
#include "ckpt_sink.h"
#include "gemm.h"
#include "isolate.h"
#include "simd.h"

static int write_gemm_tuning(hid_t group, const ars_model *model);

/* Set when a failed HDF5 call could not allocate memory: the checking
 * child reports it as its memory limit reached. */
static int hdf5_out_of_memory;

static herr_t note_allocation_failure(unsigned depth, const H5E_error2_t *error, void *data)
{
    (void)depth;
    (void)data;
    if (error->min_num == H5E_CANTALLOC || error->min_num == H5E_NOSPACE) hdf5_out_of_memory = 1;
    return 0;
}

static herr_t on_hdf5_error(hid_t stack, void *data)
{
    (void)data;
    H5Ewalk2(stack, H5E_WALK_DOWNWARD, note_allocation_failure, NULL);
    return 0;
}

static int checking_child;   /* this process is the child of ars_ckpt_validate */

/* HDF5 prints its error stack by default; arsenal reports its own. The
 * checking child looks for allocation failures in it (only there: walking
 * the stack from the handler leaves an HDF5 id behind on some corrupted
 * files, which libhdf5 complains about at exit; the child leaves by _exit). */
static void quiet_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, checking_child ? on_hdf5_error : NULL, NULL); }

/* A tensor is stored in its own shape: a vector 1-D, a dense weight [out,
 * in], a convolution's [out, in / groups, kh, kw]. */
static void view_dims(const ars_tensor_view *view, int *rank, hsize_t dims[ARS_SHAPE_MAX_RANK])
{
    *rank = view->shape.rank;
    for (int i = 0; i < view->shape.rank; i++) dims[i] = (hsize_t)view->shape.dims[i];
}

/* ---- float tensors, written chunk by chunk ---------------------------------- */

/* Fletcher-32 exactly as HDF5's filter computes it (H5_checksum_fletcher32:
 * big-endian 16-bit words, both sums folded every 360 words). Within a
 * block the two sums are plain integer sums (sum2 gains n * sum1 plus each
 * word weighted by how many steps it stays in sum1), which vectorize and
 * give the same bits in any order. */
ARS_VECTOR_CLONES
static uint32_t fletcher32(const unsigned char *data, size_t length)
{
    uint32_t sum1 = 0, sum2 = 0;
    for (size_t words = length / 2; words > 0;) {
        uint32_t n = words < 360 ? (uint32_t)words : 360, plain = 0, weighted = 0;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t word = (uint32_t)data[2 * i] << 8 | data[2 * i + 1];
            plain += word;
            weighted += (n - i) * word;
        }
        sum2 += n * sum1 + weighted;
        sum1 += plain;
        sum1 = (sum1 & 0xffff) + (sum1 >> 16);
        sum2 = (sum2 & 0xffff) + (sum2 >> 16);
        data += 2 * (size_t)n;
        words -= n;
    }
    if (length % 2) {
        sum1 += (uint32_t)*data << 8;
        sum2 += sum1;
        sum1 = (sum1 & 0xffff) + (sum1 >> 16);
        sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    }
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    return sum2 << 16 | sum1;
}

/* One chunk and its checksum, reused from chunk to chunk. */
typedef struct chunk_buffer {
    unsigned char *bytes;
    size_t size;
} chunk_buffer;

/* A float32 tensor as ars_h5_write_floats (ckpt_io.c) stores it: the same
 * chunks (about 1 MiB, whole rows) with the Fletcher-32 filter, so readers
 * see no difference. But each chunk is checksummed here and handed to HDF5
 * as stored (H5Dwrite_chunk): its filter pipeline allocates, zeroes and
 * copies every chunk twice, in fresh memory the kernel must fault in, a
 * fifth of the time of a large checkpoint. Where float is not IEEE
 * little-endian in memory, the pipeline does it. */
static int write_floats(hid_t group, const char *name, int rank, const hsize_t *dims, const float *data,
                        chunk_buffer *buffer)
{
    if (H5Tequal(H5T_NATIVE_FLOAT, H5T_IEEE_F32LE) <= 0) return ars_h5_write_floats(group, name, rank, dims, data);
    hsize_t chunk[ARS_SHAPE_MAX_RANK], row = 1;
    for (int i = 1; i < rank; i++) row *= dims[i];
    ars_h5_float_chunk(rank, dims, chunk);
    size_t row_bytes = sizeof(float) * (size_t)row, chunk_bytes = row_bytes * (size_t)chunk[0];
    if (buffer->size < chunk_bytes + 4) {
        unsigned char *bytes = realloc(buffer->bytes, chunk_bytes + 4);
        if (!bytes) return ars_error(ARS_ENOMEM, "checkpoint: out of memory for a chunk of '%s'", name);
        buffer->bytes = bytes;
        buffer->size = chunk_bytes + 4;
    }
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
    hid_t set = space < 0 || plist < 0 || H5Pset_chunk(plist, rank, chunk) < 0 || H5Pset_fletcher32(plist) < 0
                    ? -1
                    : H5Dcreate2(group, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, plist, H5P_DEFAULT);
    herr_t status = set < 0 ? -1 : 0;
    /* no chunk at all for an empty tensor, as H5Dwrite writes none */
    for (hsize_t first = 0; status >= 0 && row_bytes > 0 && first < dims[0]; first += chunk[0]) {
        hsize_t rows = dims[0] - first < chunk[0] ? dims[0] - first : chunk[0];
        memcpy(buffer->bytes, data + first * row, row_bytes * (size_t)rows);
        /* a partial last chunk is stored whole, the rest zero (the fill value) */
        memset(buffer->bytes + row_bytes * (size_t)rows, 0, chunk_bytes - row_bytes * (size_t)rows);
        uint32_t sum = fletcher32(buffer->bytes, chunk_bytes);
        for (int k = 0; k < 4; k++) buffer->bytes[chunk_bytes + (size_t)k] = (unsigned char)(sum >> (8 * k));
        hsize_t offset[ARS_SHAPE_MAX_RANK] = {first};
        status = H5Dwrite_chunk(set, H5P_DEFAULT, 0, offset, chunk_bytes + 4, buffer->bytes);
    }
    if (set >= 0) H5Dclose(set);
    if (plist >= 0) H5Pclose(plist);
    if (space >= 0) H5Sclose(space);
    return status < 0 ? ars_error(ARS_EIO, "cannot write dataset '%s'", name) : 0;
}

/* Writes every tensor of every layer from base (a flat buffer laid out like
 * the parameters, or the state) into /<root>/<layer>/<tensor>. */
static int write_tensors(hid_t file, const char *root, const ars_model *model, const float *params,
                         const float *state, int with_attrs, chunk_buffer *buffer)
{
    hid_t top = H5Gcreate2(file, root, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (top < 0) return ars_error(ARS_EIO, "cannot create group %s", root);
    int rc = 0;
    for (int l = 0; l < model->layer_count && !rc; l++) {
        const ars_layer *layer = &model->layers[l];
        if (!with_attrs && layer->param_count == 0) continue;
        hid_t group = H5Gcreate2(top, layer->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (group < 0) {
            rc = ars_error(ARS_EIO, "cannot create group %s/%s", root, layer->name);
            break;
        }
        if (with_attrs) {
            int32_t index = layer->index, in = layer->in_dim, out = layer->out_dim;
            rc = ars_h5_attr_write_string(group, "kind", layer->spec.kind);
            if (!rc) rc = ars_h5_attr_write(group, "index", H5T_NATIVE_INT32, &index);
            if (!rc) rc = ars_h5_attr_write(group, "in_dim", H5T_NATIVE_INT32, &in);
            if (!rc) rc = ars_h5_attr_write(group, "out_dim", H5T_NATIVE_INT32, &out);
            int32_t tuning = layer->tuning;   /* what setup measured (conv2d's layout), for the same rounding */
            if (!rc && tuning) rc = ars_h5_attr_write(group, "tuning", H5T_NATIVE_INT32, &tuning);
        }
        for (int p = 0; p < layer->param_count && !rc; p++) {
            int rank;
            hsize_t dims[ARS_SHAPE_MAX_RANK];
            view_dims(&layer->params[p], &rank, dims);
            rc = write_floats(group, layer->params[p].name, rank, dims,
                              params + layer->param_offset + layer->params[p].offset, buffer);
        }
        for (int b = 0; state && b < layer->buffer_count && !rc; b++) {
            int rank;
            hsize_t dims[ARS_SHAPE_MAX_RANK];
            view_dims(&layer->buffers[b], &rank, dims);
            rc = write_floats(group, layer->buffers[b].name, rank, dims,
                              state + layer->state_offset + layer->buffers[b].offset, buffer);
        }
        H5Gclose(group);
    }
    if (!rc && with_attrs) rc = write_gemm_tuning(top, model);
    H5Gclose(top);
    return rc;
}

static int write_optimizer(hid_t file, const ars_model *model, const ars_optimizer *opt, chunk_buffer *buffer)
{
    hid_t group = H5Gcreate2(file, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (group < 0) return ars_error(ARS_EIO, "cannot create group /optimizer");
    const ars_optim_config *c = &opt->config;
    double lr = c->lr, momentum = c->momentum, wd = c->weight_decay, b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    int32_t nesterov = c->nesterov;
    int64_t step = opt->step;
    int rc = ars_h5_attr_write_string(group, "kind", ars_optimizer_name(c->kind));
    if (!rc) rc = ars_h5_attr_write(group, "lr", H5T_NATIVE_DOUBLE, &lr);
    if (!rc) rc = ars_h5_attr_write(group, "momentum", H5T_NATIVE_DOUBLE, &momentum);
    if (!rc) rc = ars_h5_attr_write(group, "nesterov", H5T_NATIVE_INT32, &nesterov);
    if (!rc) rc = ars_h5_attr_write(group, "weight_decay", H5T_NATIVE_DOUBLE, &wd);
    if (!rc) rc = ars_h5_attr_write(group, "beta1", H5T_NATIVE_DOUBLE, &b1);
    if (!rc) rc = ars_h5_attr_write(group, "beta2", H5T_NATIVE_DOUBLE, &b2);
    if (!rc) rc = ars_h5_attr_write(group, "eps", H5T_NATIVE_DOUBLE, &eps);
    if (!rc) rc = ars_h5_attr_write(group, "step", H5T_NATIVE_INT64, &step);
    if (!rc && opt->m) rc = write_tensors(group, "m", model, opt->m, NULL, 0, buffer);
    if (!rc && opt->v) rc = write_tensors(group, "v", model, opt->v, NULL, 0, buffer);
    H5Gclose(group);
    return rc;
}

static int write_history(hid_t file, const ars_history *h)
{
    hid_t group = H5Gcreate2(file, "history", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (group < 0) return ars_error(ARS_EIO, "cannot create group /history");
    const size_t T = h->count, L = (size_t)h->layer_count;
    int rc = 0;
    const char **names = calloc(L ? L : 1, sizeof *names);
    int64_t *steps = malloc(sizeof(int64_t) * (T ? T : 1));
    int32_t *ints = malloc(sizeof(int32_t) * (T ? T : 1));
    double *values = malloc(sizeof(double) * (T ? T : 1) * (L ? L : 1));
    if (!names || !steps || !ints || !values) rc = ars_error(ARS_ENOMEM, "checkpoint: out of memory");
    hsize_t dims[3] = {T, L, 0};
    for (size_t l = 0; !rc && l < L; l++) names[l] = h->layer_names[l];
    if (!rc) rc = ars_h5_write_strings(group, "layer_names", names, L);
    for (size_t t = 0; !rc && t < T; t++) steps[t] = h->steps[t].step;
    if (!rc) rc = ars_h5_write_series(group, "step", H5T_NATIVE_INT64, 1, dims, steps);
    for (size_t t = 0; !rc && t < T; t++) ints[t] = h->steps[t].epoch;
    if (!rc) rc = ars_h5_write_series(group, "epoch", H5T_NATIVE_INT32, 1, dims, ints);
    for (size_t t = 0; !rc && t < T; t++) ints[t] = h->steps[t].nonfinite;
    if (!rc) rc = ars_h5_write_series(group, "nonfinite", H5T_NATIVE_INT32, 1, dims, ints);
    for (size_t t = 0; !rc && t < T; t++) ints[t] = h->steps[t].skipped;
    if (!rc) rc = ars_h5_write_series(group, "skipped", H5T_NATIVE_INT32, 1, dims, ints);
    static const char *const scalar_names[] = {"loss", "lr", "grad_norm", "clip_scale"};
    for (int k = 0; k < 4 && !rc; k++) {
        for (size_t t = 0; t < T; t++) {
            const ars_history_step *s = &h->steps[t];
            values[t] = k == 0 ? s->loss : k == 1 ? s->lr : k == 2 ? s->grad_norm : s->clip_scale;
        }
        rc = ars_h5_write_series(group, scalar_names[k], H5T_NATIVE_DOUBLE, 1, dims, values);
    }
    for (int c = 0; c < ARS_HIST_LAYER_COLUMNS && !rc; c++) {
        for (size_t t = 0; t < T; t++)
            memcpy(values + t * L, ars_history_layer_values(h, t) + (size_t)c * L, sizeof(double) * L);
        rc = ars_h5_write_series(group, ars_history_column_names[c], H5T_NATIVE_DOUBLE, 2, dims, values);
    }
    /* histograms */
    if (!rc && h->bins > 0) {
        hsize_t hdims[3] = {h->hist_count, L, (hsize_t)h->bins};
        rc = ars_h5_write_series(group, "hist_step", H5T_NATIVE_INT64, 1, hdims, h->hist_steps);
        if (!rc) rc = ars_h5_write_series(group, "hist_counts", H5T_NATIVE_UINT32, 3, hdims, h->hist_counts);
        double *edges = malloc(sizeof(double) * (size_t)(h->bins + 1));
        if (!rc && !edges) rc = ars_error(ARS_ENOMEM, "checkpoint: out of memory");
        for (int b = 0; !rc && b <= h->bins; b++)
            edges[b] = h->hist_low + (h->hist_high - h->hist_low) * b / h->bins;
        hsize_t edims[1] = {(hsize_t)h->bins + 1};
        if (!rc) rc = ars_h5_write_series(group, "hist_edges", H5T_NATIVE_DOUBLE, 1, edims, edges);
        free(edges);
    }
    /* evaluations */
    const size_t E = h->eval_count;
    hsize_t edims[1] = {E};
    int64_t *esteps = malloc(sizeof(int64_t) * (E ? E : 1));
    int32_t *eepochs = malloc(sizeof(int32_t) * (E ? E : 1));
    double *evalues = malloc(sizeof(double) * (E ? E : 1));
    if (!rc && (!esteps || !eepochs || !evalues)) rc = ars_error(ARS_ENOMEM, "checkpoint: out of memory");
    for (size_t e = 0; !rc && e < E; e++) {
        esteps[e] = h->evals[e].step;
        eepochs[e] = h->evals[e].epoch;
    }
    if (!rc) rc = ars_h5_write_series(group, "eval_step", H5T_NATIVE_INT64, 1, edims, esteps);
    if (!rc) rc = ars_h5_write_series(group, "eval_epoch", H5T_NATIVE_INT32, 1, edims, eepochs);
    static const char *const eval_names[] = {"eval_train_loss", "eval_test_loss", "eval_test_accuracy"};
    for (int k = 0; k < 3 && !rc; k++) {
        for (size_t e = 0; e < E; e++)
            evalues[e] = k == 0 ? h->evals[e].train_loss : k == 1 ? h->evals[e].test_loss : h->evals[e].test_accuracy;
        rc = ars_h5_write_series(group, eval_names[k], H5T_NATIVE_DOUBLE, 1, edims, evalues);
    }
    if (!rc) rc = ars_h5_write_strings(group, "events", (const char *const *)h->events, h->event_count);
    if (!rc && h->time_layer_count > 0) {
        hid_t time_group = H5Gcreate2(group, "time_grad_norm", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (time_group < 0) rc = ars_error(ARS_EIO, "cannot create group /history/time_grad_norm");
        for (int k = 0; !rc && k < h->time_layer_count; k++) {
            hsize_t tdims[2] = {T, (hsize_t)h->time_steps[k]};
            rc = ars_h5_write_series(time_group, h->layer_names[h->time_layer[k]], H5T_NATIVE_DOUBLE, 2, tdims,
                                     h->time_values[k]);
        }
        if (time_group >= 0) H5Gclose(time_group);
    }
    free(esteps);
    free(eepochs);
    free(evalues);
    free(names);
    free(steps);
    free(ints);
    free(values);
    H5Gclose(group);
    return rc;
}

/* /health/cures: one entry per automatic cure (health.cure = apply), as
 * parallel datasets like /history. Only written when there is one, so the
 * files of runs without a cure are unchanged. */
static int write_cures(hid_t file, const ars_history *h)
{
    const size_t C = h->cure_count;
    if (C == 0) return 0;
    hid_t health = H5Gcreate2(file, "health", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t group = health < 0 ? -1 : H5Gcreate2(health, "cures", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = group < 0 ? ars_error(ARS_EIO, "cannot create group /health/cures") : 0;
    int64_t *steps = malloc(sizeof(int64_t) * C * 2);
    const char **texts = malloc(sizeof(char *) * C);
    if (!rc && (!steps || !texts)) rc = ars_error(ARS_ENOMEM, "checkpoint: out of memory");
    hsize_t dims[1] = {C};
    for (size_t c = 0; !rc && c < C; c++) {
        steps[c] = h->cures[c].step;
        steps[C + c] = h->cures[c].rollback_step;
    }
    if (!rc) rc = ars_h5_write_series(group, "step", H5T_NATIVE_INT64, 1, dims, steps);
    if (!rc) rc = ars_h5_write_series(group, "rollback_step", H5T_NATIVE_INT64, 1, dims, steps + C);
    for (int k = 0; k < 5 && !rc; k++) {
        static const char *const names[] = {"rule", "layer", "change", "settings", "status"};
        for (size_t c = 0; c < C; c++) {
            const ars_history_cure *cure = &h->cures[c];
            texts[c] = k == 0 ? cure->rule : k == 1 ? cure->layer : k == 2 ? cure->change : k == 3 ? cure->settings
                                                                                             : cure->status;
        }
        rc = ars_h5_write_strings(group, names[k], texts, C);
    }
    free(steps);
    free(texts);
    if (group >= 0) H5Gclose(group);
    if (health >= 0) H5Gclose(health);
    return rc;
}

/* Reads /health/cures into h when the file has it (files without a cure,
 * and files written before cures existed, have none). */
static int read_cures(hid_t file, const char *path, ars_history *h)
{
    if (H5Lexists(file, "health", H5P_DEFAULT) <= 0) return 0;
    hid_t health = H5Gopen2(file, "health", H5P_DEFAULT);
    if (health < 0) return ars_error(ARS_EFORMAT, "%s:/health cannot be opened", path);
    if (H5Lexists(health, "cures", H5P_DEFAULT) <= 0) {
        H5Gclose(health);
        return 0;
    }
    hid_t group = H5Gopen2(health, "cures", H5P_DEFAULT);
    const char *where = "/health/cures";
    int rc = group < 0 ? ars_error(ARS_EFORMAT, "%s:/health/cures cannot be opened", path) : 0;
    void *raw[2] = {NULL, NULL};
    hsize_t dims[2][1] = {{0}, {0}};
    char **texts[5] = {NULL};
    size_t counts[5] = {0};
    static const char *const names[] = {"rule", "layer", "change", "settings", "status"};
    if (!rc) rc = ars_h5_read_series(group, where, "step", H5T_NATIVE_INT64, 1, dims[0], &raw[0]);
    if (!rc) rc = ars_h5_read_series(group, where, "rollback_step", H5T_NATIVE_INT64, 1, dims[1], &raw[1]);
    for (int k = 0; k < 5 && !rc; k++) rc = ars_h5_read_strings(group, where, names[k], &texts[k], &counts[k]);
    const size_t C = rc ? 0 : (size_t)dims[0][0];
    if (!rc && (dims[1][0] != C || counts[0] != C || counts[1] != C || counts[2] != C || counts[3] != C ||
                counts[4] != C))
        rc = ars_error(ARS_EFORMAT, "%s:/health/cures: its datasets have different lengths (corrupted file)", path);
    for (size_t c = 0; !rc && c < C; c++) {
        ars_history_cure cure = {.step = ((int64_t *)raw[0])[c], .rollback_step = ((int64_t *)raw[1])[c],
                                 .change = texts[2][c], .settings = texts[3][c]};
        snprintf(cure.rule, sizeof cure.rule, "%s", texts[0][c]);
        snprintf(cure.layer, sizeof cure.layer, "%s", texts[1][c]);
        snprintf(cure.status, sizeof cure.status, "%s", texts[4][c]);
        rc = ars_history_add_cure(h, &cure);
    }
    for (int k = 0; k < 5; k++) {
        for (size_t c = 0; c < counts[k]; c++) free(texts[k][c]);
        free(texts[k]);
    }
    free(raw[0]);
    free(raw[1]);
    if (group >= 0) H5Gclose(group);
    H5Gclose(health);
    return rc;
}

/* The model's input shape, one int32 per dimension (root attribute
 * input_shape): what a model rebuilt from the file is built for. */
static int write_input_shape(hid_t file, const ars_shape *shape)
{
    int32_t dims[ARS_SHAPE_MAX_RANK];
    hsize_t rank = (hsize_t)shape->rank;
    for (int i = 0; i < shape->rank; i++) dims[i] = shape->dims[i];
    hid_t space = H5Screate_simple(1, &rank, NULL);
    hid_t attr = space < 0 ? -1 : H5Acreate2(file, "input_shape", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t status = attr < 0 ? -1 : H5Awrite(attr, H5T_NATIVE_INT32, dims);
    if (attr >= 0) H5Aclose(attr);
    if (space >= 0) H5Sclose(space);
    return status < 0 ? ars_error(ARS_EIO, "cannot write attribute 'input_shape'") : 0;
}

/* input_shape, when the file has it (files before it leave shape->rank 0):
 * 1 to ARS_SHAPE_MAX_RANK integers, each in 1 .. 2^24. */
static int read_input_shape(hid_t file, const char *path, ars_shape *shape)
{
    memset(shape, 0, sizeof *shape);
    if (H5Aexists(file, "input_shape") <= 0) return 0;
    hid_t attr = H5Aopen(file, "input_shape", H5P_DEFAULT);
    hid_t space = attr < 0 ? -1 : H5Aget_space(attr);
    hid_t type = attr < 0 ? -1 : H5Aget_type(attr);
    hssize_t n = space >= 0 && H5Sget_simple_extent_ndims(space) == 1 ? H5Sget_simple_extent_npoints(space) : -1;
    int32_t dims[ARS_SHAPE_MAX_RANK] = {0};
    herr_t status = type >= 0 && H5Tget_class(type) == H5T_INTEGER && n >= 1 && n <= ARS_SHAPE_MAX_RANK
                        ? H5Aread(attr, H5T_NATIVE_INT32, dims)
                        : -1;
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (attr >= 0) H5Aclose(attr);
    for (int i = 0; status >= 0 && i < n; i++)
        if (dims[i] < 1 || dims[i] > (1 << 24)) status = -1;
    if (status < 0)
        return ars_error(ARS_EFORMAT, "%s: attribute 'input_shape' is not 1 to %d dimensions of 1 to 2^24 (corrupted "
                         "file?)", path, ARS_SHAPE_MAX_RANK);
    shape->rank = (int)n;
    for (int i = 0; i < n; i++) shape->dims[i] = dims[i];
    return 0;
}

/* The layouts the model's matrix products ran in (src/gemm.h), as the
 * /model attribute gemm_tuning: int32 [products, 10], a row per product
 * (trans_a, trans_b, m, n, k, lda, ldb, ldc, beta_zero, layout). None when
 * the run did not tune them (run.gemm_tuning = off: every product as asked). */
static int write_gemm_tuning(hid_t group, const ars_model *model)
{
    if (!model->gemm_plan_count) return 0;
    int32_t *rows = malloc(sizeof(int32_t) * ARS_GEMM_CHOICE_FIELDS * (size_t)model->gemm_plan_count);
    if (!rows) return ars_error(ARS_ENOMEM, "out of memory");
    for (int i = 0; i < model->gemm_plan_count; i++)
        memcpy(rows + (size_t)i * ARS_GEMM_CHOICE_FIELDS, &model->gemm_plan[i], sizeof(int32_t) * ARS_GEMM_CHOICE_FIELDS);
    hsize_t dims[2] = {(hsize_t)model->gemm_plan_count, ARS_GEMM_CHOICE_FIELDS};
    hid_t space = H5Screate_simple(2, dims, NULL);
    hid_t attr = space < 0 ? -1 : H5Acreate2(group, "gemm_tuning", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t status = attr < 0 ? -1 : H5Awrite(attr, H5T_NATIVE_INT32, rows);
    if (attr >= 0) H5Aclose(attr);
    if (space >= 0) H5Sclose(space);
    free(rows);
    return status < 0 ? ars_error(ARS_EIO, "cannot write attribute /model gemm_tuning") : 0;
}

/* A resumed run computes every product in the layout the checkpoint's run
 * did, for the same rounding: the rows of /model gemm_tuning that match a
 * product of this model give its layout; without the attribute (a run with
 * gemm_tuning = off, or a file from before it) every product runs as asked.
 * Into layouts[model->gemm_plan_count], applied when the whole load succeeds. */
static int read_gemm_tuning(hid_t file, const char *path, const ars_model *model, int32_t *layouts)
{
    for (int i = 0; i < model->gemm_plan_count; i++) layouts[i] = ARS_GEMM_AS_ASKED;
    hid_t group = H5Gopen2(file, "model", H5P_DEFAULT);
    if (group < 0) return ars_error(ARS_EFORMAT, "%s: group /model is missing", path);
    if (H5Aexists(group, "gemm_tuning") <= 0) {
        H5Gclose(group);
        return 0;
    }
    hid_t attr = H5Aopen(group, "gemm_tuning", H5P_DEFAULT);
    hid_t space = attr < 0 ? -1 : H5Aget_space(attr);
    hid_t type = attr < 0 ? -1 : H5Aget_type(attr);
    hsize_t dims[2] = {0, 0};
    int ok = space >= 0 && type >= 0 && H5Tget_class(type) == H5T_INTEGER &&
             H5Sget_simple_extent_ndims(space) == 2 && H5Sget_simple_extent_dims(space, dims, NULL) == 2 &&
             dims[1] == ARS_GEMM_CHOICE_FIELDS && dims[0] >= 1 && dims[0] <= 1000000;
    ars_gemm_choice *rows = ok ? malloc(sizeof *rows * (size_t)dims[0]) : NULL;
    int rc = !ok ? ars_error(ARS_EFORMAT, "%s: /model attribute gemm_tuning is not an integer array [products, %d] "
                             "(corrupted file?)", path, ARS_GEMM_CHOICE_FIELDS)
             : !rows ? ars_error(ARS_ENOMEM, "out of memory")
             : H5Aread(attr, H5T_NATIVE_INT32, rows) < 0 ? ars_error(ARS_EFORMAT, "%s: cannot read /model attribute "
                                                                     "gemm_tuning", path)
                                                         : 0;
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (attr >= 0) H5Aclose(attr);
    H5Gclose(group);
    for (hsize_t r = 0; !rc && r < dims[0]; r++) {
        /* a valid row, then its layout where this model makes the product */
        const ars_gemm_choice *row = &rows[r];
        char shape[96];
        snprintf(shape, sizeof shape, "trans %d %d, m n k %d %d %d, ld %d %d %d", (int)row->trans_a,
                 (int)row->trans_b, (int)row->m, (int)row->n, (int)row->k, (int)row->lda, (int)row->ldb,
                 (int)row->ldc);
        if (row->trans_a < 0 || row->trans_a > 1 || row->trans_b < 0 || row->trans_b > 1 || row->beta_zero < 0 ||
            row->beta_zero > 1 || row->m < 1 || row->n < 1 || row->k < 1 || row->layout < 0 ||
            row->layout >= ARS_GEMM_LAYOUTS) {
            rc = ars_error(ARS_EFORMAT, "%s: /model attribute gemm_tuning row %d (%s, beta_zero %d, layout %d): "
                           "expected flags and beta_zero 0 or 1, sizes >= 1, a layout 0 to %d", path, (int)r, shape,
                           (int)row->beta_zero, (int)row->layout, ARS_GEMM_LAYOUTS - 1);
            break;
        }
        for (int i = 0; i < model->gemm_plan_count; i++) {
            const ars_gemm_choice *p = &model->gemm_plan[i];
            if (p->trans_a == row->trans_a && p->trans_b == row->trans_b && p->m == row->m && p->n == row->n &&
                p->k == row->k && p->lda == row->lda && p->ldb == row->ldb && p->ldc == row->ldc &&
                p->beta_zero == row->beta_zero)
                layouts[i] = row->layout;
        }
    }
    free(rows);
    return rc;
}

static int write_root(hid_t file, const ars_model *model, const ars_ckpt_state *s)
{
    char created[40];
    time_t now = time(NULL);
    struct tm utc;
    gmtime_r(&now, &utc);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &utc);
    int32_t version = ARS_CKPT_FORMAT_VERSION, epoch = s->epoch, spe = s->steps_per_epoch, world = s->world_size,
            batch = s->global_batch;
    int64_t step = s->step, params = (int64_t)model->param_count, nonfinite = s->nonfinite_steps;
    uint64_t seed = s->seed;
    TRY(ars_h5_attr_write_string(file, "format", ARS_CKPT_FORMAT));
    TRY(ars_h5_attr_write(file, "format_version", H5T_NATIVE_INT32, &version));
    TRY(ars_h5_attr_write_string(file, "arsenal_version", ARSENAL_VERSION));
    TRY(ars_h5_attr_write_string(file, "created", created));
    TRY(ars_h5_attr_write(file, "step", H5T_NATIVE_INT64, &step));
    TRY(ars_h5_attr_write(file, "epoch", H5T_NATIVE_INT32, &epoch));
    TRY(ars_h5_attr_write(file, "steps_per_epoch", H5T_NATIVE_INT32, &spe));
    TRY(ars_h5_attr_write(file, "world_size", H5T_NATIVE_INT32, &world));
    TRY(ars_h5_attr_write(file, "global_batch", H5T_NATIVE_INT32, &batch));
    TRY(ars_h5_attr_write(file, "seed", H5T_NATIVE_UINT64, &seed));
    TRY(ars_h5_attr_write(file, "param_count", H5T_NATIVE_INT64, &params));
    TRY(ars_h5_attr_write(file, "nonfinite_steps", H5T_NATIVE_INT64, &nonfinite));
    TRY(ars_h5_attr_write(file, "last_loss", H5T_NATIVE_DOUBLE, &s->last_loss));
    TRY(ars_h5_attr_write(file, "test_loss", H5T_NATIVE_DOUBLE, &s->test_loss));
    TRY(ars_h5_attr_write(file, "test_accuracy", H5T_NATIVE_DOUBLE, &s->test_accuracy));
    if (s->has_data_stats) {
        TRY(ars_h5_attr_write(file, "data_mean", H5T_NATIVE_DOUBLE, &s->data_mean));
        TRY(ars_h5_attr_write(file, "data_std", H5T_NATIVE_DOUBLE, &s->data_std));
    }
    TRY(ars_h5_attr_write_string(file, "precision", s->precision ? s->precision : "fp32"));
    if (model->in_shape.rank > 0) TRY(write_input_shape(file, &model->in_shape));
    TRY(ars_h5_write_string(file, "config", s->config_text ? s->config_text : ""));
    hid_t rng = H5Gcreate2(file, "rng", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (rng < 0) return ars_error(ARS_EIO, "cannot create group /rng");
    int rc = ars_h5_attr_write(rng, "seed", H5T_NATIVE_UINT64, &seed);
    if (!rc) rc = ars_h5_attr_write(rng, "step", H5T_NATIVE_INT64, &step);
    H5Gclose(rng);
    return rc;
}

static int fsync_path(const char *path, int directory)
{
    int fd = open(path, directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Why a write of the temporary file failed, as the sink recorded it. */
static int sink_failure(const ars_ckpt_sink *sink, const char *tmp)
{
    const char *operation;
    int error = ars_ckpt_sink_error(sink, &operation);
    const char *hint = error == ENOSPC || error == EDQUOT ? " (disk full?)"
                       : error == EFBIG                  ? " (file size limit reached?)"
                                                         : "";
    return ars_error(ARS_EIO, "cannot %s %s: %s%s", operation, tmp,
                     error == ARS_CKPT_SINK_NO_PROGRESS ? "no progress" : strerror(error), hint);
}

static int writing(int rc, const ars_ckpt_sink *sink) { return !rc && !ars_ckpt_sink_error(sink, NULL); }

int ars_ckpt_write(const char *path, const ars_model *model, const ars_optimizer *opt, const ars_history *history,
                   const ars_ckpt_state *state)
{
    quiet_hdf5();
    char tmp[4096], dir_buffer[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return ars_error(ARS_EINVAL, "checkpoint path too long: %s", path);
    snprintf(dir_buffer, sizeof dir_buffer, "%s", path);
    const char *dir = dirname(dir_buffer);
    /* HDF5 writes into the temporary file through the sink driver
     * (ckpt_sink.c), which never reports a failed write to it: the first
     * error (a full disk) is kept there, later writes are dropped, HDF5
     * closes the file cleanly and we report the error. With its own sec2
     * driver, a full disk left libhdf5 1.10.8 with a file whose close
     * failed, and it crashed at exit closing it again (F1). The temporary
     * file is created first, so that an unwritable directory fails before
     * HDF5 builds anything. */
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0)
        return ars_error(ARS_EIO, "cannot create checkpoint %s: %s (is the directory writable?)", tmp,
                         strerror(errno));
    ars_ckpt_sink *sink = ars_ckpt_sink_create(fd);
    hid_t fapl = sink ? ars_ckpt_sink_fapl(sink) : -1;
    hid_t file = fapl < 0 ? -1 : H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (fapl >= 0) H5Pclose(fapl);
    int rc = !sink ? ars_error(ARS_ENOMEM, "checkpoint: out of memory")
             : file < 0 ? ars_error(ARS_EIO, "cannot create the HDF5 file %s", tmp)
                        : 0;
    /* after a failed write the rest would be dropped: stop at the next part */
    chunk_buffer buffer = {NULL, 0};
    if (writing(rc, sink)) rc = write_root(file, model, state);
    if (writing(rc, sink)) rc = write_tensors(file, "model", model, model->params, model->state, 1, &buffer);
    if (writing(rc, sink)) rc = write_optimizer(file, model, opt, &buffer);
    if (writing(rc, sink)) rc = write_tensors(file, "grad", model, model->grads, NULL, 0, &buffer);
    if (writing(rc, sink) && history) rc = write_history(file, history);
    if (writing(rc, sink) && history) rc = write_cures(file, history);
    free(buffer.bytes);
    /* the driver's close is strong (objects an error path left open are
     * closed too) and its writes cannot fail, so the file is closed here */
    if (file >= 0 && H5Fclose(file) < 0 && !rc) rc = ars_error(ARS_EIO, "cannot close the HDF5 file %s", tmp);
    /* a write error is the cause of any HDF5 error that followed it */
    if (sink && ars_ckpt_sink_error(sink, NULL)) rc = sink_failure(sink, tmp);
    ars_ckpt_sink_release(sink);
    /* HDF5 keeps freed blocks (chunk buffers of this write) on free lists
     * for reuse: give them back rather than hold them between checkpoints */
    H5garbage_collect();
    if (!rc && fsync(fd) != 0)
        rc = ars_error(ARS_EIO, "fsync of %s failed: %s%s", tmp, strerror(errno), errno == ENOSPC ? " (disk full?)" : "");
    if (close(fd) != 0 && !rc)
        rc = ars_error(ARS_EIO, "cannot write %s: %s%s", tmp, strerror(errno), errno == ENOSPC ? " (disk full?)" : "");
    if (!rc && rename(tmp, path) != 0)
        rc = ars_error(ARS_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (rc) {
        unlink(tmp);   /* the previous checkpoint at path is untouched */
        return ars_error_context(rc, "writing checkpoint %s", path);
    }
    fsync_path(dir, 1);   /* make the rename durable */
    return 0;
}

void ars_ckpt_info_free(ars_ckpt_info *info)
{
    free(info->config_text);
    free(info->layer_names);
    free(info->layer_kinds);
    memset(info, 0, sizeof *info);
}

/* ---- which files may be read with variable-length strings ---------------- */

/* Format-1 files hold variable-length strings, which libhdf5 reads trusting
 * lengths and heap addresses from the file (F11-F13). They are read only in
 * the child of ars_ckpt_validate, or after it passed for that very file
 * (same device, inode, size and modification time). */

typedef struct file_identity {
    dev_t device;
    ino_t inode;
    off_t size;
    struct timespec modified;
} file_identity;

static file_identity validated[16];
static unsigned validated_count;

static file_identity identity_of(const struct stat *st)
{
    file_identity id = {st->st_dev, st->st_ino, st->st_size, st->st_mtim};
    return id;
}

static int same_identity(const file_identity *a, const file_identity *b)
{
    return a->device == b->device && a->inode == b->inode && a->size == b->size &&
           a->modified.tv_sec == b->modified.tv_sec && a->modified.tv_nsec == b->modified.tv_nsec;
}

static int was_validated(const struct stat *st)
{
    file_identity id = identity_of(st);
    unsigned count = validated_count < 16 ? validated_count : 16;
    for (unsigned i = 0; i < count; i++)
        if (same_identity(&validated[i], &id)) return 1;
    return 0;
}

/* Opens a checkpoint read-only after checking it is one, of a version this
 * arsenal reads (*version), and sets how its strings may be read. */
static hid_t open_checkpoint(const char *path, int *version, int *rc)
{
    quiet_hdf5();
    struct stat st;
    *rc = 0;
    *version = 0;
    if (stat(path, &st) != 0) {
        *rc = ars_error(ARS_EIO, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        *rc = ars_error(ARS_EIO, "%s: not a regular file", path);
        return -1;
    }
    if (H5Fis_hdf5(path) <= 0) {
        *rc = ars_error(ARS_EFORMAT, "%s: not an HDF5 file (or its header is truncated/corrupted)", path);
        return -1;
    }
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        *rc = ars_error(ARS_EFORMAT, "%s: HDF5 cannot open it (truncated or corrupted file)", path);
        return -1;
    }
    /* The version first: it says how the strings are stored, and no string
     * is read before that is known. */
    int32_t found = 0;
    char format[64] = "";
    if (H5Aexists(file, "format") <= 0 || H5Aexists(file, "format_version") <= 0)
        *rc = ars_error(ARS_EFORMAT, "%s: not an arsenal checkpoint (no root attributes format and format_version)",
                        path);
    if (!*rc) *rc = ars_h5_attr_read(file, path, "format_version", H5T_NATIVE_INT32, &found);
    if (!*rc && (found < ARS_CKPT_FORMAT_VERSION_OLDEST || found > ARS_CKPT_FORMAT_VERSION))
        *rc = ars_error(ARS_EFORMAT, "%s: checkpoint format version %d, this arsenal reads versions %d to %d", path,
                        (int)found, ARS_CKPT_FORMAT_VERSION_OLDEST, ARS_CKPT_FORMAT_VERSION);
    if (!*rc && found == 1 && !checking_child && !was_validated(&st))
        *rc = ars_error(ARS_EFORMAT, "%s: checkpoint format version 1 holds variable-length strings, which libhdf5 "
                        "reads unchecked: it is read only after ars_ckpt_validate checked it in a separate process "
                        "(arsenal train --resume and arsenal inspect do)", path);
    ars_h5_allow_vlen_strings(found == 1);
    if (!*rc) *rc = ars_h5_attr_read_string(file, path, "format", format, sizeof format);
    if (!*rc && strcmp(format, ARS_CKPT_FORMAT) != 0)
        *rc = ars_error(ARS_EFORMAT, "%s: not an arsenal checkpoint (root attribute format is '%s', expected '%s')",
                        path, format, ARS_CKPT_FORMAT);
    if (*rc) {
        H5Fclose(file);
        return -1;
    }
    *version = found;
    return file;
}

static int read_layers(hid_t file, const char *path, ars_ckpt_info *info)
{
    hid_t model = H5Lexists(file, "model", H5P_DEFAULT) > 0 ? H5Gopen2(file, "model", H5P_DEFAULT) : -1;
    if (model < 0) return ars_error(ARS_EFORMAT, "%s: group /model is missing", path);
    H5G_info_t group_info;
    int rc = 0;
    if (H5Gget_info(model, &group_info) < 0 || group_info.nlinks > 1000000) {
        H5Gclose(model);
        return ars_error(ARS_EFORMAT, "%s: /model cannot be listed", path);
    }
    info->layer_count = (int)group_info.nlinks;
    info->layer_names = calloc(group_info.nlinks ? group_info.nlinks : 1, sizeof *info->layer_names);
    info->layer_kinds = calloc(group_info.nlinks ? group_info.nlinks : 1, sizeof *info->layer_kinds);
    if (!info->layer_names || !info->layer_kinds) rc = ars_error(ARS_ENOMEM, "out of memory");
    for (hsize_t i = 0; i < group_info.nlinks && !rc; i++) {
        /* names are NNN_kind: the index order is the name order */
        if (H5Lget_name_by_idx(model, ".", H5_INDEX_NAME, H5_ITER_INC, i, info->layer_names[i],
                               sizeof info->layer_names[i], H5P_DEFAULT) < 0) {
            rc = ars_error(ARS_EFORMAT, "%s: cannot list /model", path);
            break;
        }
        hid_t group = H5Gopen2(model, info->layer_names[i], H5P_DEFAULT);
        if (group < 0) {
            rc = ars_error(ARS_EFORMAT, "%s: /model/%s is not a group", path, info->layer_names[i]);
            break;
        }
        char where[128];
        snprintf(where, sizeof where, "%s:/model/%s", path, info->layer_names[i]);
        rc = ars_h5_attr_read_string(group, where, "kind", info->layer_kinds[i], sizeof info->layer_kinds[i]);
        H5Gclose(group);
    }
    H5Gclose(model);
    return rc;
}

int ars_ckpt_read_info(const char *path, ars_ckpt_info *info)
{
    memset(info, 0, sizeof *info);
    int rc, version;
    hid_t file = open_checkpoint(path, &version, &rc);
    if (file < 0) return rc;
    info->format_version = version;
    int32_t epoch = 0, spe = 0, world = 0, batch = 0;
    rc = ars_h5_attr_read_string(file, path, "arsenal_version", info->arsenal_version, sizeof info->arsenal_version);
    if (!rc) rc = ars_h5_attr_read_string(file, path, "created", info->created, sizeof info->created);
    if (!rc) rc = ars_h5_attr_read(file, path, "step", H5T_NATIVE_INT64, &info->step);
    if (!rc) rc = ars_h5_attr_read(file, path, "epoch", H5T_NATIVE_INT32, &epoch);
    if (!rc) rc = ars_h5_attr_read(file, path, "steps_per_epoch", H5T_NATIVE_INT32, &spe);
    if (!rc) rc = ars_h5_attr_read(file, path, "world_size", H5T_NATIVE_INT32, &world);
    if (!rc) rc = ars_h5_attr_read(file, path, "global_batch", H5T_NATIVE_INT32, &batch);
    if (!rc) rc = ars_h5_attr_read(file, path, "seed", H5T_NATIVE_UINT64, &info->seed);
    if (!rc) rc = ars_h5_attr_read(file, path, "param_count", H5T_NATIVE_INT64, &info->param_count);
    if (!rc) rc = ars_h5_attr_read(file, path, "nonfinite_steps", H5T_NATIVE_INT64, &info->nonfinite_steps);
    if (!rc) rc = ars_h5_attr_read(file, path, "last_loss", H5T_NATIVE_DOUBLE, &info->last_loss);
    if (!rc) rc = ars_h5_attr_read(file, path, "test_loss", H5T_NATIVE_DOUBLE, &info->test_loss);
    if (!rc) rc = ars_h5_attr_read(file, path, "test_accuracy", H5T_NATIVE_DOUBLE, &info->test_accuracy);
    /* optional: files written before arsenal stored them have neither */
    if (!rc && H5Aexists(file, "data_mean") > 0 && H5Aexists(file, "data_std") > 0) {
        rc = ars_h5_attr_read(file, path, "data_mean", H5T_NATIVE_DOUBLE, &info->data_mean);
        if (!rc) rc = ars_h5_attr_read(file, path, "data_std", H5T_NATIVE_DOUBLE, &info->data_std);
        if (!rc && !(isfinite(info->data_mean) && isfinite(info->data_std) && info->data_std > 0))
            rc = ars_error(ARS_EFORMAT, "%s: implausible input standardization (data_mean %g, data_std %g)", path,
                           info->data_mean, info->data_std);
        info->has_data_stats = !rc;
    }
    if (!rc) rc = read_input_shape(file, path, &info->input_shape);
    strcpy(info->precision, "fp32");   /* files written before arsenal stored it ran fp32 */
    if (!rc && H5Aexists(file, "precision") > 0) {
        rc = ars_h5_attr_read_string(file, path, "precision", info->precision, sizeof info->precision);
        if (!rc && strcmp(info->precision, "fp32") != 0 && strcmp(info->precision, "bf16") != 0 &&
            strcmp(info->precision, "bf16_emulated") != 0)
            rc = ars_error(ARS_EFORMAT, "%s: root attribute precision = '%s', expected fp32, bf16 or bf16_emulated",
                           path, info->precision);
    }
    char where[4200];
    snprintf(where, sizeof where, "%s:", path);   /* "x.h5:/config" */
    if (!rc) rc = ars_h5_read_string(file, where, "config", &info->config_text);
    info->epoch = epoch;
    info->steps_per_epoch = spe;
    info->world_size = world;
    info->global_batch = batch;
    if (!rc && (info->step < 0 || spe <= 0 || world <= 0 || batch <= 0))
        rc = ars_error(ARS_EFORMAT, "%s: implausible root attributes (step %lld, steps_per_epoch %d, world_size %d, "
                       "global_batch %d)", path, (long long)info->step, spe, world, batch);
    hid_t optimizer = -1;
    if (!rc) {
        optimizer = H5Lexists(file, "optimizer", H5P_DEFAULT) > 0 ? H5Gopen2(file, "optimizer", H5P_DEFAULT) : -1;
        if (optimizer < 0) rc = ars_error(ARS_EFORMAT, "%s: group /optimizer is missing", path);
    }
    if (optimizer >= 0) {
        rc = ars_h5_attr_read_string(optimizer, "/optimizer", "kind", info->optimizer, sizeof info->optimizer);
        if (!rc) rc = ars_h5_attr_read(optimizer, "/optimizer", "lr", H5T_NATIVE_DOUBLE, &info->lr);
        if (!rc) rc = ars_h5_attr_read(optimizer, "/optimizer", "step", H5T_NATIVE_INT64, &info->optimizer_step);
        H5Gclose(optimizer);
    }
    if (!rc) rc = read_layers(file, path, info);
    H5Fclose(file);
    if (rc) ars_ckpt_info_free(info);
    return rc;
}

/* A resumed run keeps the tunings the checkpoint was trained with (the
 * same rounding as an uninterrupted run); files without them keep what
 * setup measured. Read into tunings[layer_count] (0: keep the layer's),
 * for the caller to apply when the whole load succeeded. */
static int read_tunings(hid_t file, const char *path, const ars_model *model, int32_t *tunings)
{
    int rc = 0;
    for (int l = 0; l < model->layer_count && !rc; l++) {
        const ars_layer *layer = &model->layers[l];
        tunings[l] = 0;
        if (!layer->tuning) continue;
        char name[64], where[600];
        snprintf(name, sizeof name, "/model/%s", layer->name);
        snprintf(where, sizeof where, "%s:%s", path, name);
        hid_t group = H5Gopen2(file, name, H5P_DEFAULT);
        if (group < 0) return ars_error(ARS_EFORMAT, "%s cannot be opened", where);
        int32_t tuning = 0;
        if (H5Aexists(group, "tuning") > 0) rc = ars_h5_attr_read(group, where, "tuning", H5T_NATIVE_INT32, &tuning);
        /* the only tunings so far: a convolution's layout, strategy + 1 */
        if (!rc && (tuning < 0 || tuning > 2))
            rc = ars_error(ARS_EFORMAT, "%s: attribute tuning = %d, expected 1 (per_sample) or 2 (batched)", where,
                           (int)tuning);
        if (!rc && tuning > 0) tunings[l] = tuning;
        H5Gclose(group);
    }
    return rc;
}

/* Reads every tensor of every layer under /<root> into the flat buffers
 * params (and state), checking each layer's kind and each tensor's shape. */
static int read_tensors(hid_t file, const char *path, const char *root, const ars_model *model, float *params,
                        float *state, int check_kinds)
{
    hid_t top = H5Lexists(file, root, H5P_DEFAULT) > 0 ? H5Gopen2(file, root, H5P_DEFAULT) : -1;
    if (top < 0) return ars_error(ARS_EFORMAT, "%s: group /%s is missing", path, root);
    int rc = 0;
    for (int l = 0; l < model->layer_count && !rc; l++) {
        const ars_layer *layer = &model->layers[l];
        if (!check_kinds && layer->param_count == 0) continue;
        char where[256];
        snprintf(where, sizeof where, "%s:/%s/%s", path, root, layer->name);
        hid_t group = H5Lexists(top, layer->name, H5P_DEFAULT) > 0 ? H5Gopen2(top, layer->name, H5P_DEFAULT) : -1;
        if (group < 0) {
            rc = ars_error(ARS_EFORMAT, "%s is missing: the checkpoint holds a different model than the run file "
                           "(layer %d should be '%s')", where, l, layer->spec.kind);
            break;
        }
        if (check_kinds) {
            char kind[32] = "";
            rc = ars_h5_attr_read_string(group, where, "kind", kind, sizeof kind);
            if (!rc && strcmp(kind, layer->spec.kind) != 0)
                rc = ars_error(ARS_EFORMAT, "%s: layer kind '%s' in the checkpoint, '%s' in the run file", where,
                               kind, layer->spec.kind);
        }
        for (int p = 0; p < layer->param_count && !rc; p++) {
            int rank;
            hsize_t dims[ARS_SHAPE_MAX_RANK];
            view_dims(&layer->params[p], &rank, dims);
            rc = ars_h5_read_floats(group, where, layer->params[p].name, rank, dims,
                                    params + layer->param_offset + layer->params[p].offset);
        }
        for (int b = 0; state && b < layer->buffer_count && !rc; b++) {
            int rank;
            hsize_t dims[ARS_SHAPE_MAX_RANK];
            view_dims(&layer->buffers[b], &rank, dims);
            rc = ars_h5_read_floats(group, where, layer->buffers[b].name, rank, dims,
                                    state + layer->state_offset + layer->buffers[b].offset);
        }
        H5Gclose(group);
    }
    if (!rc && check_kinds) {
        H5G_info_t group_info;
        if (H5Gget_info(top, &group_info) >= 0 && group_info.nlinks != (hsize_t)model->layer_count)
            rc = ars_error(ARS_EFORMAT, "%s: the checkpoint's model has %llu layers, the run file's %d", path,
                           (unsigned long long)group_info.nlinks, model->layer_count);
    }
    H5Gclose(top);
    return rc;
}

int ars_ckpt_load(const char *path, ars_model *model, ars_optimizer *opt)
{
    int rc, version;
    hid_t file = open_checkpoint(path, &version, &rc);
    if (file < 0) return rc;
    /* Read into scratch copies: on any error the model is left as it was. */
    size_t n = model->param_count, s = model->state_count;
    float *params = malloc(sizeof(float) * (n + 1)), *state = malloc(sizeof(float) * (s + 1));
    float *m = opt->m ? malloc(sizeof(float) * (n + 1)) : NULL, *v = opt->v ? malloc(sizeof(float) * (n + 1)) : NULL;
    int32_t *tunings = malloc(sizeof(int32_t) * (size_t)(model->layer_count + 1));
    int32_t *layouts = malloc(sizeof(int32_t) * (size_t)(model->gemm_plan_count + 1));
    int64_t step = 0;
    if (!params || !state || (opt->m && !m) || (opt->v && !v) || !tunings || !layouts)
        rc = ars_error(ARS_ENOMEM, "out of memory");
    if (!rc) rc = read_tensors(file, path, "model", model, params, state, 1);
    if (!rc) rc = read_tunings(file, path, model, tunings);
    if (!rc) rc = read_gemm_tuning(file, path, model, layouts);
    hid_t group = -1;
    if (!rc) {
        group = H5Lexists(file, "optimizer", H5P_DEFAULT) > 0 ? H5Gopen2(file, "optimizer", H5P_DEFAULT) : -1;
        if (group < 0) rc = ars_error(ARS_EFORMAT, "%s: group /optimizer is missing", path);
    }
    if (!rc) {
        char kind[16] = "";
        rc = ars_h5_attr_read_string(group, "/optimizer", "kind", kind, sizeof kind);
        if (!rc && strcmp(kind, ars_optimizer_name(opt->config.kind)) != 0)
            rc = ars_error(ARS_EFORMAT, "%s: the checkpoint's optimizer is %s, the run file says %s", path, kind,
                           ars_optimizer_name(opt->config.kind));
        if (!rc) rc = ars_h5_attr_read(group, "/optimizer", "step", H5T_NATIVE_INT64, &step);
        if (!rc && step < 0) rc = ars_error(ARS_EFORMAT, "%s: /optimizer step %lld", path, (long long)step);
        if (!rc && m) rc = read_tensors(file, path, "optimizer/m", model, m, NULL, 0);
        if (!rc && v) rc = read_tensors(file, path, "optimizer/v", model, v, NULL, 0);
    }
    if (group >= 0) H5Gclose(group);
    H5Fclose(file);
    if (!rc) {
        memcpy(model->params, params, sizeof(float) * n);
        memcpy(model->state, state, sizeof(float) * s);
        if (m) memcpy(opt->m, m, sizeof(float) * n);
        if (v) memcpy(opt->v, v, sizeof(float) * n);
        opt->step = step;
        for (int l = 0; l < model->layer_count; l++)
            if (tunings[l]) model->layers[l].tuning = tunings[l];
        for (int i = 0; i < model->gemm_plan_count; i++) model->gemm_plan[i].layout = layouts[i];
        model->gemm_restored = model->gemm_plan_count > 0;
    }
    free(tunings);
    free(layouts);
    free(params);
    free(state);
    free(m);
    free(v);
    return rc;
}

int ars_ckpt_read_history(const char *path, ars_history *h)
{
    memset(h, 0, sizeof *h);
    int rc, version;
    hid_t file = open_checkpoint(path, &version, &rc);
    if (file < 0) return rc;
    hid_t group = H5Lexists(file, "history", H5P_DEFAULT) > 0 ? H5Gopen2(file, "history", H5P_DEFAULT) : -1;
    if (group < 0) {
        H5Fclose(file);
        return ars_error(ARS_EFORMAT, "%s: group /history is missing", path);
    }
    const char *where = "/history";
    char **names = NULL;
    size_t L = 0;
    hsize_t dims[3];
    void *raw[16] = {0};
    rc = ars_h5_read_strings(group, where, "layer_names", &names, &L);
    char (*fixed)[40] = NULL;
    if (!rc && L > 100000) rc = ars_error(ARS_EFORMAT, "%s: %zu layer names", path, L);
    if (!rc && !(fixed = calloc(L ? L : 1, sizeof *fixed))) rc = ars_error(ARS_ENOMEM, "out of memory");
    for (size_t l = 0; !rc && l < L; l++) snprintf(fixed[l], sizeof fixed[l], "%s", names[l]);
    hsize_t hist_dims[3] = {0, 0, 0}, edge_dims[1] = {0};
    int bins = 0;
    if (!rc && H5Lexists(group, "hist_counts", H5P_DEFAULT) > 0) {
        rc = ars_h5_read_series(group, where, "hist_edges", H5T_NATIVE_DOUBLE, 1, edge_dims, &raw[14]);
        if (!rc && edge_dims[0] >= 3) bins = (int)edge_dims[0] - 1;
    }
    if (!rc) rc = ars_history_init(h, (int)L, (const char (*)[40])fixed, bins);
    /* sequence layers' per-time-step norms: one [T, time] dataset per layer name */
    void *time_raw[64] = {0};
    hsize_t time_rows[64] = {0};
    if (!rc && H5Lexists(group, "time_grad_norm", H5P_DEFAULT) > 0) {
        hid_t time_group = H5Gopen2(group, "time_grad_norm", H5P_DEFAULT);
        int which[64], steps[64], count = 0;
        for (size_t l = 0; !rc && l < L && count < 64; l++) {
            if (H5Lexists(time_group, fixed[l], H5P_DEFAULT) <= 0) continue;
            hsize_t tdims[2];
            rc = ars_h5_read_series(time_group, "/history/time_grad_norm", fixed[l], H5T_NATIVE_DOUBLE, 2, tdims,
                                    &time_raw[count]);
            if (!rc && (tdims[1] == 0 || tdims[1] > 1000000))
                rc = ars_error(ARS_EFORMAT, "%s:/history/time_grad_norm/%s has %llu time steps", path, fixed[l],
                               (unsigned long long)tdims[1]);
            which[count] = (int)l;
            steps[count] = (int)tdims[1];
            time_rows[count] = tdims[0];
            count++;
        }
        if (time_group >= 0) H5Gclose(time_group);
        if (!rc) rc = ars_history_set_time_layers(h, count, which, steps);
    }
    size_t T = 0;
    if (!rc) rc = ars_h5_read_series(group, where, "step", H5T_NATIVE_INT64, 1, dims, &raw[0]);
    T = (size_t)dims[0];
    static const char *const one_d[] = {"epoch", "nonfinite", "skipped", "loss", "lr", "grad_norm", "clip_scale"};
    for (int k = 0; k < 7 && !rc; k++) {
        hid_t type = k < 3 ? H5T_NATIVE_INT32 : H5T_NATIVE_DOUBLE;
        rc = ars_h5_read_series(group, where, one_d[k], type, 1, dims, &raw[1 + k]);
        if (!rc && dims[0] != T)
            rc = ars_error(ARS_EFORMAT, "%s:/history/%s has %llu records, /history/step %zu", path, one_d[k],
                           (unsigned long long)dims[0], T);
    }
    for (int k = 0; !rc && k < h->time_layer_count; k++)
        if (time_rows[k] != T)
            rc = ars_error(ARS_EFORMAT, "%s:/history/time_grad_norm/%s has %llu records, /history/step %zu", path,
                           h->layer_names[h->time_layer[k]], (unsigned long long)time_rows[k], T);
    double *columns[ARS_HIST_LAYER_COLUMNS] = {0};
    for (int c = 0; c < ARS_HIST_LAYER_COLUMNS && !rc; c++) {
        void *data = NULL;
        rc = ars_h5_read_series(group, where, ars_history_column_names[c], H5T_NATIVE_DOUBLE, 2, dims, &data);
        columns[c] = data;
        if (!rc && (dims[0] != T || dims[1] != L))
            rc = ars_error(ARS_EFORMAT, "%s:/history/%s has shape [%llu, %llu], expected [%zu, %zu]", path,
                           ars_history_column_names[c], (unsigned long long)dims[0], (unsigned long long)dims[1], T, L);
    }
    for (size_t t = 0; t < T && !rc; t++) {
        ars_history_step s = {
            .step = ((int64_t *)raw[0])[t], .epoch = ((int32_t *)raw[1])[t], .nonfinite = ((int32_t *)raw[2])[t],
            .skipped = ((int32_t *)raw[3])[t], .loss = ((double *)raw[4])[t], .lr = ((double *)raw[5])[t],
            .grad_norm = ((double *)raw[6])[t], .clip_scale = ((double *)raw[7])[t]};
        double *row;
        rc = ars_history_append(h, &s, &row);
        for (int c = 0; !rc && c < ARS_HIST_LAYER_COLUMNS; c++)
            memcpy(row + (size_t)c * L, columns[c] + t * L, sizeof(double) * L);
        for (int k = 0; !rc && k < h->time_layer_count; k++)
            memcpy(ars_history_time_row(h, k, t), (double *)time_raw[k] + t * (size_t)h->time_steps[k],
                   sizeof(double) * (size_t)h->time_steps[k]);
    }
    for (int c = 0; c < ARS_HIST_LAYER_COLUMNS; c++) free(columns[c]);
    if (!rc && bins) {
        double *edges = raw[14];
        h->hist_low = edges[0];
        h->hist_high = edges[bins];
        rc = ars_h5_read_series(group, where, "hist_step", H5T_NATIVE_INT64, 1, dims, &raw[9]);
        if (!rc) rc = ars_h5_read_series(group, where, "hist_counts", H5T_NATIVE_UINT32, 3, hist_dims, &raw[10]);
        if (!rc && (hist_dims[0] != dims[0] || hist_dims[1] != L || hist_dims[2] != (hsize_t)bins))
            rc = ars_error(ARS_EFORMAT, "%s:/history/hist_counts has an inconsistent shape", path);
        if (!rc) {
            h->hist_count = h->hist_capacity = (size_t)dims[0];
            h->hist_steps = raw[9];
            h->hist_counts = raw[10];
            raw[9] = raw[10] = NULL;
        }
    }
    if (!rc) {
        hsize_t e_dims[1];
        void *e_raw[5] = {0};
        static const char *const eval_names[] = {"eval_step", "eval_epoch", "eval_train_loss", "eval_test_loss",
                                                 "eval_test_accuracy"};
        size_t E = 0;
        for (int k = 0; k < 5 && !rc; k++) {
            hid_t type = k == 0 ? H5T_NATIVE_INT64 : k == 1 ? H5T_NATIVE_INT32 : H5T_NATIVE_DOUBLE;
            rc = ars_h5_read_series(group, where, eval_names[k], type, 1, e_dims, &e_raw[k]);
            if (!rc && k == 0) E = (size_t)e_dims[0];
            if (!rc && e_dims[0] != E) rc = ars_error(ARS_EFORMAT, "%s:/history/%s length mismatch", path, eval_names[k]);
        }
        for (size_t e = 0; e < E && !rc; e++) {
            ars_history_eval ev = {((int64_t *)e_raw[0])[e], ((int32_t *)e_raw[1])[e], ((double *)e_raw[2])[e],
                                   ((double *)e_raw[3])[e], ((double *)e_raw[4])[e]};
            rc = ars_history_add_eval(h, &ev);
        }
        for (int k = 0; k < 5; k++) free(e_raw[k]);
    }
    if (!rc) {
        char **events = NULL;
        size_t count = 0;
        rc = ars_h5_read_strings(group, where, "events", &events, &count);
        for (size_t e = 0; e < count; e++) {
            if (!rc) rc = ars_history_add_event(h, events[e]);
            free(events[e]);
        }
        free(events);
    }
    if (!rc) rc = read_cures(file, path, h);
    for (int k = 0; k < 16; k++) free(raw[k]);
    for (int k = 0; k < 64; k++) free(time_raw[k]);
    for (size_t l = 0; l < L; l++) free(names[l]);
    free(names);
    free(fixed);
    H5Gclose(group);
    H5Fclose(file);
    if (rc) {
        ars_history_free(h);
        return ars_error_context(rc, "reading the history of %s", path);
    }
    return 0;
}

/* ---- checking a checkpoint in a separate process ------------------------- */

/* Reads every tensor under /model, /optimizer/m and /optimizer/v whatever
 * its shape (the child has no model to compare with): all that
 * ars_ckpt_load will read, read first where a crash costs nothing. */
static int check_tensors(const char *path)
{
    int rc, version;
    hid_t file = open_checkpoint(path, &version, &rc);
    if (file < 0) return rc;
    static const char *const roots[] = {"model", "optimizer/m", "optimizer/v"};
    int has_optimizer = H5Lexists(file, "optimizer", H5P_DEFAULT) > 0;
    for (int k = 0; k < 3 && !rc; k++) {
        if (k > 0 && (!has_optimizer || H5Lexists(file, roots[k], H5P_DEFAULT) <= 0)) continue;
        hid_t top = H5Gopen2(file, roots[k], H5P_DEFAULT);
        H5G_info_t top_info;
        if (top < 0 || H5Gget_info(top, &top_info) < 0 || top_info.nlinks > 1000000) {
            rc = ars_error(ARS_EFORMAT, "%s: /%s cannot be listed (corrupted file?)", path, roots[k]);
            if (top >= 0) H5Gclose(top);
            break;
        }
        for (hsize_t i = 0; i < top_info.nlinks && !rc; i++) {
            char layer[64] = "", where[1200];
            H5G_info_t info;
            if (H5Lget_name_by_idx(top, ".", H5_INDEX_NAME, H5_ITER_INC, i, layer, sizeof layer, H5P_DEFAULT) < 0) {
                rc = ars_error(ARS_EFORMAT, "%s: /%s cannot be listed (corrupted file?)", path, roots[k]);
                break;
            }
            snprintf(where, sizeof where, "%s:/%s/%s", path, roots[k], layer);
            hid_t group = H5Gopen2(top, layer, H5P_DEFAULT);
            if (group < 0 || H5Gget_info(group, &info) < 0 || info.nlinks > 1000) {
                rc = ars_error(ARS_EFORMAT, "%s is not a readable group (corrupted file?)", where);
            } else {
                for (hsize_t j = 0; j < info.nlinks && !rc; j++) {
                    char name[64] = "";
                    if (H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, j, name, sizeof name,
                                           H5P_DEFAULT) < 0)
                        rc = ars_error(ARS_EFORMAT, "%s cannot be listed (corrupted file?)", where);
                    else
                        rc = ars_h5_check_floats(group, where, name);
                }
            }
            if (group >= 0) H5Gclose(group);
        }
        H5Gclose(top);
    }
    H5Fclose(file);
    return rc;
}

/* What the child tells its parent. */
typedef struct check_verdict {
    int rc;
    int out_of_memory;
    char message[2048];
} check_verdict;

/* The child's work (src/isolate.c): the reader exactly as a resume or
 * inspect runs it. */
static void check_in_child(void *context, void *out)
{
    const char *path = context;
    check_verdict *verdict = out;
    checking_child = 1;
    hdf5_out_of_memory = 0;
    ars_ckpt_info info;
    verdict->rc = ars_ckpt_read_info(path, &info);
    if (!verdict->rc) {
        ars_ckpt_info_free(&info);
        verdict->rc = check_tensors(path);
    }
    ars_history history;
    if (!verdict->rc) verdict->rc = ars_ckpt_read_history(path, &history);
    if (!verdict->rc) ars_history_free(&history);
    if (verdict->rc) {
        verdict->out_of_memory = verdict->rc == ARS_ENOMEM || hdf5_out_of_memory;
        snprintf(verdict->message, sizeof verdict->message, "%s", ars_error_message());
    }
}

void ars_ckpt_check_limits(uint64_t file_size, uint64_t *memory, double *seconds)
{
    /* The reader holds at most a few copies of the largest tensor and of the
     * uncompressed history; a 167 KB file asking for gigabytes is corrupted. */
    *memory = ((uint64_t)512 << 20) + 8 * file_size;
    /* 8 MiB/s is far below any disk; a healthy small file takes milliseconds */
    *seconds = 10.0 + (double)file_size / (double)(8 << 20);
}

int ars_ckpt_validate(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) return ars_error(ARS_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return ars_error(ARS_EIO, "%s: not a regular file", path);
    uint64_t memory;
    double seconds;
    ars_ckpt_check_limits((uint64_t)st.st_size, &memory, &seconds);
    check_verdict verdict;
    ars_isolated how;
    TRY(ars_isolated_run(path, memory, seconds, check_in_child, (void *)path, &verdict, sizeof verdict, &how));
    if (how.end != ARS_ISOLATED_DONE) return ars_isolated_error(&how, path, "checkpoint");
    if (verdict.rc == 0) {
        validated[validated_count++ % 16] = identity_of(&st);
        return 0;
    }
    if (verdict.out_of_memory)
        return ars_error(ARS_EFORMAT, "%s: corrupted checkpoint (reading it needs more than %llu MiB of memory, the "
                         "limit for a file of %lld bytes)", path, (unsigned long long)(memory >> 20),
                         (long long)st.st_size);
    verdict.message[sizeof verdict.message - 1] = '\0';
    return ars_error(verdict.rc, "%s", verdict.message);
}
