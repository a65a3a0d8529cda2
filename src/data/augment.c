/* augment: data augmentation of image batches (random crop with zero
 * padding, random horizontal flip), in place, and the stopgap image shape
 * of the data sets. A sample's transform is drawn from Philox at (seed,
 * ARS_STREAM_AUGMENT/epoch, counter = global sample id), never from the
 * position of the sample in a rank's batch, so it is the same on any
 * number of ranks and after a resume. */
#include "arsenal/data.h"

#include <string.h>

#include "arsenal/error.h"
#include "arsenal/rng.h"

/* An integer in [0, n) from a 32-bit word by multiply-shift: no division,
 * and a bias of at most n / 2^32, negligible for the few offsets here. */
static int below(uint32_t word, uint32_t n)
{
    return (int)(((uint64_t)word * n) >> 32);
}

void ars_augment_draw(const ars_augment *a, uint64_t seed, int epoch, uint32_t id, int *oy, int *ox, int *flip)
{
    uint32_t w[4];
    ars_philox(seed, ars_stream(ARS_STREAM_AUGMENT, (uint32_t)epoch), id, w);
    /* Separate words for the two offsets and the flip: turning the flip on
     * or off, or changing the padding, leaves the other draws alone. */
    const uint32_t span = a->crop > 0 ? 2u * (uint32_t)a->crop + 1u : 1u;
    *oy = below(w[0], span);
    *ox = below(w[1], span);
    *flip = a->flip && (w[2] >> 31);
}

static void fill_zero(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = 0.0f;
}

/* Shifts n items of size `stride` by s places: item i becomes item i + s
 * (s > 0: reads from further on), vacated items are zero. memmove makes it
 * safe in place whatever the direction. */
static void shift_zero(float *p, int n, size_t stride, int s)
{
    const int k = s < 0 ? -s : s;
    if (k >= n) {
        fill_zero(p, (size_t)n * stride);
    } else if (s > 0) {
        memmove(p, p + (size_t)k * stride, (size_t)(n - k) * stride * sizeof *p);
        fill_zero(p + (size_t)(n - k) * stride, (size_t)k * stride);
    } else if (s < 0) {
        memmove(p + (size_t)k * stride, p, (size_t)(n - k) * stride * sizeof *p);
        fill_zero(p, (size_t)k * stride);
    }
}

void ars_augment_transform(float *image, int channels, int height, int width, int crop, int oy, int ox, int flip)
{
    /* The crop window's corner (oy, ox) is in padded coordinates: output
     * pixel (y, x) is input pixel (y + oy - crop, x + ox - crop). */
    const int sy = oy - crop, sx = ox - crop;
    for (int c = 0; c < channels; c++) {
        float *plane = image + (size_t)c * (size_t)height * (size_t)width;
        shift_zero(plane, height, (size_t)width, sy);
        for (int y = 0; y < height; y++) {
            float *row = plane + (size_t)y * (size_t)width;
            shift_zero(row, width, 1, sx);
            for (int l = 0, r = width - 1; flip && l < r; l++, r--) {
                float t = row[l];
                row[l] = row[r];
                row[r] = t;
            }
        }
    }
}

int ars_augment_apply(const ars_augment *a, uint64_t seed, int epoch, float *x, int rows, const uint32_t *ids,
                      int channels, int height, int width)
{
    if (!a) return ars_error(ARS_EINVAL, "augment: a is NULL");
    if (a->crop < 0) return ars_error(ARS_EINVAL, "augment: crop %d: expected >= 0", a->crop);
    if (a->crop == 0 && !a->flip) return 0;   /* off: the batch is left as it is, bit for bit */
    if (rows < 0 || epoch < 0)
        return ars_error(ARS_EINVAL, "augment: rows %d, epoch %d: expected >= 0", rows, epoch);
    if (channels < 1 || height < 1 || width < 1)
        return ars_error(ARS_EINVAL, "augment: image shape %d x %d x %d: expected >= 1 each", channels, height,
                         width);
    if (rows > 0 && (!x || !ids)) return ars_error(ARS_EINVAL, "augment: x or ids is NULL");
    const size_t dim = (size_t)channels * (size_t)height * (size_t)width;
    for (int r = 0; r < rows; r++) {
        int oy, ox, flip;
        ars_augment_draw(a, seed, epoch, ids[r], &oy, &ox, &flip);
        ars_augment_transform(x + (size_t)r * dim, channels, height, width, a->crop, oy, ox, flip);
    }
    return 0;
}

int ars_dataset_image_shape(const ars_dataset *data, int *channels, int *height, int *width)
{
    if (!data) return ars_error(ARS_EINVAL, "image shape: data is NULL");
    const ars_shape shape = ars_dataset_shape(data);
    char text[48];
    if (shape.rank != 3)
        return ars_error(ARS_EINVAL, "data set '%s' is not an image set: its samples are %s, not [channels, "
                         "height, width] (augmentation needs images: fashion-mnist or mnist)", data->name,
                         ars_shape_text(&shape, text, sizeof text));
    *channels = shape.dims[0];
    *height = shape.dims[1];
    *width = shape.dims[2];
    return 0;
}
