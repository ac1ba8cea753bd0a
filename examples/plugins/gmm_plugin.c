/*
 * gmm_plugin.c - an fmrt velocity-field plugin in plain C: the exact marginal
 * velocity of the path from N(0, I) to a ring of equally weighted 2-D Gaussians
 * (design.md section 1), on the CondOT schedule alpha = t, sigma = 1 - t.
 *
 *   v_k = alpha^2 s^2 + sigma^2, w_k ∝ N(x; alpha mu_k, v_k I),
 *   u(x, t) = sum_k w_k [alpha' mu_k + ((alpha alpha' s^2 + sigma sigma') / v_k)(x - alpha mu_k)]
 *
 * Configuration string (all optional): "k=8 radius=4 std=0.3". Means are
 * mu_j = radius (cos 2 pi j / k, sin 2 pi j / k). The JVP is provided too.
 *
 * Build: cc -shared -fPIC -O2 -I include examples/plugins/gmm_plugin.c -o libgmm_plugin.so -lm
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

static size_t gmm_state_shape(const void *instance, size_t *shape, size_t cap) {
    (void)instance;
    if (cap >= 1) {
        shape[0] = 2;
    }
    return 1;
}

/* Velocity of one sample, and (when v != NULL) the JVP J v. */
static void gmm_one(const gmm *g, double t, const float *x, const float *v, float *u_out,
                    float *jv_out) {
    double a = t, s = 1.0 - t, da = 1.0, ds = -1.0, s2 = g->std * g->std;
    double var = a * a * s2 + s * s;
    double beta = (a * da * s2 + s * ds) / var;
    double logw[MAX_K], uk[MAX_K][2], gk[MAX_K][2], mx = -INFINITY;
    for (int j = 0; j < g->k; j++) {
        double r0 = x[0] - a * g->mu[j][0], r1 = x[1] - a * g->mu[j][1];
        logw[j] = -(r0 * r0 + r1 * r1) / (2.0 * var);
        uk[j][0] = da * g->mu[j][0] + beta * r0;
        uk[j][1] = da * g->mu[j][1] + beta * r1;
        gk[j][0] = -r0 / var;
        gk[j][1] = -r1 / var;
        if (logw[j] > mx) {
            mx = logw[j];
        }
    }
    double total = 0.0;
    for (int j = 0; j < g->k; j++) {
        logw[j] = exp(logw[j] - mx);
        total += logw[j];
    }
    double u[2] = {0.0, 0.0}, gbar[2] = {0.0, 0.0};
    for (int j = 0; j < g->k; j++) {
        double w = logw[j] / total;
        logw[j] = w;
        u[0] += w * uk[j][0];
        u[1] += w * uk[j][1];
        gbar[0] += w * gk[j][0];
        gbar[1] += w * gk[j][1];
    }
    u_out[0] = (float)u[0];
    u_out[1] = (float)u[1];
    if (v != NULL) {
        /* J = beta I + sum_k w_k u_k (g_k - gbar)^T (equal variances). */
        double jv[2] = {beta * v[0], beta * v[1]};
        for (int j = 0; j < g->k; j++) {
            double dot = (gk[j][0] - gbar[0]) * v[0] + (gk[j][1] - gbar[1]) * v[1];
            jv[0] += logw[j] * uk[j][0] * dot;
            jv[1] += logw[j] * uk[j][1] * dot;
        }
        jv_out[0] = (float)jv[0];
        jv_out[1] = (float)jv[1];
    }
}

static int32_t gmm_velocity(const void *instance, const float *x, size_t batch, const double *t,
                            size_t t_len, float *out, char *err, size_t err_len) {
    if (t_len != 1 && t_len != batch) {
        set_error(err, err_len, "t must hold 1 or batch values");
        return 1;
    }
    float unused[2];
    for (size_t i = 0; i < batch; i++) {
        gmm_one((const gmm *)instance, t[t_len == 1 ? 0 : i], x + 2 * i, NULL, out + 2 * i,
                unused);
    }
    return 0;
}

static int32_t gmm_jvp(const void *instance, const float *x, size_t batch, const double *t,
                       size_t t_len, const float *v, float *out, char *err, size_t err_len) {
    if (t_len != 1 && t_len != batch) {
        set_error(err, err_len, "t must hold 1 or batch values");
        return 1;
    }
    float u[2];
    for (size_t i = 0; i < batch; i++) {
        gmm_one((const gmm *)instance, t[t_len == 1 ? 0 : i], x + 2 * i, v + 2 * i, u,
                out + 2 * i);
    }
    return 0;
}

static void gmm_destroy(void *instance) { free(instance); }

static const fmrt_plugin_vtable_v1 GMM_TABLE = {
    FMRT_PLUGIN_ABI_VERSION, 0, "gmm-ring", gmm_create, gmm_state_shape,
    gmm_velocity,            gmm_jvp, gmm_destroy,
};

const fmrt_plugin_vtable_v1 *fmrt_plugin_v1(void) { return &GMM_TABLE; }
