/*
 * fmrt_plugin.h - the interface a native velocity-field plugin implements.
 *
 * A plugin is a shared library that exports an entry function returning a
 * table of function pointers. fmrt loads the library, checks the table, creates
 * one instance with a configuration string, and calls velocity (and the
 * derivatives the table offers) on batches of states.
 *
 * Two versions of the interface exist, each with its own entry symbol:
 * - version 2, fmrt_plugin_v2 (below): a table with its own size and
 *   capability flags, calls through a size-prefixed call descriptor, extras
 *   (conditioning inputs), per-call state shapes, JVPs, stacked JVPs and the
 *   exact divergence. fmrt uses it when the library exports it.
 * - version 1, fmrt_plugin_v1: a fixed state shape, velocity and an optional
 *   JVP. Still loaded as before when a library exports only it.
 *
 * Contract (both versions):
 * - Arrays are row-major, batch first. A state has the shape written by
 *   state_shape (or, version 2 with FMRT_PLUGIN_CAP_DYNAMIC_SHAPE, the shape
 *   of the call); x, v and out hold batch * (product of that shape) floats.
 * - t holds t_len times: either batch values (one per sample) or 1 value (one
 *   for all). t = 0 is noise, t = 1 is data.
 * - Every callback but create and destroy may be called from several threads
 *   at once on the same instance; they must not modify shared state without
 *   synchronisation.
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

/* The version a version-1 table reports; fmrt refuses a fmrt_plugin_v1 table
   with another value. */
#define FMRT_PLUGIN_ABI_VERSION 1u

/* The name of the version-1 entry symbol, as a string. */
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

/* ========================================================================
 * ABI version 2
 *
 * A version-2 plugin exports fmrt_plugin_v2 (and may export fmrt_plugin_v1
 * too, for older hosts: fmrt uses fmrt_plugin_v2 when the library has it).
 * Its table starts with the ABI version, the table's own size and a set of
 * capability flags, and every call takes a size-prefixed call descriptor, so
 * both can grow without a new entry symbol:
 *
 * - size is sizeof(fmrt_plugin_vtable_v2) as the plugin was compiled.
 *   Later releases of this header only append fields; fmrt reads the fields
 *   the plugin's size covers and treats the rest as absent (NULL, 0). A
 *   size smaller than FMRT_PLUGIN_V2_MIN_SIZE (the table of this first v2
 *   header) is refused at load.
 * - capabilities is a set of FMRT_PLUGIN_CAP_* bits. Each bit that names a
 *   callback must come with that callback, and each optional callback with
 *   its bit: fmrt refuses a table where the two disagree, naming the
 *   callback. Bits fmrt does not know (set by a plugin built against a newer
 *   header) are ignored, as are the callbacks they name: a new bit only ever
 *   adds an optional ability and never changes what the calls below mean
 *   (that would be a new ABI version), so a plugin must keep working when
 *   the host uses none of its newer abilities.
 * - Every callback gets an fmrt_plugin_call whose size field says how many
 *   bytes of it fmrt filled in. A plugin compiled against a newer header
 *   checks FMRT_PLUGIN_HAS_FIELD before reading a field that this header
 *   does not have; fmrt never passes a descriptor smaller than this header's.
 * - Extras (conditioning inputs) are an array of n_extras descriptors spaced
 *   extra_size bytes apart; read them with fmrt_plugin_call_extra, not by
 *   indexing, so the descriptor may grow too.
 *
 * fmrt checks every buffer length before a call: x, v, out, velocity and
 * products hold exactly what the descriptor says (below), t holds 1 or batch
 * values, each batched extra has batch rows (an extra given with one row is
 * repeated to the batch first), and the shapes match the data. What the
 * plugin must still check is what only it knows: which extras it takes and
 * their types and shapes, and, for a dynamic plugin, whether it serves the
 * state shape of the call. It reports a problem by returning non-zero with a
 * message, which fmrt returns as a field error (FMRT_STATUS_FIELD in C)
 * carrying the message.
 * ======================================================================== */

/* The version a version-2 table reports in abi_version. */
#define FMRT_PLUGIN_V2_ABI_VERSION 2u

