/* test_augment: image augmentation (src/data/augment.c): crop and flip at
 * known pixel positions, zero padding against an explicitly padded
 * reference, determinism in (seed, epoch, id), the same result whatever
 * the number of ranks sharing the batch, off leaving data bit for bit, the
 * draws' distribution, the [run] keys, and the trainer's use of it
 * (refused on non-image data; training batches only). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arsenal/config.h"
#include "arsenal/data.h"
#include "arsenal/error.h"
#include "arsenal/rng.h"
#include "arsenal/train.h"

static void assert_message_has(const char *needle)
{
    if (!strstr(ars_error_message(), needle))
        fail_msg("expected '%s' in the error message: '%s'", needle, ars_error_message());
}

static void assert_floats_equal(const float *got, const float *want, int n)
{
    for (int i = 0; i < n; i++)
        if (got[i] != want[i]) fail_msg("element %d: got %g, expected %g", i, got[i], want[i]);
}

/* ---- the transform at known pixel positions --------------------------------- */

/* A 2 x 3 x 4 image: channel 0 holds 1..12 row by row, channel 1 101..112. */
static void hand_image(float *img)
{
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 12; i++) img[c * 12 + i] = (float)(100 * c + i + 1);
}

/* Transforms the hand image with padding 1 and checks channel 0 against
 * want; channel 1 must move the same way (want + 100 where nonzero). */
static void check_hand(int oy, int ox, int flip, const float want[12])
{
    float img[24], want2[24];
    hand_image(img);
    ars_augment_transform(img, 2, 3, 4, 1, oy, ox, flip);
    for (int i = 0; i < 12; i++) {
        want2[i] = want[i];
        want2[12 + i] = want[i] != 0 ? want[i] + 100 : 0;
    }
    assert_floats_equal(img, want2, 24);
}

static void test_crop_and_flip_pixel_positions(void **state)
{
    (void)state;
    /*  1  2  3  4
     *  5  6  7  8
     *  9 10 11 12   padded by 1; the window's corner (oy, ox) in [0, 2]^2 */
    const float identity[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const float top_left[12] = {0, 0, 0, 0, 0, 1, 2, 3, 0, 5, 6, 7};         /* (0, 0): content moves down-right */
    const float bottom_right[12] = {6, 7, 8, 0, 10, 11, 12, 0, 0, 0, 0, 0};  /* (2, 2): up-left */
    const float top_right[12] = {0, 0, 0, 0, 2, 3, 4, 0, 6, 7, 8, 0};        /* (0, 2) */
    const float bottom_left[12] = {0, 5, 6, 7, 0, 9, 10, 11, 0, 0, 0, 0};    /* (2, 0) */
    const float left_only[12] = {0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11};      /* (1, 0) */
    const float flipped[12] = {4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9};
    const float top_left_flipped[12] = {0, 0, 0, 0, 3, 2, 1, 0, 7, 6, 5, 0}; /* crop first, then flip */
    check_hand(1, 1, 0, identity);
    check_hand(0, 0, 0, top_left);
    check_hand(2, 2, 0, bottom_right);
    check_hand(0, 2, 0, top_right);
    check_hand(2, 0, 0, bottom_left);
    check_hand(1, 0, 0, left_only);
    check_hand(1, 1, 1, flipped);
    check_hand(0, 0, 1, top_left_flipped);

    /* padding 0: only the flip, on an odd width (the middle column stays) */
    float row[5] = {1, 2, 3, 4, 5};
    const float mirrored[5] = {5, 4, 3, 2, 1};
    ars_augment_transform(row, 1, 1, 5, 0, 0, 0, 1);
    assert_floats_equal(row, mirrored, 5);
}

/* The definition: pad with zeros into a (H + 2P) x (W + 2P) buffer, cut
 * the window at (oy, ox), mirror. */
static void reference_transform(const float *in, float *out, int channels, int height, int width, int crop, int oy,
                                int ox, int flip)
{
    const int ph = height + 2 * crop, pw = width + 2 * crop;
    float *padded = calloc((size_t)ph * pw, sizeof *padded);
    assert_non_null(padded);
    for (int c = 0; c < channels; c++) {
        memset(padded, 0, sizeof *padded * (size_t)ph * pw);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                padded[(y + crop) * pw + x + crop] = in[(c * height + y) * width + x];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++) {
                int sx = flip ? width - 1 - x : x;
                out[(c * height + y) * width + x] = padded[(y + oy) * pw + sx + ox];
            }
    }
    free(padded);
}

