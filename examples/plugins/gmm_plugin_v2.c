/*
 * gmm_plugin_v2.c - an fmrt velocity-field plugin on ABI version 2: the exact
 * marginal velocity of the path from N(0, I) to a ring of equally weighted
 * 2-D Gaussians whose means are shifted by a conditioning input, on the
 * CondOT schedule alpha = t, sigma = 1 - t (the field of gmm_plugin.c, plus
 * conditioning and every derivative version 2 offers).
 *
 *   means mu_k + c, with c the float32 extra "shift" (batched [B, 2], one
 *   shift per sample, or shared [2]; absent: c = 0),
 *   v_k = alpha^2 s^2 + sigma^2, w_k ∝ N(x; alpha (mu_k + c), v_k I),
 *   u(x, t) = sum_k w_k [alpha' m_k + ((alpha alpha' s^2 + sigma sigma') / v_k)(x - alpha m_k)]
 *
 * with m_k = mu_k + c. Capabilities: extras, JVP, stacked JVP (velocity and
 * P directions in one call) and the exact divergence tr du/dx.
 *
 * Configuration string (all optional): "k=8 radius=4 std=0.3". Means are
 * mu_j = radius (cos 2 pi j / k, sin 2 pi j / k).
 *
 * Build: cc -shared -fPIC -O2 -I include examples/plugins/gmm_plugin_v2.c -o libgmm_plugin_v2.so -lm
 */
#define FMRT_PLUGIN_IMPLEMENTATION
#include "fmrt_plugin.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_K 64

typedef struct gmm {
    int k;
    double std;
    double mu[MAX_K][2];
} gmm;

static void set_error(char *err, size_t err_len, const char *msg) {
    if (err != NULL && err_len > 0) {
        snprintf(err, err_len, "%s", msg);
    }
}

static int32_t gmm_create(const char *config, void **instance, char *err, size_t err_len) {
    int k = 8;
    double radius = 4.0, std = 0.3;
    const char *p = config != NULL ? config : "";
    while (*p != '\0') {
        int used = 0;
        if (*p == ' ') {
            p++;
            continue;
        }
        if (sscanf(p, "k=%d%n", &k, &used) == 1 || sscanf(p, "radius=%lf%n", &radius, &used) == 1 ||
            sscanf(p, "std=%lf%n", &std, &used) == 1) {
            p += used;
        } else {
            set_error(err, err_len, "unknown configuration entry; expected k=, radius=, std=");
            return 1;
        }
    }
    if (k < 1 || k > MAX_K || !(std > 0.0) || !(radius >= 0.0)) {
        set_error(err, err_len, "need 1 <= k <= 64, std > 0, radius >= 0");
        return 2;
    }
    gmm *g = (gmm *)malloc(sizeof(gmm));
    if (g == NULL) {
        set_error(err, err_len, "out of memory");
        return 3;
    }
    g->k = k;
    g->std = std;
    for (int j = 0; j < k; j++) {
        double angle = 2.0 * 3.14159265358979323846 * (double)j / (double)k;
        g->mu[j][0] = radius * cos(angle);
        g->mu[j][1] = radius * sin(angle);
    }
    *instance = g;
    return 0;
}

static void gmm_destroy(void *instance) { free(instance); }

static size_t gmm_state_shape(const void *instance, size_t *shape, size_t cap) {
    (void)instance;
    if (cap >= 1) {
        shape[0] = 2;
    }
    return 1;
}

/* One sample's quantities: the velocity, and what J v and tr J need. */
typedef struct sample {
    double beta;
    double w[MAX_K], uk[MAX_K][2], gk[MAX_K][2], gbar[2], u[2];
} sample;

