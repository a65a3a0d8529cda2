/* fmnist_subset: a few real Fashion-MNIST images for the convolutional
 * MPI tests (tests/mpi_conv_*.c), header-only. The first `train` training
 * and `test` test images and labels of the installed set are copied into
 * uncompressed IDX files of a fresh temporary directory, which a run's
 * data_dir then names: each of the tests' many short runs reads a few
 * hundred kilobytes instead of inflating all 70000 images (half a second
 * a run and rank). The pixels and labels are the set's own bytes, in its
 * order, so `train_limit = train` on the installed set loads the same data. */
#ifndef ARSENAL_TEST_FMNIST_SUBSET_H
#define ARSENAL_TEST_FMNIST_SUBSET_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arsenal/data.h"
#include "testutil.h"

/* The IDX file from with its first count items only, written to to. */
static void ars_test_idx_prefix(const char *from, const char *to, int count)
{
    ars_idx idx;
    ARS_ASSERT_OK(ars_idx_read(from, &idx));
    assert_true(idx.ndim >= 1 && idx.ndim <= 4);
    assert_true(idx.dims[0] >= count);
    const size_t item = idx.count / (size_t)idx.dims[0], header = 4 + 4 * (size_t)idx.ndim;
    unsigned char *bytes = malloc(header + item * (size_t)count);
    assert_non_null(bytes);
    bytes[0] = bytes[1] = 0;
    bytes[2] = 0x08;   /* unsigned bytes */
    bytes[3] = (unsigned char)idx.ndim;
    for (int d = 0; d < idx.ndim; d++) {
        const unsigned value = d == 0 ? (unsigned)count : (unsigned)idx.dims[d];
        for (int k = 0; k < 4; k++) bytes[4 + 4 * d + k] = (unsigned char)(value >> (24 - 8 * k));   /* big-endian */
    }
    memcpy(bytes + header, idx.data, item * (size_t)count);
    ars_test_write_file(to, bytes, header + item * (size_t)count);
    free(bytes);
    ars_idx_free(&idx);
}

/* Writes the subset into a fresh directory (its path in dir); returns 0
 * (dir empty) when Fashion-MNIST is not installed. */
static int ars_test_fmnist_subset(char *dir, size_t size, const char *tag, int train, int test)
{
    static const char *const files[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    char from[600];
    dir[0] = 0;
    snprintf(from, sizeof from, "%s/%s.gz", ARS_FASHION_MNIST_DIR, files[0]);
    if (access(from, R_OK) != 0) return 0;
    ars_test_tempdir(dir, size, tag);
    for (int f = 0; f < 4; f++) {
        char to[600];
        snprintf(from, sizeof from, "%s/%s.gz", ARS_FASHION_MNIST_DIR, files[f]);
        snprintf(to, sizeof to, "%s/%s", dir, files[f]);
        ars_test_idx_prefix(from, to, f < 2 ? train : test);
    }
    return 1;
}

#endif
