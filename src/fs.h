/* fs: file-system helpers shared by the trainer, `arsenal experiment` and
 * `arsenal inspect --plot`. */
#ifndef ARSENAL_FS_H
#define ARSENAL_FS_H

/* mkdir -p DIR (modes 0777 less the umask), then require a writable
 * directory. Errors name the option the user gave (what, e.g. "--ckpt-dir"),
 * DIR and the component that failed. */
int ars_make_directories(const char *what, const char *dir);
/* The same without the parents: only DIR itself is created. */
int ars_make_directory(const char *what, const char *dir);

#endif
