/* test_optim: SGD/Adam/AdamW updates against torch.optim over three steps,
 * config validation and names, and the learning-rate schedules. */
#include "testutil.h"

#include <math.h>
#include <string.h>

#include "arsenal/error.h"
#include "arsenal/optim.h"

enum { N = 5 };

/* The fixture the torch references were computed on. */
static const float p0[N] = {0.5f, -1.0f, 2.0f, 0.0f, 1e-3f};
static const float grads[3][N] = {{0.1f, -0.2f, 0.3f, -0.4f, 5.0f},
                                  {-0.05f, 0.4f, 0.1f, 0.2f, -3.0f},
                                  {0.3f, 0.0f, -0.6f, 0.25f, 1e-4f}};
static const float lrs[3] = {0.1f, 0.05f, 0.02f};

/* Three steps with per-step lr, then compare to the reference. */
static void run_and_check(const ars_optim_config *config, const float expected[N], double tol)
{
    ars_optimizer opt;
    ARS_ASSERT_OK(ars_optimizer_create(&opt, config, N));
    float p[N];
    memcpy(p, p0, sizeof p);
    for (int t = 0; t < 3; t++) ars_optimizer_step(&opt, p, grads[t], lrs[t]);
    assert_int_equal(opt.step, 3);
    for (int i = 0; i < N; i++)
        if (fabs((double)p[i] - expected[i]) > tol)
            fail_msg("%s: p[%d] = %.9g, torch gives %.9g", ars_optimizer_name(config->kind), i,
                     p[i], expected[i]);
    ars_optimizer_destroy(&opt);
}

/* Expected values below: torch 1.13 (python3-torch), float32, e.g.
 *   p = torch.tensor(p0, requires_grad=True); opt = torch.optim.SGD([p], lr=0.1, ...)
 *   for t in range(3): opt.param_groups[0]['lr'] = lrs[t]; p.grad = grads[t]; opt.step()
 */
static void test_sgd_plain(void **state)
{
    (void)state;
    ars_optim_config c;
    ars_optim_config_defaults(&c, ARS_OPT_SGD);
    static const float want[N] = {0.486499995f, -1.0f, 1.977f, 0.0250000022f, -0.349002004f};
    run_and_check(&c, want, 1e-6);

    ars_optimizer opt;
    ARS_ASSERT_OK(ars_optimizer_create(&opt, &c, N));
    assert_null(opt.m);   /* no momentum: no buffer, as torch */
    assert_null(opt.v);
    ars_optimizer_destroy(&opt);
}

static void test_sgd_momentum(void **state)
{
    (void)state;
    ars_optim_config c;
    ars_optim_config_defaults(&c, ARS_OPT_SGD);
    c.momentum = 0.9f;
    static const float want[N] = {0.481279999f, -0.99496001f, 1.95684004f, 0.045880001f,
                                  -0.601001978f};
    run_and_check(&c, want, 1e-6);
}

static void test_sgd_nesterov_weight_decay(void **state)
{
    (void)state;
    ars_optim_config c;
    ars_optim_config_defaults(&c, ARS_OPT_SGD);
    c.momentum = 0.9f;
    c.nesterov = 1;
    c.weight_decay = 0.01f;
    static const float want[N] = {0.467710346f, -0.991569877f, 1.93037033f, 0.0661797002f,
                                  -0.889422059f};
    run_and_check(&c, want, 1e-6);
}

static void test_sgd_weight_decay(void **state)
{
    (void)state;
    ars_optim_config c;
    ars_optim_config_defaults(&c, ARS_OPT_SGD);
    c.weight_decay = 0.1f;
    static const float want[N] = {0.47810486f, -0.983179688f, 1.94337952f, 0.0247404035f,
                                  -0.345823944f};
    run_and_check(&c, want, 1e-6);
}

/* One SGD step by hand: p - lr*(g + wd*p). */
static void test_sgd_one_step_by_hand(void **state)
{
    (void)state;
    ars_optim_config c;
    ars_optim_config_defaults(&c, ARS_OPT_SGD);
    c.momentum = 0.5f;
    c.weight_decay = 0.1f;
    ars_optimizer opt;
    ARS_ASSERT_OK(ars_optimizer_create(&opt, &c, 1));
    float p = 2.0f, g = 1.0f;
    ars_optimizer_step(&opt, &p, &g, 0.1f);
    assert_float_equal(p, 2.0f - 0.1f * 1.2f, 1e-7);        /* buf = d = 1.2 */
    assert_float_equal(opt.m[0], 1.2f, 1e-7);
    ars_optimizer_step(&opt, &p, &g, 0.1f);
    float d = 1.0f + 0.1f * 1.88f, buf = 0.5f * 1.2f + d;   /* p = 1.88 now */
    assert_float_equal(p, 1.88f - 0.1f * buf, 1e-6);
    ars_optimizer_destroy(&opt);
}