static void test_zero_padding_matches_padded_reference(void **state)
{
    (void)state;
    enum { C = 2, H = 5, W = 7, N = C * H * W };
    float in[N], got[N], want[N];
    /* values far from 0, so that a padded pixel cannot pass for data */
    ars_rng_uniform(in, N, 1.0f, 2.0f, 11, ars_stream(ARS_STREAM_DATA, 0xa0), 0);
    const int crops[] = {1, 2, 3, 6, 9};   /* 6 >= H and 9 >= W: whole windows of padding */
    for (size_t k = 0; k < sizeof crops / sizeof crops[0]; k++) {
        const int p = crops[k];
        for (int oy = 0; oy <= 2 * p; oy++)
            for (int ox = 0; ox <= 2 * p; ox++)
                for (int flip = 0; flip < 2; flip++) {
                    memcpy(got, in, sizeof in);
                    ars_augment_transform(got, C, H, W, p, oy, ox, flip);
                    reference_transform(in, want, C, H, W, p, oy, ox, flip);
                    if (memcmp(got, want, sizeof got) != 0)
                        fail_msg("crop %d, offset (%d, %d), flip %d differs from the padded reference", p, oy, ox,
                                 flip);
                }
    }
    /* the padding is +0.0 exactly (the bits, not only the value) */
    memcpy(got, in, sizeof in);
    ars_augment_transform(got, C, H, W, 2, 0, 0, 0);
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                const float v = got[(c * H + y) * W + x];
                const int pad = y < 2 || x < 2;
                uint32_t bits;
                memcpy(&bits, &v, sizeof bits);
                if (pad && bits != 0) fail_msg("(%d, %d, %d) is padding but holds %g", c, y, x, v);
                if (!pad && v != in[(c * H + y - 2) * W + x - 2]) fail_msg("(%d, %d, %d) lost its pixel", c, y, x);
            }
}

/* ---- determinism and world-size independence --------------------------------- */

enum { IMG_C = 2, IMG_H = 5, IMG_W = 6, IMG_DIM = IMG_C * IMG_H * IMG_W };

static void random_images(float *x, int rows, uint64_t seed)
{
    ars_rng_normal(x, (size_t)rows * IMG_DIM, 0.0f, 1.0f, seed, ars_stream(ARS_STREAM_DATA, 0xa1), 0);
}

