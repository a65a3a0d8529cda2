/* main: `arsenal <command>` dispatch and the top-level help. */
#include <stdio.h>
#include <string.h>

#include "arsenal/version.h"
#include "cli.h"

static const char usage[] =
    "arsenal " ARSENAL_VERSION " - data-parallel deep-network training (MPI + OpenBLAS) that measures\n"
    "gradient health layer by layer and shows each cure for vanishing/exploding gradients working.\n"
    "\n"
    "usage:\n"
    "  arsenal train FILE.cfg [--set section.key=value]... [--ckpt-dir DIR] [--resume CKPT.h5]\n"
    "                         [--metrics FILE.jsonl] [--quiet]\n"
    "  arsenal gradcheck FILE.cfg [--set section.key=value]... [--rows N] [--coords N] [--step H]\n"
    "  arsenal inspect CKPT.h5 [CKPT2.h5] [--json] [--plot DIR] [--blame]\n"
    "  arsenal replay CKPT.h5 --step K [--against CKPT2.h5]   recompute one step on one process\n"
    "  arsenal evaluate CKPT.h5 [--data SPEC] [--split test|train] [--set section.key=value]...\n"
    "                           [--batch N] [--json] [--plot DIR]\n"
    "  arsenal predict CKPT.h5 INPUT [--out FILE.csv|FILE.h5] [--top K] [--batch N]\n"
    "  arsenal export CKPT.h5 --onnx FILE.onnx   the trained model as an ONNX graph\n"
    "  arsenal experiment [--quick] [--out DIR]   reproduce the lecture's claims, measured\n"
    "  mpirun -np 4 arsenal train FILE.cfg      the same commands, data-parallel over 4 ranks\n"
    "\n"
    "  arsenal COMMAND --help     help for one command\n"
    "  arsenal --version\n"
    "\n"
    "Run files: see examples/*.cfg and README.md.\n";

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("arsenal %s (commit %s)\n", ARSENAL_VERSION, ars_git_commit());
        return 0;
    }
    if (strcmp(argv[1], "train") == 0) return ars_cmd_train(argc - 1, argv + 1);
    if (strcmp(argv[1], "gradcheck") == 0) return ars_cmd_gradcheck(argc - 1, argv + 1);
    if (strcmp(argv[1], "inspect") == 0) return ars_cmd_inspect(argc - 1, argv + 1);
    if (strcmp(argv[1], "replay") == 0) return ars_cmd_replay(argc - 1, argv + 1);
    if (strcmp(argv[1], "experiment") == 0) return ars_cmd_experiment(argc - 1, argv + 1);
    if (strcmp(argv[1], "evaluate") == 0) return ars_cmd_evaluate(argc - 1, argv + 1);
    if (strcmp(argv[1], "predict") == 0) return ars_cmd_predict(argc - 1, argv + 1);
    if (strcmp(argv[1], "export") == 0) return ars_cmd_export(argc - 1, argv + 1);
    fprintf(stderr, "arsenal: unknown command '%s' (expected train, gradcheck, inspect, evaluate, predict, export or "
            "experiment; arsenal --help)\n", argv[1]);
    return 2;
}
