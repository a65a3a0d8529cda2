/* experiment: the driver of `arsenal experiment`. Sets the mode's budgets,
 * prepares the output and checkpoint directories on rank 0, runs the
 * selected sections in order on every rank (agreeing after each one that
 * none failed), then writes the document and counts the failed checks. */
#define _POSIX_C_SOURCE 200809L
#include "experiment.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "arsenal/train.h"
#include "../fs.h"

const char *const ars_exp_section_keys[ARS_EXP_SECTIONS] = {"activations", "init",       "normalization",
                                                            "residual",    "exploding",  "optimizers",
                                                            "degradation", "cure"};

typedef int (*section_fn)(ars_exp *e);

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void set_budget(ars_exp_budget *b, int quick)
{
    b->batch = 128;
    if (quick) {
        b->train_limit = 5000;
        b->test_limit = 1000;
        b->probe_every = 5;
        b->steps_activations = 60;
        b->steps_deep = 60;
        b->steps_residual = 60;
        b->steps_exploding = 60;
        /* ~20 s on 2 cores: the networks at a quarter of the width */
        b->degradation_train_limit = 5000;
        b->degradation_test_limit = 500;
        b->degradation_batch = 32;
        b->degradation_probe_every = 5;
        b->steps_degradation = 40;
        b->degradation_width = 4;
        b->cure_epochs = 4;
    } else {
        b->train_limit = 60000;   /* the whole training split */
        b->test_limit = 10000;
        b->probe_every = 10;
        b->steps_activations = 1500;
        b->steps_deep = 1000;
        b->steps_residual = 600;
        b->steps_exploding = 500;
        /* 3 epochs of 100 steps: 25.5 minutes measured on 2 cores shared with other jobs (load
         * about 6; a ResNet-56 step of batch 64 took 1.8 s), less on a quiet machine. 500 steps on
         * 8000 images took 49 minutes under a load of 10. */
        b->degradation_train_limit = 6400;
        b->degradation_test_limit = 2000;
        b->degradation_batch = 64;
        b->degradation_probe_every = 5;
        b->steps_degradation = 300;
        b->degradation_width = 16;
        b->cure_epochs = 8;   /* twice the 4 epochs the network cured by hand needs for 84% (docs/health.md) */
    }
}