static void gmm_eval(const gmm *g, double t, const float *x, const float *shift, sample *s) {
    double a = t, sg = 1.0 - t, da = 1.0, ds = -1.0, s2 = g->std * g->std;
    double var = a * a * s2 + sg * sg;
    double mx = -INFINITY, total = 0.0;
    double c0 = shift != NULL ? shift[0] : 0.0, c1 = shift != NULL ? shift[1] : 0.0;
    s->beta = (a * da * s2 + sg * ds) / var;
    for (int j = 0; j < g->k; j++) {
        double m0 = g->mu[j][0] + c0, m1 = g->mu[j][1] + c1;
        double r0 = x[0] - a * m0, r1 = x[1] - a * m1;
        s->w[j] = -(r0 * r0 + r1 * r1) / (2.0 * var);
        s->uk[j][0] = da * m0 + s->beta * r0;
        s->uk[j][1] = da * m1 + s->beta * r1;
        s->gk[j][0] = -r0 / var;
        s->gk[j][1] = -r1 / var;
        if (s->w[j] > mx) {
            mx = s->w[j];
        }
    }
    for (int j = 0; j < g->k; j++) {
        s->w[j] = exp(s->w[j] - mx);
        total += s->w[j];
    }
    s->u[0] = s->u[1] = s->gbar[0] = s->gbar[1] = 0.0;
    for (int j = 0; j < g->k; j++) {
        s->w[j] /= total;
        s->u[0] += s->w[j] * s->uk[j][0];
        s->u[1] += s->w[j] * s->uk[j][1];
        s->gbar[0] += s->w[j] * s->gk[j][0];
        s->gbar[1] += s->w[j] * s->gk[j][1];
    }
}

/* J v = beta v + sum_k w_k u_k (g_k - gbar) . v (equal variances). */
static void gmm_jv(const gmm *g, const sample *s, const float *v, float *out) {
    double jv[2] = {s->beta * v[0], s->beta * v[1]};
    for (int j = 0; j < g->k; j++) {
        double dot = (s->gk[j][0] - s->gbar[0]) * v[0] + (s->gk[j][1] - s->gbar[1]) * v[1];
        jv[0] += s->w[j] * s->uk[j][0] * dot;
        jv[1] += s->w[j] * s->uk[j][1] * dot;
    }
    out[0] = (float)jv[0];
    out[1] = (float)jv[1];
}

/* tr J = 2 beta + sum_k w_k u_k . (g_k - gbar). */
static double gmm_trace(const gmm *g, const sample *s) {
    double tr = 2.0 * s->beta;
    for (int j = 0; j < g->k; j++) {
        tr += s->w[j] * (s->uk[j][0] * (s->gk[j][0] - s->gbar[0]) +
                         s->uk[j][1] * (s->gk[j][1] - s->gbar[1]));
    }
    return tr;
}

/* Checks the call and finds the shift: *shift is NULL (no shift), or points at
   2 floats, shared (*stride 0) or one pair per sample (*stride 2). */
static int check_call(const fmrt_plugin_call *call, const float **shift, size_t *stride,
                      char *err, size_t err_len) {
    if (call->state_rank != 1 || call->state_shape[0] != 2) {
        set_error(err, err_len, "the state must be 2-D");
        return 1;
    }
    if (call->t_len != 1 && call->t_len != call->batch) {
        set_error(err, err_len, "t must hold 1 or batch values");
        return 1;
    }
    *shift = NULL;
    *stride = 0;
    for (size_t i = 0; i < call->n_extras; i++) {
        const fmrt_plugin_extra *e = fmrt_plugin_call_extra(call, i);
        if (strcmp(e->name, "shift") != 0) {
            if (err != NULL && err_len > 0) {
                snprintf(err, err_len, "unknown extra input `%s`; this plugin takes `shift`",
                         e->name);
            }
            return 2;
        }
        if (e->dtype != FMRT_PLUGIN_DTYPE_FLOAT32) {
            set_error(err, err_len, "`shift` must be float32");
            return 2;
        }
        if (e->shared && e->rank == 1 && e->shape[0] == 2) {
            *stride = 0;
        } else if (!e->shared && e->rank == 2 && e->shape[1] == 2) {
            *stride = 2;
        } else {
            set_error(err, err_len, "`shift` must be [B, 2] or shared [2]");
            return 2;
        }
        *shift = (const float *)e->data;
    }
    return 0;
}

