/* shape: the shape of one sample as it flows from the data set through the
 * layers, and of the tensors a layer declares. */
#ifndef ARSENAL_SHAPE_H
#define ARSENAL_SHAPE_H

#include <stddef.h>

/* A per-sample shape, outermost first: [features], [time, features] or
 * [channels, height, width]. The batch is not part of it: a batch of a
 * layer is always rows of ars_shape_count(shape) floats, row-major, so
 * [rows, time, features] is also [rows, time * features]. */
enum { ARS_SHAPE_MAX_RANK = 4 };

typedef struct ars_shape {
    int rank;                      /* 1 to ARS_SHAPE_MAX_RANK */
    int dims[ARS_SHAPE_MAX_RANK];
} ars_shape;

ars_shape ars_shape_vector(int features);
ars_shape ars_shape_matrix(int rows, int cols);
ars_shape ars_shape_image(int channels, int height, int width);
/* The product of the dims, in double: an absurd shape never overflows. */
double ars_shape_count(const ars_shape *shape);
int ars_shape_equal(const ars_shape *a, const ars_shape *b);
/* "[1, 28, 28]" into out (48 bytes are enough); returns out. */
const char *ars_shape_text(const ars_shape *shape, char *out, size_t size);

#endif
