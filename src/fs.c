/* fs: see fs.h. */
#define _POSIX_C_SOURCE 200809L
#include "fs.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arsenal/error.h"

static int make(const char *what, const char *dir, int parents)
{
    char path[4096];
    if (!dir || !*dir) return ars_error(ARS_EINVAL, "%s: an empty directory name", what);
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return ars_error(ARS_EINVAL, "%s: path too long (%zu bytes)", what, strlen(dir));
    for (char *p = path + 1; parents && *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            return ars_error(ARS_EIO, "%s %s: cannot create %s: %s", what, dir, path, strerror(errno));
        *p = '/';
    }
    if (mkdir(path, 0777) != 0 && errno != EEXIST)
        return ars_error(ARS_EIO, "%s %s: cannot create it: %s", what, dir, strerror(errno));
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return ars_error(ARS_EIO, "%s %s: exists and is not a directory", what, dir);
    if (access(path, W_OK | X_OK) != 0)
        return ars_error(ARS_EIO, "%s %s: not writable: %s", what, dir, strerror(errno));
    return 0;
}

int ars_make_directories(const char *what, const char *dir) { return make(what, dir, 1); }

int ars_make_directory(const char *what, const char *dir) { return make(what, dir, 0); }