static void test_same_seed_epoch_id_same_output(void **state)
{
    (void)state;
    enum { ROWS = 40 };
    static float x[ROWS * IMG_DIM], a[ROWS * IMG_DIM], b[ROWS * IMG_DIM];
    uint32_t ids[ROWS], reversed[ROWS];
    random_images(x, ROWS, 5);
    for (int r = 0; r < ROWS; r++) ids[r] = (uint32_t)(1000 + 7 * r);
    const ars_augment aug = {.crop = 2, .flip = 1};

    memcpy(a, x, sizeof x);
    memcpy(b, x, sizeof x);
    ARS_ASSERT_OK(ars_augment_apply(&aug, 42, 3, a, ROWS, ids, IMG_C, IMG_H, IMG_W));
    ARS_ASSERT_OK(ars_augment_apply(&aug, 42, 3, b, ROWS, ids, IMG_C, IMG_H, IMG_W));
    assert_memory_equal(a, b, sizeof a);
    assert_true(memcmp(a, x, sizeof x) != 0);   /* it did something */

    /* A row's transform follows its id, not its position in the batch. */
    for (int r = 0; r < ROWS; r++) {
        reversed[r] = ids[ROWS - 1 - r];
        memcpy(b + (size_t)r * IMG_DIM, x + (size_t)(ROWS - 1 - r) * IMG_DIM, sizeof(float) * IMG_DIM);
    }
    ARS_ASSERT_OK(ars_augment_apply(&aug, 42, 3, b, ROWS, reversed, IMG_C, IMG_H, IMG_W));
    for (int r = 0; r < ROWS; r++)
        assert_memory_equal(b + (size_t)r * IMG_DIM, a + (size_t)(ROWS - 1 - r) * IMG_DIM, sizeof(float) * IMG_DIM);

    /* Another epoch or another seed draws other transforms. */
    int other_epoch = 0, other_seed = 0;
    for (uint32_t id = 0; id < 200; id++) {
        int y0, x0, f0, y1, x1, f1, y2, x2, f2;
        ars_augment_draw(&aug, 42, 3, id, &y0, &x0, &f0);
        ars_augment_draw(&aug, 42, 4, id, &y1, &x1, &f1);
        ars_augment_draw(&aug, 43, 3, id, &y2, &x2, &f2);
        other_epoch += y0 != y1 || x0 != x1 || f0 != f1;
        other_seed += y0 != y2 || x0 != x2 || f0 != f2;
    }
    assert_true(other_epoch > 150 && other_seed > 150);   /* equal by chance with p = 1/50 */
}

/* Each sample of each epoch as 1, 2 and 3 ranks see it after augmentation:
 * every rank fills its slice of each global batch with ars_sampler, and
 * the results are put back by sample id. */
static void augment_epochs_as_world(const ars_dataset *data, int global_batch, int world, int epochs,
                                    const ars_augment *aug, float *out, int *seen)
{
    for (int rank = 0; rank < world; rank++) {
        ars_sampler sampler;
        ars_batch batch;
        ARS_ASSERT_OK(ars_sampler_create(&sampler, data, global_batch, rank, world, 9, 1));
        ARS_ASSERT_OK(ars_batch_alloc(&batch, &sampler));
        const int steps = ars_sampler_steps_per_epoch(&sampler);
        for (int epoch = 0; epoch < epochs; epoch++)
            for (int step = 0; step < steps; step++) {
                ARS_ASSERT_OK(ars_sampler_fill(&sampler, epoch, step, &batch));
                ARS_ASSERT_OK(ars_augment_apply(aug, 9, epoch, batch.x, batch.rows, batch.ids, IMG_C, IMG_H, IMG_W));
                for (int r = 0; r < batch.rows; r++) {
                    const size_t slot = (size_t)epoch * data->count + batch.ids[r];
                    seen[slot]++;
                    memcpy(out + slot * IMG_DIM, batch.x + (size_t)r * IMG_DIM, sizeof(float) * IMG_DIM);
                }
            }
        ars_batch_free(&batch);
        ars_sampler_destroy(&sampler);
    }
}