/* The name of the version-2 entry symbol, as a string. */
#define FMRT_PLUGIN_V2_ENTRY_SYMBOL "fmrt_plugin_v2"

/* Capability flags (fmrt_plugin_vtable_v2.capabilities). */
/* The plugin takes extras: without this bit fmrt refuses any call with
   extras (FMRT_STATUS_INVALID_ARGUMENT naming the first) and passes none. */
#define FMRT_PLUGIN_CAP_EXTRAS ((uint64_t)1 << 0)
/* The state shape comes with each call (call->state_shape): the plugin has
   no fixed shape, and its state_shape callback must be NULL. Without this
   bit state_shape is required and every call has that shape. */
#define FMRT_PLUGIN_CAP_DYNAMIC_SHAPE ((uint64_t)1 << 1)
/* jvp is given. */
#define FMRT_PLUGIN_CAP_JVP ((uint64_t)1 << 2)
/* velocity_and_jvps is given. */
#define FMRT_PLUGIN_CAP_STACKED_JVP ((uint64_t)1 << 3)
/* divergence is given. */
#define FMRT_PLUGIN_CAP_DIVERGENCE ((uint64_t)1 << 4)

/* Element types of extras. The values are those of fmrt_dtype in fmrt.h
   (FMRT_DTYPE_FLOAT32 ...), which this header does not include; the tests
   check that the two agree. */
#define FMRT_PLUGIN_DTYPE_FLOAT32 0u /* float */
#define FMRT_PLUGIN_DTYPE_FLOAT16 1u /* IEEE half precision, its bits as uint16_t */
#define FMRT_PLUGIN_DTYPE_INT64 2u   /* int64_t */
#define FMRT_PLUGIN_DTYPE_INT32 3u   /* int32_t */
#define FMRT_PLUGIN_DTYPE_BOOL 4u    /* uint8_t holding 0 or 1 */

/* One extra (conditioning input) of a call. */
typedef struct fmrt_plugin_extra {
    /* The input's name, NUL-terminated. */
    const char *name;
    /* One of FMRT_PLUGIN_DTYPE_*. */
    uint32_t dtype;
    /* 0: batched, shape[0] == call->batch (one row per sample); 1: shared,
       the same tensor for every sample, of any shape (rank 0 is a scalar). */
    uint32_t shared;
    /* n_elements values of dtype, row-major. */
    const void *data;
    /* shape[0..rank] (NULL when rank is 0). */
    const size_t *shape;
    size_t rank;
    /* The product of shape (1 for rank 0). */
    size_t n_elements;
} fmrt_plugin_extra;

/* What every version-2 callback is called on. Arrays are row-major, batch
   first; t = 0 is noise, t = 1 is data. */
typedef struct fmrt_plugin_call {
    /* The bytes of this descriptor fmrt filled in (see FMRT_PLUGIN_HAS_FIELD). */
    size_t size;
    /* batch * state_len floats: the states. */
    const float *x;
    /* The number of samples (at least 1). */
    size_t batch;
    /* One sample's shape, state_shape[0..state_rank], state_rank >= 1: the
       plugin's own shape, or with FMRT_PLUGIN_CAP_DYNAMIC_SHAPE the call's. */
    const size_t *state_shape;
    size_t state_rank;
    /* The product of state_shape: floats per sample. */
    size_t state_len;
    /* t_len times: 1 (one for all) or batch (one per sample). */
    const double *t;
    size_t t_len;
    /* The extras (none without FMRT_PLUGIN_CAP_EXTRAS), extra_size bytes
       apart; use fmrt_plugin_call_extra. extras is NULL when n_extras is 0. */
    const fmrt_plugin_extra *extras;
    size_t n_extras;
    size_t extra_size;
} fmrt_plugin_call;

/* Whether the descriptor *ptr (with a size field) of type type has field. */
#define FMRT_PLUGIN_HAS_FIELD(ptr, type, field) \
    (offsetof(type, field) + sizeof(((const type *)0)->field) <= (ptr)->size)