/* Rank 0: out_dir/results and the checkpoint directory. */
static int prepare_directories(ars_exp *e)
{
    char results[1100];
    snprintf(results, sizeof results, "%s/results", e->options->out_dir);
    int rc = ars_make_directories("--out", results);
    if (rc) return rc;
    if (e->options->runs_dir) {
        e->keep_runs = 1;
        snprintf(e->runs_dir, sizeof e->runs_dir, "%s", e->options->runs_dir);
        return ars_make_directories("--runs", e->runs_dir);
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(e->runs_dir, sizeof e->runs_dir, "%s/arsenal-experiment-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(e->runs_dir)) return ars_error(ARS_EIO, "cannot create a directory %s: %s", e->runs_dir, strerror(errno));
    return 0;
}

/* A killed experiment removes its temporary checkpoints (rank 0). SIGINT
 * and SIGTERM write their number into a pipe (a handler may only make
 * async-signal-safe calls); a thread waiting on the pipe removes runs_dir,
 * then lets the process die of the same signal, as it would have. A run
 * can take minutes, so waiting for the next one to check a flag would be
 * too late for mpirun, which follows its SIGTERM with SIGKILL. The other
 * ranks get the signal too and take it the same way, minus the removal,
 * after a grace: mpirun kills the whole job as soon as one rank dies, and
 * on a busy machine that came before rank 0's thread had run. */
enum { OTHER_RANKS_GRACE_SECONDS = 3 };
enum { CLEANUP_SIGNALS = 2 };
static const int cleanup_signals[CLEANUP_SIGNALS] = {SIGINT, SIGTERM};
static int cleanup_pipe[2] = {-1, -1};

typedef struct cleanup {
    int active;
    pthread_t thread;
    const char *dir;
    struct sigaction old[CLEANUP_SIGNALS];
    int installed[CLEANUP_SIGNALS];
} cleanup;

static void on_signal(int sig)
{
    const int saved = errno;
    unsigned char byte = (unsigned char)sig;
    if (write(cleanup_pipe[1], &byte, 1) < 0) {}   /* the pipe full: a signal is already on its way */
    errno = saved;
}

/* The default action of sig, for the whole process: raised in this thread,
 * which gets it unblocked. */
static void die_of(int sig)
{
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
}

static void *cleanup_main(void *arg)
{
    const cleanup *c = arg;
    unsigned char sig = 0;
    while (read(cleanup_pipe[0], &sig, 1) < 0 && errno == EINTR) {}
    if (sig == 0) return NULL;   /* the experiment ended */
    if (!c->dir) {   /* not rank 0: die later, rank 0's death usually ends the job first */
        const struct timespec grace = {OTHER_RANKS_GRACE_SECONDS, 0};
        nanosleep(&grace, NULL);
        die_of(sig);
        return NULL;
    }
    fprintf(stderr, "arsenal experiment: %s: removing %s\n", sig == SIGINT ? "interrupted" : "terminated", c->dir);
    fflush(stderr);
    signal(sig, SIG_DFL);
    /* Training goes on meanwhile. Remove what is there, again every 2 ms,
     * until the trainer is between two checkpoint file operations and this
     * thread gets the lock: from then on training can create nothing more
     * (it waits for the lock until the process ends). Not waiting for the
     * lock first: a checkpoint write under load can outlast mpiexec's
     * grace before SIGKILL, and removing meanwhile unlinks its file. */
    const struct timespec nap = {0, 2000000};
    for (;;) {
        ars_exp_remove_tree(c->dir);
        if (ars_ckpt_dir_trylock()) break;
        nanosleep(&nap, NULL);
    }
    for (int pass = 0; pass < 100 && access(c->dir, F_OK) == 0; pass++) ars_exp_remove_tree(c->dir);
    die_of(sig);
    return NULL;
}

/* Starts the cleanup thread and the handlers. A signal the caller ignores
 * (nohup, a background job) stays ignored. Failing to start is no error:
 * the directory is then removed only at a normal end, as before. */
static void cleanup_start(cleanup *c, const char *dir)
{
    memset(c, 0, sizeof *c);
    c->dir = dir;
    if (pipe(cleanup_pipe) != 0) return;
    sigset_t all, old_mask;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old_mask);   /* the thread starts with every signal blocked */
    int rc = pthread_create(&c->thread, NULL, cleanup_main, c);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    if (rc != 0) {
        close(cleanup_pipe[0]);
        close(cleanup_pipe[1]);
        cleanup_pipe[0] = cleanup_pipe[1] = -1;
        return;
    }
    c->active = 1;
    for (int i = 0; i < CLEANUP_SIGNALS; i++) {
        if (sigaction(cleanup_signals[i], NULL, &c->old[i]) != 0 || c->old[i].sa_handler == SIG_IGN) continue;
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_handler = on_signal;
        sigemptyset(&action.sa_mask);
        c->installed[i] = sigaction(cleanup_signals[i], &action, NULL) == 0;
    }
}

/* Puts the caller's handlers back and ends the thread. */
static void cleanup_stop(cleanup *c)
{
    if (!c->active) return;
    for (int i = 0; i < CLEANUP_SIGNALS; i++)
        if (c->installed[i]) sigaction(cleanup_signals[i], &c->old[i], NULL);
    unsigned char end = 0;
    if (write(cleanup_pipe[1], &end, 1) == 1) pthread_join(c->thread, NULL);
    else pthread_detach(c->thread);
    close(cleanup_pipe[0]);
    close(cleanup_pipe[1]);
    cleanup_pipe[0] = cleanup_pipe[1] = -1;
    c->active = 0;
}

/* Every rank learns whether any failed: rc on the failing rank, ARS_EPEER on the others. */
static int agree(ars_exp *e, int rc)
{
    int failed = rc != 0;
    if (ars_dist_allreduce_max_int(e->dist, &failed)) return ARS_EMPI;
    if (!failed || rc) return rc;
    return ars_error(ARS_EPEER, "another rank failed");
}

static void free_experiment(ars_exp *e)
{
    for (int i = 0; i < e->run_count; i++) ars_exp_run_free(e->runs[i]);
    free(e->runs);
    free(e->claims);
    for (int s = 0; s < ARS_EXP_SECTIONS; s++) ars_exp_text_free(&e->body[s]);
}

static int count_failed_checks(const ars_exp *e)
{
    int failed = 0;
    for (int i = 0; i < e->claim_count; i++) failed += e->claims[i].check && !e->claims[i].check_passed;
    return failed;
}

int ars_experiment_run(const ars_experiment_options *options, ars_dist *dist, int *failed_checks)
{
    static const section_fn sections[ARS_EXP_SECTIONS] = {
        ars_exp_section_activations, ars_exp_section_init,      ars_exp_section_normalization,
        ars_exp_section_residual,    ars_exp_section_exploding, ars_exp_section_optimizers,
        ars_exp_section_degradation, ars_exp_section_cure};
    ars_exp e;
    memset(&e, 0, sizeof e);
    e.options = options;
    e.dist = dist;
    e.rank = dist ? dist->rank : 0;
    e.world = dist ? dist->size : 1;
    e.log = e.rank == 0 ? stdout : NULL;
    *failed_checks = 0;
    set_budget(&e.budget, options->quick);
    const double start = now_seconds();
    int rc = e.rank == 0 ? prepare_directories(&e) : 0;
    cleanup on_kill = {0};
    if (!rc && !options->runs_dir) cleanup_start(&on_kill, e.rank == 0 ? e.runs_dir : NULL);
    rc = agree(&e, rc);
    if (!rc) rc = ars_dist_broadcast_bytes(dist, e.runs_dir, sizeof e.runs_dir, 0);
    if (!rc && e.rank == 0) {
        e.plots_available = ars_exp_plot_available();
        fprintf(e.log, "arsenal experiment (%s mode): %d rank%s, seed %llu, output %s/arsenal-results.md, "
                "checkpoints in %s\n", options->quick ? "quick" : "full", e.world, e.world == 1 ? "" : "s",
                (unsigned long long)options->seed, options->out_dir, e.runs_dir);
        fflush(e.log);
    }
    for (int s = 0; s < ARS_EXP_SECTIONS && !rc; s++) {
        if (options->sections && !(options->sections & (1u << s))) continue;
        if (e.log) {
            fprintf(e.log, "section %d: %s\n", s + 1, ars_exp_section_keys[s]);
            fflush(e.log);
        }
        double t0 = now_seconds();
        rc = agree(&e, sections[s](&e));
        e.section_seconds[s] = now_seconds() - t0;
    }
    int failed = 0;
    if (!rc && e.rank == 0) {
        failed = count_failed_checks(&e);
        rc = ars_exp_write_document(&e, now_seconds() - start, failed);
        for (int i = 0; i < e.claim_count; i++) {
            const ars_exp_claim *c = &e.claims[i];
            if (c->check)
                fprintf(e.log, "check %s: %s\n", c->check_passed ? "passed" : "FAILED", c->check_text);
        }
        fprintf(e.log, "%d claims judged, %d plots, %d failed check%s, %.1f minutes\n", e.claim_count,
                e.plot_count, failed, failed == 1 ? "" : "s", (now_seconds() - start) / 60.0);
    }
    rc = agree(&e, rc);
    if (!rc) rc = ars_dist_broadcast_bytes(dist, &failed, sizeof failed, 0);
    *failed_checks = failed;
    if (e.rank == 0 && !e.keep_runs && e.runs_dir[0]) ars_exp_remove_tree(e.runs_dir);   /* also after an error */
    cleanup_stop(&on_kill);
    free_experiment(&e);
    return rc;
}
