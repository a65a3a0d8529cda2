/* error: errors are values. Library functions return 0 on success or a
 * negative ARS_E* code, after recording a message with context (file, line,
 * layer, expected vs found). The message lives in a per-thread buffer, like
 * errno, so that a failing call deep in a module does not need an error
 * object threaded through every signature. The library never exits. */
#ifndef ARSENAL_ERROR_H
#define ARSENAL_ERROR_H

enum {
    ARS_OK = 0,
    ARS_EINVAL = -1,   /* bad argument, config value or command line */
    ARS_ENOMEM = -2,   /* allocation failed or refused (too large) */
    ARS_EIO = -3,      /* file missing, unreadable, unwritable, short */
    ARS_EFORMAT = -4,  /* file content wrong: magic, version, shape, truncation */
    ARS_EMPI = -5,     /* an MPI call failed or ranks disagree */
    ARS_ENUMERIC = -6, /* non-finite values where they are not allowed */
    ARS_ESTOP = -7,    /* training stopped by policy (e.g. nonfinite = stop) */
    ARS_EPEER = -8     /* another rank failed; it reports the reason */
};

#if defined(__GNUC__)
#define ARS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ARS_PRINTF(a, b)
#endif

/* Returns from the calling function with expr's code when it is not 0
 * (an error already recorded): the one way the library, its tests and the
 * benches pass an error up. */
#define TRY(expr)                    \
    do {                             \
        int try_rc_ = (expr);        \
        if (try_rc_) return try_rc_; \
    } while (0)

/* Records a message (printf-style) and returns code, so callers can write
 * `return ars_error(ARS_EINVAL, "...", ...);`. */
int ars_error(int code, const char *fmt, ...) ARS_PRINTF(2, 3);

/* Prefixes the current message with more context ("loading x.h5: ").
 * Returns code unchanged. */
int ars_error_context(int code, const char *fmt, ...) ARS_PRINTF(2, 3);

/* The last recorded message ("" if none). */
const char *ars_error_message(void);

void ars_error_clear(void);

#endif
