/* shape: per-sample shapes (include/arsenal/shape.h). */
#include "arsenal/shape.h"

#include <stdio.h>

ars_shape ars_shape_vector(int features) { return (ars_shape){1, {features}}; }
ars_shape ars_shape_matrix(int rows, int cols) { return (ars_shape){2, {rows, cols}}; }
ars_shape ars_shape_image(int channels, int height, int width) { return (ars_shape){3, {channels, height, width}}; }

double ars_shape_count(const ars_shape *shape)
{
    if (shape->rank < 1 || shape->rank > ARS_SHAPE_MAX_RANK) return 0;
    double count = 1;
    for (int i = 0; i < shape->rank; i++) count *= shape->dims[i];
    return count;
}

int ars_shape_equal(const ars_shape *a, const ars_shape *b)
{
    if (a->rank != b->rank) return 0;
    for (int i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i]) return 0;
    return 1;
}

const char *ars_shape_text(const ars_shape *shape, char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < shape->rank && i < ARS_SHAPE_MAX_RANK && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%d", i ? ", " : "[", shape->dims[i]);
    if (used < size) snprintf(out + used, size - used, shape->rank > 0 ? "]" : "[]");
    return out;
}
