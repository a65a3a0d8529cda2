/* gen_data_corpus: writes the seed corpora of the user-data fuzz targets
 * (fuzz_h5data, fuzz_npy, fuzz_csv). Usage: gen_data_corpus DIR (DIR/h5data,
 * DIR/npy, DIR/csv must exist). Run by hand, or by scripts/fuzz.sh
 * --regen-data-seeds; the files are committed in tests/fuzz/corpus/.
 *   h5data: float32 x + uint8 y; a 4-D image x (chunked, gzip) with x_test
 *           and y_test; float64 regression targets [N, 2]; a file without y;
 *           a string y (refused)
 *   npy:    first byte = options (bit 0: regression), then x, "@@Y@@", y:
 *           float32 [N, F] + int64 labels; a v2 header, 4-D float64 + uint8;
 *           int16 x + float32 targets [N, 2]; Fortran order (refused)
 *   csv:    first byte = options (bit 0 regression, bit 1 limit 2), then
 *           the file: plain, quoted with \r\n and a BOM, regression,
 *           blank lines; a bad value (refused) */
#define _POSIX_C_SOURCE 200809L
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *dir;

static int h5_put(const char *name, int create, const char *dataset, hid_t file_type, hid_t mem, int rank,
                  const hsize_t *dims, const void *data, hsize_t chunk)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/h5data/%s", dir, name);
    hid_t f = create ? H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT) : H5Fopen(path, H5F_ACC_RDWR,
                                                                                             H5P_DEFAULT);
    if (f < 0) return 1;
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
    if (chunk) {
        hsize_t c[5];
        for (int d = 0; d < rank; d++) c[d] = dims[d];
        c[0] = chunk;
        H5Pset_chunk(plist, rank, c);
        H5Pset_deflate(plist, 4);
    }
    hid_t d = H5Dcreate2(f, dataset, file_type, space, H5P_DEFAULT, plist, H5P_DEFAULT);
    int rc = d < 0 || H5Dwrite(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0;
    if (d >= 0) H5Dclose(d);
    H5Pclose(plist);
    H5Sclose(space);
    H5Fclose(f);
    return rc;
}

/* The bytes of a .npy file (v1 or v2) into out; returns the size. */
static size_t npy_bytes(unsigned char *out, int version, const char *descr, int fortran, const char *shape,
                        const void *data, size_t bytes)
{
    char dict[256];
    snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }", descr,
             fortran ? "True" : "False", shape);
    const size_t preamble = version == 1 ? 10 : 12;
    size_t len = strlen(dict) + 1;
    while ((preamble + len) % 64) len++;
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (unsigned char)version;
    out[7] = 0;
    for (size_t i = 0; i < preamble - 8; i++) out[8 + i] = (unsigned char)(len >> (8 * i));
    memset(out + preamble, ' ', len);
    memcpy(out + preamble, dict, strlen(dict));
    out[preamble + len - 1] = '\n';
    memcpy(out + preamble + len, data, bytes);
    return preamble + len + bytes;
}

static int write_file(const char *sub, const char *name, const void *bytes, size_t size)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", dir, sub, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(bytes, 1, size, f) != size || fclose(f) != 0) {
        perror(path);
        return 1;
    }
    return 0;
}

static int npy_pair(const char *name, int options, size_t x_size, const unsigned char *x, size_t y_size,
                    const unsigned char *y)
{
    unsigned char *all = malloc(1 + x_size + 5 + y_size);
    if (!all) return 1;
    all[0] = (unsigned char)options;
    memcpy(all + 1, x, x_size);
    memcpy(all + 1 + x_size, "@@Y@@", 5);
    memcpy(all + 6 + x_size, y, y_size);
    int rc = write_file("npy", name, all, 1 + x_size + 5 + y_size);
    free(all);
    return rc;
}

