/*
 * sample.c - sample the analytic Gaussian-mixture field (and, given a path, a
 * native plugin) through the fmrt C API, and print the numbers.
 *
 * Usage: sample [PLUGIN.so]
 * Output lines (machine-readable): "version V", "expr d_alpha TEXT",
 * "coef T ALPHA SIGMA D_ALPHA D_SIGMA", "gmm I X Y", "mid I X Y",
 * "stats NFE ACCEPTED REJECTED", "batch I X_T TARGET", "plugin I X Y".
 */
#include <stdio.h>
#include <stdlib.h>

#include "fmrt.h"

/* Prints the failed call and the library's message, then exits. */
static void check(fmrt_status status, const char *what) {
    if (status != FMRT_STATUS_OK) {
        fprintf(stderr, "%s failed: %s (%u): %s\n", what, fmrt_status_name(status),
                (unsigned)status, fmrt_last_error());
        exit(1);
    }
}

#define N 4
#define SEED 42

/* Samples N points with SEED from field using rk4 with 20 steps; prints them with prefix. */
static void sample_field(const fmrt_field *field, const char *prefix, int with_midpoint) {
    fmrt_solver *solver = NULL;
    fmrt_sampler *sampler = NULL;
    check(fmrt_solver_fixed("rk4", 20, &solver), "fmrt_solver_fixed");
    check(fmrt_sampler_new(field, solver, &sampler), "fmrt_sampler_new");
    fmrt_solver_free(solver); /* the sampler keeps a copy */

    float x[N * 2], traj[N * 2];
    double times[1] = {0.5};
    fmrt_stats stats;
    check(fmrt_sampler_sample(sampler, N, SEED, times, 1, NULL, x, N * 2, traj, N * 2, &stats),
          "fmrt_sampler_sample");
    for (int i = 0; i < N; i++) {
        printf("%s %d %.9g %.9g\n", prefix, i, x[2 * i], x[2 * i + 1]);
    }
    if (with_midpoint) {
        for (int i = 0; i < N; i++) {
            printf("mid %d %.9g %.9g\n", i, traj[2 * i], traj[2 * i + 1]);
        }
        printf("stats %llu %llu %llu\n", (unsigned long long)stats.nfe,
               (unsigned long long)stats.accepted, (unsigned long long)stats.rejected);
    }
    fmrt_sampler_free(sampler);
}

int main(int argc, char **argv) {
    printf("version %s\n", fmrt_version());

    /* A built-in scheduler, its derived expression and coefficients. */
    fmrt_scheduler *cosine = NULL;
    check(fmrt_scheduler_builtin("cosine", NULL, 0, &cosine), "fmrt_scheduler_builtin");
    size_t need = 0;
    /* Ask for the size first, then copy. */
    fmrt_scheduler_expression(cosine, FMRT_QUANTITY_D_ALPHA, NULL, 0, &need);
    char *text = (char *)malloc(need);
    check(fmrt_scheduler_expression(cosine, FMRT_QUANTITY_D_ALPHA, text, need, &need),
          "fmrt_scheduler_expression");
    printf("expr d_alpha %s\n", text);
    free(text);
    fmrt_coefficients c;
    check(fmrt_scheduler_coefficients(cosine, 0.5, &c), "fmrt_scheduler_coefficients");
    printf("coef 0.5 %.17g %.17g %.17g %.17g\n", c.alpha, c.sigma, c.d_alpha, c.d_sigma);
    fmrt_scheduler_free(cosine);

    /* The same CondOT schedule written in the .fm language. */
    fmrt_scheduler *ot = NULL;
    check(fmrt_scheduler_from_source("alpha = t\nsigma = 1 - t\n", "ot.fm", NULL, 0, &ot),
          "fmrt_scheduler_from_source");

    /* The 8-component ring mixture, sampled from seed 42. */
    fmrt_field *gmm = NULL;
    check(fmrt_field_gaussian_ring(ot, 8, 4.0, 0.3, &gmm), "fmrt_field_gaussian_ring");
    sample_field(gmm, "gmm", 1);
    fmrt_field_free(gmm);

    /* A training batch: x_t and the target velocity for data x1, noise x0, times t. */
    float x1[4] = {1.0f, 2.0f, -3.0f, 0.5f}, x0[4], xt[4], target[4];
    double t[2];
    check(fmrt_random_normal(7, x0, 4), "fmrt_random_normal");
    check(fmrt_random_uniform(8, t, 2), "fmrt_random_uniform");
    check(fmrt_path_training_batch(ot, x1, x0, 4, 2, t, 2, xt, 4, target, 4),
          "fmrt_path_training_batch");
    for (int i = 0; i < 4; i++) {
        printf("batch %d %.9g %.9g\n", i, xt[i], target[i]);
    }
    fmrt_scheduler_free(ot);

    /* A native plugin implementing the same field in C. */
    if (argc > 1) {
        fmrt_field *plugin = NULL;
        check(fmrt_field_plugin(argv[1], "k=8 radius=4 std=0.3", &plugin), "fmrt_field_plugin");
        sample_field(plugin, "plugin", 0);
        fmrt_field_free(plugin);
    }
    return 0;
}