static void test_independent_of_world_size(void **state)
{
    (void)state;
    /* 23 = 2 x 10 + 3: a partial last batch, which leaves rank 2 of 3 empty */
    enum { COUNT = 23, BATCH = 10, EPOCHS = 2 };
    ars_dataset data;
    memset(&data, 0, sizeof data);
    snprintf(data.name, sizeof data.name, "images");
    data.count = COUNT;
    data.dim = IMG_DIM;
    data.classes = 3;
    data.x = malloc(sizeof(float) * COUNT * IMG_DIM);
    data.labels = malloc(sizeof(int32_t) * COUNT);
    assert_non_null(data.x);
    assert_non_null(data.labels);
    random_images(data.x, COUNT, 8);
    for (int i = 0; i < COUNT; i++) data.labels[i] = i % 3;
    const ars_augment aug = {.crop = 2, .flip = 1};

    float *results[3];
    for (int w = 0; w < 3; w++) {
        int seen[EPOCHS * COUNT] = {0};
        results[w] = malloc(sizeof(float) * EPOCHS * COUNT * IMG_DIM);
        assert_non_null(results[w]);
        augment_epochs_as_world(&data, BATCH, w + 1, EPOCHS, &aug, results[w], seen);
        for (int i = 0; i < EPOCHS * COUNT; i++) assert_int_equal(seen[i], 1);
    }
    for (int w = 1; w < 3; w++)
        for (int e = 0; e < EPOCHS; e++)
            for (int id = 0; id < COUNT; id++) {
                const size_t slot = (size_t)e * COUNT + id;
                if (memcmp(results[w] + slot * IMG_DIM, results[0] + slot * IMG_DIM, sizeof(float) * IMG_DIM))
                    fail_msg("epoch %d, sample %d: %d ranks augment it differently from 1 rank", e, id, w + 1);
            }
    /* and it is the transform of the sample's own draw */
    for (int e = 0; e < EPOCHS; e++)
        for (int id = 0; id < COUNT; id++) {
            float want[IMG_DIM];
            int oy, ox, flip;
            memcpy(want, data.x + (size_t)id * IMG_DIM, sizeof want);
            ars_augment_draw(&aug, 9, e, (uint32_t)id, &oy, &ox, &flip);
            ars_augment_transform(want, IMG_C, IMG_H, IMG_W, aug.crop, oy, ox, flip);
            assert_memory_equal(results[0] + ((size_t)e * COUNT + id) * IMG_DIM, want, sizeof want);
        }
    for (int w = 0; w < 3; w++) free(results[w]);
    ars_dataset_free(&data);
}

/* ---- off by default ---------------------------------------------------------------- */

static void load_run(const char *text, ars_run_config *run, int expect_rc)
{
    ars_config config;
    ars_layer_spec *specs = NULL;
    int count = 0;
    int rc = ars_config_load_string(&config, text, "t.cfg");
    if (!rc) rc = ars_config_expand(&config);
    if (!rc) rc = ars_run_config_load(&config, run, &specs, &count);
    free(specs);
    ars_config_free(&config);
    if (rc != expect_rc) fail_msg("loading the run file returned %d, expected %d: %s", rc, expect_rc,
                                  ars_error_message());
}

static void test_off_by_default_leaves_data_unchanged(void **state)
{
    (void)state;
    ars_run_config run;
    load_run("[run]\ndata = fashion-mnist\n[dense]\nunits = 10\n", &run, 0);
    assert_int_equal(run.augment_crop, 0);
    assert_int_equal(run.augment_flip, 0);

    enum { ROWS = 3 };
    static float x[ROWS * IMG_DIM], copy[ROWS * IMG_DIM];
    random_images(x, ROWS, 2);
    /* values whose bits a copy through arithmetic could change */
    const uint32_t odd[] = {0x80000000u /* -0 */, 0x7fc01234u /* NaN payload */, 0x00000001u /* denormal */};
    for (int i = 0; i < 3; i++) memcpy(&x[5 * i + 1], &odd[i], sizeof odd[i]);
    memcpy(copy, x, sizeof x);
    const uint32_t ids[ROWS] = {0, 1, 2};
    const ars_augment off = {.crop = run.augment_crop, .flip = run.augment_flip};
    ARS_ASSERT_OK(ars_augment_apply(&off, 1, 0, x, ROWS, ids, IMG_C, IMG_H, IMG_W));
    assert_memory_equal(x, copy, sizeof x);
}

/* ---- distribution -------------------------------------------------------------------- */