static void test_adam(void **state)
{
    (void)state;
    ars_optim_config c;
    ars_optim_config_defaults(&c, ARS_OPT_ADAM);
    assert_float_equal(c.beta1, 0.9f, 0);
    assert_float_equal(c.beta2, 0.999f, 0);
    assert_float_equal(c.eps, 1e-8f, 0);
    assert_float_equal(c.weight_decay, 0.0f, 0);
    /* torch.optim.Adam([p], lr=0.1) */
    static const float want[N] = {0.373273164f, -0.923965156f, 1.86147738f, 0.110671751f,
                                  -0.111535683f};
    run_and_check(&c, want, 2e-6);
}

static void test_adam_weight_decay(void **state)
{
    (void)state;
    ars_optim_config c;
    ars_optim_config_defaults(&c, ARS_OPT_ADAM);
    c.weight_decay = 0.1f;
    c.beta1 = 0.8f;
    c.beta2 = 0.99f;
    c.eps = 1e-6f;
    /* torch.optim.Adam([p], lr=0.1, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6) */
    static const float want[N] = {0.354888737f, -0.905256212f, 1.85030472f, 0.104863919f,
                                  -0.107581414f};
    run_and_check(&c, want, 2e-6);
}

static void test_adamw(void **state)
{
    (void)state;
    ars_optim_config c;
    ars_optim_config_defaults(&c, ARS_OPT_ADAMW);
    assert_float_equal(c.weight_decay, 0.01f, 0);   /* torch's AdamW default */
    c.weight_decay = 0.1f;
    /* torch.optim.AdamW([p], lr=0.1, weight_decay=0.1) */
    static const float want[N] = {0.365538776f, -0.907707453f, 1.82842338f, 0.109946117f,
                                  -0.110834457f};
    run_and_check(&c, want, 2e-6);
}

/* First Adam step is lr*sign(g) (up to eps): bias correction at work. */
static void test_adam_first_step_is_sign(void **state)
{
    (void)state;
    ars_optim_config c;
    ars_optim_config_defaults(&c, ARS_OPT_ADAM);
    ars_optimizer opt;
    ARS_ASSERT_OK(ars_optimizer_create(&opt, &c, 3));
    float p[3] = {0, 0, 0}, g[3] = {0.1f, -50.0f, 7.0f};
    ars_optimizer_step(&opt, p, g, 0.01f);
    assert_float_equal(p[0], -0.01f, 1e-7);
    assert_float_equal(p[1], 0.01f, 1e-7);
    assert_float_equal(p[2], -0.01f, 1e-7);
    ars_optimizer_destroy(&opt);
}

/* An odd size exercises the vectorized loops' tails: every element must
 * match the same updates done on a 1-element optimizer. */
static void test_large_matches_elementwise(void **state)
{
    (void)state;
    enum { M = 1027, STEPS = 4 };
    static float p[M], g[M];
    for (ars_optimizer_kind kind = ARS_OPT_SGD; kind <= ARS_OPT_ADAMW; kind++) {
        ars_optim_config c;
        ars_optim_config_defaults(&c, kind);
        c.momentum = 0.9f;
        c.nesterov = 1;
        c.weight_decay = 0.05f;
        ars_optimizer big;
        ARS_ASSERT_OK(ars_optimizer_create(&big, &c, M));
        for (int i = 0; i < M; i++) p[i] = sinf((float)i);
        for (int t = 0; t < STEPS; t++) {
            for (int i = 0; i < M; i++) g[i] = cosf((float)(i * (t + 2)));
            ars_optimizer_step(&big, p, g, 0.01f);
        }
        for (int i = 0; i < M; i += 17) {
            ars_optimizer solo;
            ARS_ASSERT_OK(ars_optimizer_create(&solo, &c, 1));
            float x = sinf((float)i);
            for (int t = 0; t < STEPS; t++) {
                float gi = cosf((float)(i * (t + 2)));
                ars_optimizer_step(&solo, &x, &gi, 0.01f);
            }
            if (fabsf(p[i] - x) > 1e-6f)
                fail_msg("%s: element %d: %.9g vs %.9g alone", ars_optimizer_name(kind), i,
                         p[i], x);
            ars_optimizer_destroy(&solo);
        }
        ars_optimizer_destroy(&big);
    }
}

/* The clip scale applied inside the optimizer's pass gives bitwise the
 * update of scaling the gradient in place first (train_step relies on it:
 * probe steps scale in place, the others fuse), for every optimizer. */
