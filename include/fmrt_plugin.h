/*
 * fmrt_plugin.h - the interface a native velocity-field plugin implements.
 *
 * A plugin is a shared library that exports one function, fmrt_plugin_v1,
 * returning a table of function pointers. fmrt loads the library, checks the
 * table's abi_version, creates one instance with a configuration string, and
 * calls velocity (and jvp, when given) on batches of states.
 *
 * Contract:
 * - Arrays are row-major, batch first. A state has the shape written by
 *   state_shape; x, v and out hold batch * (product of that shape) floats.
 * - t holds t_len times: either batch values (one per sample) or 1 value (one
 *   for all). t = 0 is noise, t = 1 is data.
 * - velocity and jvp may be called from several threads at once on the same
 *   instance; they must not modify shared state without synchronisation.
 * - Callbacks return 0 on success. On failure they return non-zero and may
 *   write a NUL-terminated message of at most err_len bytes into err.
 * - Callbacks must not unwind (no C++ exceptions or longjmp across them).
 * - destroy is called exactly once per created instance, after every other call
 *   on it has returned.
 *
 * This header may be included any number of times, from C or C++.
 */
#ifndef FMRT_PLUGIN_H
#define FMRT_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

/* The version of this interface; fmrt refuses a table with another value. */
#define FMRT_PLUGIN_ABI_VERSION 1u

/* The name of the exported entry symbol, as a string. */
#define FMRT_PLUGIN_ENTRY_SYMBOL "fmrt_plugin_v1"

#ifdef __cplusplus
extern "C" {
#endif

/* The table of a version-1 plugin. Fields are never reordered; a later version
   gets a new entry symbol. */
typedef struct fmrt_plugin_vtable_v1 {
    /* Must be FMRT_PLUGIN_ABI_VERSION. */
    uint32_t abi_version;
    /* Reserved; set to 0. */
    uint32_t reserved;
    /* A short human-readable name of the plugin (may be NULL). */
    const char *name;
    /* Creates an instance from config (a NUL-terminated string, "" when the host
       gives none) and stores it in *instance. Returns 0 on success. */
    int32_t (*create)(const char *config, void **instance, char *err, size_t err_len);
    /* Writes the state shape (without the batch axis) into shape[0..cap] and
       returns its rank; a rank larger than cap means nothing was written. Must
       return the same shape on every call. Rank 0 is not allowed. */
    size_t (*state_shape)(const void *instance, size_t *shape, size_t cap);
    /* Writes u(x, t) into out. Returns 0 on success. */
    int32_t (*velocity)(const void *instance, const float *x, size_t batch,
                        const double *t, size_t t_len, float *out,
                        char *err, size_t err_len);
    /* Optional (may be NULL): writes the Jacobian-vector product J(x, t) v into
       out, J = du/dx per sample; v and out are shaped like x. Returns 0 on
       success. */
    int32_t (*jvp)(const void *instance, const float *x, size_t batch,
                   const double *t, size_t t_len, const float *v, float *out,
                   char *err, size_t err_len);
    /* Releases an instance made by create. */
    void (*destroy)(void *instance);
} fmrt_plugin_vtable_v1;

/* The entry point every plugin exports: returns its table, which must stay
   valid while the library is loaded. */
typedef const fmrt_plugin_vtable_v1 *(*fmrt_plugin_v1_fn)(void);

#ifdef FMRT_PLUGIN_IMPLEMENTATION
/* Declaration of the entry point a plugin defines (define
   FMRT_PLUGIN_IMPLEMENTATION before including this header in the plugin). */
#if defined(_WIN32)
__declspec(dllexport)
#else
__attribute__((visibility("default")))
#endif
const fmrt_plugin_vtable_v1 *fmrt_plugin_v1(void);
#endif

#ifdef __cplusplus
}
#endif

#endif /* FMRT_PLUGIN_H */