static void test_draws_are_balanced_and_cover_the_offsets(void **state)
{
    (void)state;
    enum { N = 20000, P = 2, SPAN = 2 * P + 1 };
    const ars_augment both = {.crop = P, .flip = 1}, crop_only = {.crop = P, .flip = 0};
    const ars_augment flip_only = {.crop = 0, .flip = 1};
    int flips = 0, ys[SPAN] = {0}, xs[SPAN] = {0}, pairs[SPAN][SPAN] = {{0}};
    for (uint32_t id = 0; id < N; id++) {
        int oy, ox, flip, oy2, ox2, flip2;
        ars_augment_draw(&both, 77, 5, id, &oy, &ox, &flip);
        assert_true(oy >= 0 && oy < SPAN && ox >= 0 && ox < SPAN && (flip == 0 || flip == 1));
        flips += flip;
        ys[oy]++;
        xs[ox]++;
        pairs[oy][ox]++;
        /* the offsets do not depend on the flip being on, nor the flip on the crop */
        ars_augment_draw(&crop_only, 77, 5, id, &oy2, &ox2, &flip2);
        assert_true(oy2 == oy && ox2 == ox && flip2 == 0);
        ars_augment_draw(&flip_only, 77, 5, id, &oy2, &ox2, &flip2);
        assert_true(oy2 == 0 && ox2 == 0 && flip2 == flip);
    }
    /* binomial: std of the flip fraction 0.0035, of an offset's 0.0028 */
    printf("flipped %.4f; offsets y", (double)flips / N);
    for (int k = 0; k < SPAN; k++) printf(" %.3f", (double)ys[k] / N);
    printf(", x");
    for (int k = 0; k < SPAN; k++) printf(" %.3f", (double)xs[k] / N);
    printf("\n");
    assert_true(fabs((double)flips / N - 0.5) < 0.02);
    for (int k = 0; k < SPAN; k++) {
        assert_true(fabs((double)ys[k] / N - 1.0 / SPAN) < 0.015);
        assert_true(fabs((double)xs[k] / N - 1.0 / SPAN) < 0.015);
        for (int j = 0; j < SPAN; j++) assert_true(pairs[k][j] > N / (2 * SPAN * SPAN));   /* every corner */
    }
}

/* ---- the run file and the trainer ------------------------------------------------------ */

static void test_run_keys(void **state)
{
    (void)state;
    ars_run_config run;
    load_run("[run]\ndata = fashion-mnist\naugment_crop = 4\naugment_flip = true\n[dense]\nunits = 10\n", &run, 0);
    assert_int_equal(run.augment_crop, 4);
    assert_int_equal(run.augment_flip, 1);
    load_run("[run]\naugment_crop = -1\n[dense]\nunits = 10\n", &run, ARS_EINVAL);
    assert_message_has("augment_crop");
    load_run("[run]\naugment_flip = maybe\n[dense]\nunits = 10\n", &run, ARS_EINVAL);
    assert_message_has("augment_flip");
}

static void test_image_shape(void **state)
{
    (void)state;
    ars_dataset d;
    int c = 0, h = 0, w = 0;
    memset(&d, 0, sizeof d);
    d.dim = 784;
    d.shape = ars_shape_image(1, 28, 28);
    snprintf(d.name, sizeof d.name, "fashion-mnist/train");
    ARS_ASSERT_OK(ars_dataset_image_shape(&d, &c, &h, &w));
    assert_true(c == 1 && h == 28 && w == 28);
    d.dim = 300;
    d.shape = ars_shape_image(3, 10, 10);
    ARS_ASSERT_OK(ars_dataset_image_shape(&d, &c, &h, &w));
    assert_true(c == 3 && h == 10 && w == 10);
    snprintf(d.name, sizeof d.name, "spirals");
    d.dim = 2;
    d.shape.rank = 0;   /* none: [dim] */
    assert_int_equal(ars_dataset_image_shape(&d, &c, &h, &w), ARS_EINVAL);
    assert_message_has("'spirals' is not an image set: its samples are [2]");
}