static int csv_seed(const char *name, int options, const char *text)
{
    size_t n = strlen(text);
    char *all = malloc(n + 1);
    if (!all) return 1;
    all[0] = (char)options;
    memcpy(all + 1, text, n);
    int rc = write_file("csv", name, all, n + 1);
    free(all);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_data_corpus DIR (with DIR/h5data, DIR/npy, DIR/csv)\n");
        return 2;
    }
    dir = argv[1];
    int rc = 0;
    /* ---- h5data */
    float x[8 * 3];
    uint8_t y8[8];
    for (int i = 0; i < 24; i++) x[i] = (float)(i % 7) - 2.5f;
    for (int i = 0; i < 8; i++) y8[i] = (uint8_t)(i % 3);
    hsize_t xd[2] = {8, 3}, yd[1] = {8};
    rc |= h5_put("labels.h5", 1, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 0);
    rc |= h5_put("labels.h5", 0, "y", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, yd, y8, 0);
    uint8_t img[6 * 1 * 3 * 3];
    for (int i = 0; i < 54; i++) img[i] = (uint8_t)(i * 5);
    int16_t y16[6] = {0, 1, 0, 1, 1, 0};
    hsize_t id[4] = {6, 1, 3, 3}, iy[1] = {6};
    rc |= h5_put("images.h5", 1, "x", H5T_STD_U8LE, H5T_NATIVE_UINT8, 4, id, img, 2);
    rc |= h5_put("images.h5", 0, "y", H5T_STD_I16LE, H5T_NATIVE_INT16, 1, iy, y16, 0);
    id[0] = iy[0] = 2;
    rc |= h5_put("images.h5", 0, "x_test", H5T_STD_U8LE, H5T_NATIVE_UINT8, 4, id, img, 0);
    rc |= h5_put("images.h5", 0, "y_test", H5T_STD_I16LE, H5T_NATIVE_INT16, 1, iy, y16, 0);
    double t[8 * 2];
    for (int i = 0; i < 16; i++) t[i] = 0.25 * i - 1;
    hsize_t td[2] = {8, 2};
    rc |= h5_put("targets.h5", 1, "x", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, td, t, 4);
    rc |= h5_put("targets.h5", 0, "y", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, td, t, 0);
    rc |= h5_put("no-y.h5", 1, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 0);
    hid_t text = H5Tcopy(H5T_C_S1);
    H5Tset_size(text, 2);
    char strings[8][2] = {"a", "b", "c"};
    rc |= h5_put("string-y.h5", 1, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 0);
    rc |= h5_put("string-y.h5", 0, "y", text, text, 1, yd, strings, 0);
    H5Tclose(text);

    /* ---- npy */
    unsigned char xb[512], yb[512];
    int64_t y64[8];
    for (int i = 0; i < 8; i++) y64[i] = i % 3;
    size_t xs = npy_bytes(xb, 1, "<f4", 0, "(8, 3)", x, sizeof x);
    size_t ys = npy_bytes(yb, 1, "<i8", 0, "(8,)", y64, sizeof y64);
    rc |= npy_pair("labels", 0, xs, xb, ys, yb);
    double img64[6 * 1 * 2 * 2];
    for (int i = 0; i < 24; i++) img64[i] = i / 3.0;
    xs = npy_bytes(xb, 2, "<f8", 0, "(6, 1, 2, 2)", img64, sizeof img64);
    ys = npy_bytes(yb, 1, "|u1", 0, "(6,)", y8, 6);
    rc |= npy_pair("images-v2", 0, xs, xb, ys, yb);
    int16_t xi[4 * 2] = {1, -2, 3, -4, 5, -6, 7, 32767};
    float tf[4 * 2] = {0.5f, 1, 1.5f, 2, 2.5f, 3, 3.5f, 4};
    xs = npy_bytes(xb, 1, "<i2", 0, "(4, 2)", xi, sizeof xi);
    ys = npy_bytes(yb, 1, "<f4", 0, "(4, 2)", tf, sizeof tf);
    rc |= npy_pair("targets", 1, xs, xb, ys, yb);
    xs = npy_bytes(xb, 1, "<f4", 1, "(8, 3)", x, sizeof x);
    ys = npy_bytes(yb, 1, "<i8", 0, "(8,)", y64, sizeof y64);
    rc |= npy_pair("fortran", 0, xs, xb, ys, yb);

    /* ---- csv */
    rc |= csv_seed("plain", 0, "a,b,y\n1,2,0\n3.5,-4e-2,1\n0,0,2\n");
    rc |= csv_seed("quoted", 2, "\xef\xbb\xbf\"a\", \"b\"\"\" ,y\r\n\"1\",2,0\r\n\r\n3,\" 4 \",1\r\n5,6,1\r\n");
    rc |= csv_seed("regression", 1, "x1,x2,x3,y\n0.1,0.2,0.3,1.5\n1e3,-1e-3,7,-2.25\n");
    rc |= csv_seed("bad-value", 0, "a,b,y\n1,2,0\n1,x,0\n");
    if (rc) fprintf(stderr, "gen_data_corpus: writing a seed failed\n");
    return rc ? 1 : 0;
}