static void test_scaled_step_is_bitwise_in_place(void **state)
{
    (void)state;
    enum { M = 1003 };   /* not a multiple of any vector width */
    static float g[M], scaled[M], p_fused[M], p_in_place[M];
    for (int i = 0; i < M; i++) g[i] = sinf(0.37f * (float)i) * (i % 7 == 0 ? 40.0f : 0.5f);
    const struct { ars_optimizer_kind kind; float momentum; int nesterov; float wd; } cases[] = {
        {ARS_OPT_SGD, 0, 0, 0.01f}, {ARS_OPT_SGD, 0.9f, 0, 0}, {ARS_OPT_SGD, 0.9f, 1, 0.01f},
        {ARS_OPT_ADAM, 0, 0, 0.01f}, {ARS_OPT_ADAMW, 0, 0, 0.01f}};
    const float scale = 0.0123456789f;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        ars_optim_config c;
        ars_optim_config_defaults(&c, cases[k].kind);
        c.momentum = cases[k].momentum;
        c.nesterov = cases[k].nesterov;
        c.weight_decay = cases[k].wd;
        ars_optimizer fused, in_place;
        ARS_ASSERT_OK(ars_optimizer_create(&fused, &c, M));
        ARS_ASSERT_OK(ars_optimizer_create(&in_place, &c, M));
        for (int i = 0; i < M; i++) p_fused[i] = p_in_place[i] = cosf((float)i);
        for (int step = 0; step < 3; step++) {
            ars_optimizer_step_scaled(&fused, p_fused, g, scale, 1e-2f);
            for (int i = 0; i < M; i++) scaled[i] = g[i] * scale;
            ars_optimizer_step(&in_place, p_in_place, scaled, 1e-2f);
        }
        assert_memory_equal(p_fused, p_in_place, sizeof p_fused);
        ars_optimizer_destroy(&fused);
        ars_optimizer_destroy(&in_place);
    }
}

static void test_names_and_validation(void **state)
{
    (void)state;
    ars_optimizer_kind k;
    ARS_ASSERT_OK(ars_optimizer_parse("adamw", &k));
    assert_int_equal(k, ARS_OPT_ADAMW);
    assert_string_equal(ars_optimizer_name(ARS_OPT_SGD), "sgd");
    assert_int_equal(ars_optimizer_parse("rmsprop", &k), ARS_EINVAL);
    assert_non_null(strstr(ars_error_message(), "rmsprop"));
    assert_non_null(strstr(ars_error_message(), "sgd, adam, adamw"));

    ars_optim_config c;
    ars_optimizer opt;
    ars_optim_config_defaults(&c, ARS_OPT_SGD);
    c.nesterov = 1;   /* torch refuses nesterov without momentum too */
    assert_int_equal(ars_optimizer_create(&opt, &c, 4), ARS_EINVAL);
    assert_non_null(strstr(ars_error_message(), "nesterov"));
    ars_optim_config_defaults(&c, ARS_OPT_ADAM);
    c.beta2 = 1.0f;
    assert_int_equal(ars_optimizer_create(&opt, &c, 4), ARS_EINVAL);
    assert_non_null(strstr(ars_error_message(), "beta2"));
    ars_optim_config_defaults(&c, ARS_OPT_ADAM);
    c.eps = 0.0f;
    assert_int_equal(ars_optimizer_create(&opt, &c, 4), ARS_EINVAL);
    ars_optim_config_defaults(&c, ARS_OPT_SGD);
    c.weight_decay = -1.0f;
    assert_int_equal(ars_optimizer_create(&opt, &c, 4), ARS_EINVAL);
    assert_non_null(strstr(ars_error_message(), "weight_decay"));
    ars_optimizer_destroy(&opt);   /* safe after a failed create */

    ars_schedule_kind s;
    ARS_ASSERT_OK(ars_schedule_parse("cosine", &s));
    assert_int_equal(s, ARS_SCHED_COSINE);
    assert_string_equal(ars_schedule_name(ARS_SCHED_STEP), "step");
    assert_int_equal(ars_schedule_parse("linear", &s), ARS_EINVAL);
    assert_non_null(strstr(ars_error_message(), "constant, step, cosine"));
}

static void test_schedule_constant_and_warmup(void **state)
{
    (void)state;
    ars_schedule s = {.kind = ARS_SCHED_CONSTANT};
    ARS_ASSERT_OK(ars_schedule_check(&s));
    assert_float_equal(ars_schedule_lr(&s, 0.1f, 0), 0.1f, 0);
    assert_float_equal(ars_schedule_lr(&s, 0.1f, 123456), 0.1f, 0);
    s.warmup_steps = 4;
    assert_float_equal(ars_schedule_lr(&s, 0.1f, 0), 0.025f, 1e-9);
    assert_float_equal(ars_schedule_lr(&s, 0.1f, 1), 0.05f, 1e-9);
    assert_float_equal(ars_schedule_lr(&s, 0.1f, 3), 0.1f, 1e-9);
    assert_float_equal(ars_schedule_lr(&s, 0.1f, 4), 0.1f, 1e-9);
}

