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

#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "arsenal/train.h"

static ars_dist world;

enum { SEQ_LEN = 12 };

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
    ars_test_equivalence_run(run, global_batch);
    strcpy(run->data, "adding");
    run->seq_len = SEQ_LEN;
    run->seed = 11;
    run->loss = ARS_LOSS_MSE;
    run->optim.lr = 3e-3f;
    run->bucket_mb = 0.002;       /* several buckets even for this small model */
    run->first_bucket_mb = 0.001;
}

/* model: the run file's text (its [run] only names the data) */
static void train(const void *model, ars_dist *dist, int global_batch, ars_train_result *result)
{
    ars_run_config run;
    int count;
    ars_layer_spec *specs = ars_test_load_specs(model, &count);
    make_run(&run, global_batch);
    ars_train_options options = {.quiet = 1, .export_params = 1};
    ARS_ASSERT_OK(ars_train(&run, specs, count, dist, &options, result));
    assert_non_null(result->params);
    free(specs);
}

static void check_equivalence(const char *label, const char *text)
{
    ars_test_equivalence e;
    ars_test_check_equivalence(&world, label, train, text, &e);
    ars_test_equivalence_free(&e);
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
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transformer_n_ranks_equal_one_rank),
        cmocka_unit_test(test_rnn_n_ranks_equal_one_rank),
    };
    return ars_test_mpi_main(&argc, &argv, &world, tests, sizeof tests / sizeof tests[0]);
}