/* The extra number i (i < call->n_extras) of call. */
static inline const fmrt_plugin_extra *fmrt_plugin_call_extra(const fmrt_plugin_call *call,
                                                              size_t i) {
    return (const fmrt_plugin_extra *)(const void *)((const char *)(const void *)call->extras +
                                                     i * call->extra_size);
}

/* The extra of call called name, or NULL. */
static inline const fmrt_plugin_extra *fmrt_plugin_find_extra(const fmrt_plugin_call *call,
                                                              const char *name) {
    for (size_t i = 0; i < call->n_extras; i++) {
        const fmrt_plugin_extra *e = fmrt_plugin_call_extra(call, i);
        const char *a = e->name, *b = name;
        while (*a != '\0' && *a == *b) {
            a++;
            b++;
        }
        if (*a == *b) {
            return e;
        }
    }
    return NULL;
}

/* The table of a version-2 plugin. */
typedef struct fmrt_plugin_vtable_v2 {
    /* Must be FMRT_PLUGIN_V2_ABI_VERSION. */
    uint32_t abi_version;
    /* Must be sizeof(fmrt_plugin_vtable_v2). */
    uint32_t size;
    /* FMRT_PLUGIN_CAP_* bits. */
    uint64_t capabilities;
    /* A short human-readable name of the plugin (may be NULL). */
    const char *name;
    /* Required: as in version 1. */
    int32_t (*create)(const char *config, void **instance, char *err, size_t err_len);
    /* Required: releases an instance made by create. */
    void (*destroy)(void *instance);
    /* Required unless FMRT_PLUGIN_CAP_DYNAMIC_SHAPE (then NULL): as in
       version 1, called once after create. */
    size_t (*state_shape)(const void *instance, size_t *shape, size_t cap);
    /* Required: writes u(x, t, extras) into out (batch * state_len floats). */
    int32_t (*velocity)(const void *instance, const fmrt_plugin_call *call, float *out,
                        char *err, size_t err_len);
    /* FMRT_PLUGIN_CAP_JVP: writes J v into out, J = du/dx per sample; v and out
       hold batch * state_len floats. */
    int32_t (*jvp)(const void *instance, const fmrt_plugin_call *call, const float *v,
                   float *out, char *err, size_t err_len);
    /* FMRT_PLUGIN_CAP_STACKED_JVP: writes u into velocity (batch * state_len)
       and the products J v_p of directions P >= 1 directions into products, in
       one evaluation; v and products are [P, batch, state...] (direction
       first: v + p * batch * state_len is direction p). */
    int32_t (*velocity_and_jvps)(const void *instance, const fmrt_plugin_call *call,
                                 size_t directions, const float *v, float *velocity,
                                 float *products, char *err, size_t err_len);
    /* FMRT_PLUGIN_CAP_DIVERGENCE: writes the exact divergence tr du/dx of each
       sample into out (batch doubles). */
    int32_t (*divergence)(const void *instance, const fmrt_plugin_call *call, double *out,
                          char *err, size_t err_len);
} fmrt_plugin_vtable_v2;

/* The smallest size a version-2 table may report: the table of this header
   (the first version-2 header), ending with divergence. */
#define FMRT_PLUGIN_V2_MIN_SIZE \
    (offsetof(fmrt_plugin_vtable_v2, divergence) + sizeof(void (*)(void)))

/* The version-2 entry point: returns its table, which must stay valid while
   the library is loaded. */
typedef const fmrt_plugin_vtable_v2 *(*fmrt_plugin_v2_fn)(void);

#ifdef FMRT_PLUGIN_IMPLEMENTATION
/* Declarations of the entry points a plugin may define (define
   FMRT_PLUGIN_IMPLEMENTATION before including this header in the plugin, and
   define one or both). */
#if defined(_WIN32)
__declspec(dllexport)
#else
__attribute__((visibility("default")))
#endif
const fmrt_plugin_vtable_v1 *fmrt_plugin_v1(void);
#if defined(_WIN32)
__declspec(dllexport)
#else
__attribute__((visibility("default")))
#endif
const fmrt_plugin_vtable_v2 *fmrt_plugin_v2(void);
#endif

#ifdef __cplusplus
}
#endif

#endif /* FMRT_PLUGIN_H */