static int train_text(const char *text, ars_train_result *result)
{
    ars_config config;
    ars_run_config run;
    ars_layer_spec *specs = NULL;
    int count = 0;
    memset(result, 0, sizeof *result);
    int rc = ars_config_load_string(&config, text, "test.cfg");
    if (!rc) rc = ars_config_expand(&config);
    if (!rc) rc = ars_run_config_load(&config, &run, &specs, &count);
    ars_train_options options = {.quiet = 1, .export_params = 1};
    if (!rc) rc = ars_train(&run, specs, count, NULL, &options, result);
    free(specs);
    ars_config_free(&config);
    return rc;
}

static void test_trainer_refuses_non_image_data(void **state)
{
    (void)state;
    ars_train_result result;
    const char *base = "[run]\ndata = spirals\ntrain_samples = 40\ntest_samples = 10\nepochs = 1\n%s\n"
                       "[dense]\nunits = 3\n";
    char text[256];
    snprintf(text, sizeof text, base, "augment_flip = true");
    assert_int_equal(train_text(text, &result), ARS_EINVAL);
    assert_message_has("[run] augment_flip = true with data = spirals");
    assert_message_has("not an image set");
    ars_test_result_free(&result);
    snprintf(text, sizeof text, base, "augment_crop = 3");
    assert_int_equal(train_text(text, &result), ARS_EINVAL);
    assert_message_has("[run] augment_crop = 3 with data = spirals");
    ars_test_result_free(&result);
}

static int have_fashion_mnist(void)
{
    char probe[512];
    snprintf(probe, sizeof probe, "%s/train-images-idx3-ubyte.gz", ARS_FASHION_MNIST_DIR);
    return access(probe, R_OK) == 0;
}

/* With lr = 0 the parameters never move, so the test loss shows whether
 * evaluation saw augmented images (it must not), and the training loss
 * whether the training batches did (they must). */
static void test_trainer_augments_training_batches_only(void **state)
{
    (void)state;
    if (!have_fashion_mnist()) skip();
    const char *base = "[run]\ndata = fashion-mnist\ntrain_limit = 96\ntest_limit = 64\nbatch = 32\nmax_steps = 3\n"
                       "lr = 0\nseed = 4\n%s\n[dense]\nunits = 10\n";
    char text[512];
    ars_train_result plain, augmented;
    snprintf(text, sizeof text, base, "");
    ARS_ASSERT_OK(train_text(text, &plain));
    snprintf(text, sizeof text, base, "augment_crop = 3\naugment_flip = true");
    ARS_ASSERT_OK(train_text(text, &augmented));
    printf("lr 0: train loss %.6f plain, %.6f augmented; test loss %.6f, %.6f\n", plain.last_loss,
           augmented.last_loss, plain.test_loss, augmented.test_loss);
    assert_int_equal(plain.param_count, augmented.param_count);
    assert_memory_equal(plain.params, augmented.params, sizeof(float) * plain.param_count);
    assert_true(plain.test_loss == augmented.test_loss);
    assert_true(fabs(plain.last_loss - augmented.last_loss) > 1e-4);
    ars_test_result_free(&plain);
    ars_test_result_free(&augmented);

    /* a crop that would leave nothing of a 28 x 28 image */
    snprintf(text, sizeof text, base, "augment_crop = 28");
    assert_int_equal(train_text(text, &plain), ARS_EINVAL);
    assert_message_has("augment_crop = 28 with data = fashion-mnist: expected 0 to 27");
    ars_test_result_free(&plain);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crop_and_flip_pixel_positions),
        cmocka_unit_test(test_zero_padding_matches_padded_reference),
        cmocka_unit_test(test_same_seed_epoch_id_same_output),
        cmocka_unit_test(test_independent_of_world_size),
        cmocka_unit_test(test_off_by_default_leaves_data_unchanged),
        cmocka_unit_test(test_draws_are_balanced_and_cover_the_offsets),
        cmocka_unit_test(test_run_keys),
        cmocka_unit_test(test_image_shape),
        cmocka_unit_test(test_trainer_refuses_non_image_data),
        cmocka_unit_test(test_trainer_augments_training_batches_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
