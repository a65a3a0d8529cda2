/* mpi_transformer_equivalence: data parallelism through the sequence layers.
 * N ranks with local batch b must end with the parameters of 1 rank with
 * batch N*b for a small Transformer (row embedding, learned positions, a
 * causal and a full pre-LN block, final LayerNorm, mean pooling) on the
 * adding problem, with Adam and active global-norm clipping, over a data
 * set whose last batch is partial (on 3 ranks one rank gets zero rows of
 * it). A second model checks the RNN the same way. Run under mpiexec -n 1,
 * 2 and 3 (tests/CMakeLists.txt). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "arsenal/config.h"
#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "arsenal/train.h"

static ars_dist world;

/* Float rounding of a different summation order (GEMM blocking over more
 * or fewer rows, all-reduce order), ~1e-7 relative per step, grown by 14
 * Adam steps. */
#define EQUIVALENCE_TOLERANCE 1e-5

/* 203 = 12 x 16 + 11 = 8 x 24 + 11: within 14 steps the partial last batch
 * comes on 2 ranks (8 + 3 rows) and on 3 ranks (8 + 3 + 0 rows). */
enum { LOCAL_BATCH = 8, TRAIN_SAMPLES = 203, STEPS = 14, SEQ_LEN = 12 };
#define CLIP_NORM 0.05f

static const char transformer_text[] =
    "[run]\ndata = adding\n"
    "[seq_dense]\ntime = 12\nunits = 16\n[positional]\n"
    "[transformer]\nunits = 16\nheads = 2\nhidden = 32\ncausal = true\n"
    "[transformer]\nunits = 16\nheads = 4\nhidden = 32\n"
    "[seq_layernorm]\n[mean_pool]\n[dense]\nunits = 1\n";

static const char rnn_text[] =
    "[run]\ndata = adding\n"
    "[rnn]\ntime = 12\nunits = 16\n[last_step]\n[dense]\nunits = 1\n";

static void make_run(ars_run_config *run, int global_batch)
{
    memset(run, 0, sizeof *run);
    strcpy(run->data, "adding");
    run->seq_len = SEQ_LEN;
    run->train_samples = TRAIN_SAMPLES;
    run->test_samples = 50;
    run->epochs = 0;
    run->max_steps = STEPS;
    run->batch = global_batch;
    run->batch_is_global = 1;
    run->seed = 11;
    run->loss = ARS_LOSS_MSE;
    ars_optim_config_defaults(&run->optim, ARS_OPT_ADAM);
    run->optim.lr = 3e-3f;
    run->schedule.kind = ARS_SCHED_CONSTANT;
    run->clip_norm = CLIP_NORM;   /* well below the gradient norm: clipping is active */
    run->overlap = 1;
    run->bucket_mb = 0.002;       /* several buckets even for this small model */
    run->first_bucket_mb = 0.001;
    run->check_every = 5;
    run->log_every = 1000;
    run->probe_every = 3;         /* probe steps record the per-step gradient norms */
    run->histogram_bins = 8;
    run->ckpt_keep = 1;
}

static void train(const char *text, ars_dist *dist, int global_batch, ars_train_result *result)
{
    ars_config config;
    ars_run_config ignored, run;
    ars_layer_spec *specs = NULL;
    int count;
    ARS_ASSERT_OK(ars_config_load_string(&config, text, "model.cfg"));
    ARS_ASSERT_OK(ars_config_expand(&config));
    ARS_ASSERT_OK(ars_run_config_load(&config, &ignored, &specs, &count));
    make_run(&run, global_batch);
    ars_train_options options = {.quiet = 1, .export_params = 1};
    ARS_ASSERT_OK(ars_train(&run, specs, count, dist, &options, result));
    assert_non_null(result->params);
    free(specs);
    ars_config_free(&config);
}

static void check_equivalence(const char *label, const char *text)
{
    ars_train_result single, parallel;
    const int global = LOCAL_BATCH * world.size;
    train(text, NULL, global, &single);     /* this process alone, global batch */
    train(text, &world, global, &parallel); /* all ranks, local batch b */
    assert_int_equal(single.param_count, parallel.param_count);
    double diff = ars_test_max_abs_diff(single.params, parallel.params, single.param_count);
    if (world.rank == 0)
        printf("%s, ranks %d: max |param difference| %.3g (tolerance %.1g); loss %.4f vs %.4f; last grad norm "
               "%.3g (clip at %.2g)\n", label, world.size, diff, EQUIVALENCE_TOLERANCE, single.last_loss,
               parallel.last_loss, parallel.last_grad_norm, CLIP_NORM);
    assert_true(parallel.last_grad_norm > 2 * CLIP_NORM);   /* clipping was really active */
    assert_true(diff < EQUIVALENCE_TOLERANCE);
    assert_true(fabs(single.last_loss - parallel.last_loss) < 1e-4);
    assert_true(fabs(single.test_loss - parallel.test_loss) < 1e-4);
    ARS_ASSERT_OK(ars_dist_check_consistent(&world, parallel.params, parallel.param_count, STEPS, "parameters"));
    free(single.params);
    free(single.state);
    free(parallel.params);
    free(parallel.state);
}

static void test_transformer_n_ranks_equal_one_rank(void **state)
{
    check_equivalence("transformer", transformer_text);
}

static void test_rnn_n_ranks_equal_one_rank(void **state)
{
    check_equivalence("rnn", rnn_text);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (ars_dist_create(&world, MPI_COMM_WORLD)) {
        fprintf(stderr, "%s\n", ars_error_message());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transformer_n_ranks_equal_one_rank),
        cmocka_unit_test(test_rnn_n_ranks_equal_one_rank),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    ars_dist_destroy(&world);
    if (failed) MPI_Abort(MPI_COMM_WORLD, 1);   /* never leave the other ranks waiting */
    MPI_Finalize();
    return 0;
}