#define TIME(call, i) ((call)->t[(call)->t_len == 1 ? 0 : (i)])
#define SHIFT(shift, stride, i) ((shift) != NULL ? (shift) + (stride) * (i) : NULL)

static int32_t gmm_velocity(const void *instance, const fmrt_plugin_call *call, float *out,
                            char *err, size_t err_len) {
    const float *shift;
    size_t stride;
    int32_t code = check_call(call, &shift, &stride, err, err_len);
    if (code != 0) {
        return code;
    }
    sample s;
    for (size_t i = 0; i < call->batch; i++) {
        gmm_eval((const gmm *)instance, TIME(call, i), call->x + 2 * i, SHIFT(shift, stride, i),
                 &s);
        out[2 * i] = (float)s.u[0];
        out[2 * i + 1] = (float)s.u[1];
    }
    return 0;
}

static int32_t gmm_jvp(const void *instance, const fmrt_plugin_call *call, const float *v,
                       float *out, char *err, size_t err_len) {
    const float *shift;
    size_t stride;
    int32_t code = check_call(call, &shift, &stride, err, err_len);
    if (code != 0) {
        return code;
    }
    sample s;
    for (size_t i = 0; i < call->batch; i++) {
        gmm_eval((const gmm *)instance, TIME(call, i), call->x + 2 * i, SHIFT(shift, stride, i),
                 &s);
        gmm_jv((const gmm *)instance, &s, v + 2 * i, out + 2 * i);
    }
    return 0;
}

static int32_t gmm_velocity_and_jvps(const void *instance, const fmrt_plugin_call *call,
                                     size_t directions, const float *v, float *velocity,
                                     float *products, char *err, size_t err_len) {
    const float *shift;
    size_t stride;
    int32_t code = check_call(call, &shift, &stride, err, err_len);
    if (code != 0) {
        return code;
    }
    size_t plane = 2 * call->batch;
    sample s;
    for (size_t i = 0; i < call->batch; i++) {
        gmm_eval((const gmm *)instance, TIME(call, i), call->x + 2 * i, SHIFT(shift, stride, i),
                 &s);
        velocity[2 * i] = (float)s.u[0];
        velocity[2 * i + 1] = (float)s.u[1];
        for (size_t p = 0; p < directions; p++) {
            gmm_jv((const gmm *)instance, &s, v + p * plane + 2 * i, products + p * plane + 2 * i);
        }
    }
    return 0;
}

static int32_t gmm_divergence(const void *instance, const fmrt_plugin_call *call, double *out,
                              char *err, size_t err_len) {
    const float *shift;
    size_t stride;
    int32_t code = check_call(call, &shift, &stride, err, err_len);
    if (code != 0) {
        return code;
    }
    sample s;
    for (size_t i = 0; i < call->batch; i++) {
        gmm_eval((const gmm *)instance, TIME(call, i), call->x + 2 * i, SHIFT(shift, stride, i),
                 &s);
        out[i] = gmm_trace((const gmm *)instance, &s);
    }
    return 0;
}

static const fmrt_plugin_vtable_v2 GMM_TABLE = {
    FMRT_PLUGIN_V2_ABI_VERSION,
    (uint32_t)sizeof(fmrt_plugin_vtable_v2),
    FMRT_PLUGIN_CAP_EXTRAS | FMRT_PLUGIN_CAP_JVP | FMRT_PLUGIN_CAP_STACKED_JVP |
        FMRT_PLUGIN_CAP_DIVERGENCE,
    "gmm-ring-v2",
    gmm_create,
    gmm_destroy,
    gmm_state_shape,
    gmm_velocity,
    gmm_jvp,
    gmm_velocity_and_jvps,
    gmm_divergence,
};

const fmrt_plugin_vtable_v2 *fmrt_plugin_v2(void) { return &GMM_TABLE; }