static void test_schedule_step(void **state)
{
    (void)state;
    ars_schedule s = {.kind = ARS_SCHED_STEP, .step_size = 10, .gamma = 0.5f};
    ARS_ASSERT_OK(ars_schedule_check(&s));
    assert_float_equal(ars_schedule_lr(&s, 0.8f, 0), 0.8f, 1e-9);
    assert_float_equal(ars_schedule_lr(&s, 0.8f, 9), 0.8f, 1e-9);
    assert_float_equal(ars_schedule_lr(&s, 0.8f, 10), 0.4f, 1e-9);
    assert_float_equal(ars_schedule_lr(&s, 0.8f, 29), 0.2f, 1e-9);
    assert_float_equal(ars_schedule_lr(&s, 0.8f, 30), 0.1f, 1e-9);
    /* With warm-up the decay counts from the end of warm-up. */
    s.warmup_steps = 5;
    assert_float_equal(ars_schedule_lr(&s, 0.8f, 2), 0.8f * 3 / 5, 1e-7);
    assert_float_equal(ars_schedule_lr(&s, 0.8f, 14), 0.8f, 1e-9);
    assert_float_equal(ars_schedule_lr(&s, 0.8f, 15), 0.4f, 1e-9);
    s.step_size = 0;
    assert_int_equal(ars_schedule_check(&s), ARS_EINVAL);
    assert_non_null(strstr(ars_error_message(), "step_size"));
}

static void test_schedule_cosine(void **state)
{
    (void)state;
    ars_schedule s = {.kind = ARS_SCHED_COSINE, .total_steps = 100, .min_lr = 0.001f};
    ARS_ASSERT_OK(ars_schedule_check(&s));
    assert_float_equal(ars_schedule_lr(&s, 0.1f, 0), 0.1f, 1e-9);
    /* Halfway: the mean of lr and min_lr. */
    assert_float_equal(ars_schedule_lr(&s, 0.1f, 50), 0.0505f, 1e-8);
    /* Quarter: min + (lr-min)(1+cos(pi/4))/2 = 0.001 + 0.099*0.853553 */
    assert_float_equal(ars_schedule_lr(&s, 0.1f, 25), 0.0855017857f, 1e-8);
    assert_float_equal(ars_schedule_lr(&s, 0.1f, 100), 0.001f, 0);
    assert_float_equal(ars_schedule_lr(&s, 0.1f, 5000), 0.001f, 0);
    /* Monotone decreasing. */
    for (int t = 1; t <= 100; t++)
        assert_true(ars_schedule_lr(&s, 0.1f, t) <= ars_schedule_lr(&s, 0.1f, t - 1));
    /* Warm-up 10 then cosine over the remaining 90 steps. */
    s.warmup_steps = 10;
    assert_float_equal(ars_schedule_lr(&s, 0.1f, 0), 0.01f, 1e-9);
    assert_float_equal(ars_schedule_lr(&s, 0.1f, 9), 0.1f, 1e-9);
    assert_float_equal(ars_schedule_lr(&s, 0.1f, 10), 0.1f, 1e-9);
    assert_float_equal(ars_schedule_lr(&s, 0.1f, 55), 0.0505f, 1e-8);
    assert_float_equal(ars_schedule_lr(&s, 0.1f, 100), 0.001f, 0);
    s.total_steps = 10;
    assert_int_equal(ars_schedule_check(&s), ARS_EINVAL);
    assert_non_null(strstr(ars_error_message(), "total_steps"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_plain),
        cmocka_unit_test(test_sgd_momentum),
        cmocka_unit_test(test_sgd_nesterov_weight_decay),
        cmocka_unit_test(test_sgd_weight_decay),
        cmocka_unit_test(test_sgd_one_step_by_hand),
        cmocka_unit_test(test_adam),
        cmocka_unit_test(test_adam_weight_decay),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_adam_first_step_is_sign),
        cmocka_unit_test(test_large_matches_elementwise),
        cmocka_unit_test(test_scaled_step_is_bitwise_in_place),
        cmocka_unit_test(test_names_and_validation),
        cmocka_unit_test(test_schedule_constant_and_warmup),
        cmocka_unit_test(test_schedule_step),
        cmocka_unit_test(test_schedule_cosine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
