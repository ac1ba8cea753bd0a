/*
 * likelihood.c - log-likelihoods of a few points under an ONNX velocity model
 * (the Gaussian-mixture fixture tests/fixtures/gmm_ot.onnx) through the fmrt C
 * API: exact divergence, Hutchinson's estimator, and the most probable time.
 *
 * Usage: likelihood MODEL.onnx [ORT_LIBRARY]
 * Output lines (machine-readable): "provider NAME",
 * "exact I LOG_P BITS_PER_DIM X0_X X0_Y", "exact-stats NFE ACCEPTED REJECTED",
 * "hutchinson I LOG_P", "mpt I T LOG_P".
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
#define D 2

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.onnx [ORT_LIBRARY]\n", argv[0]);
        return 2;
    }

    /* Load the model on the CPU (the default provider), and ask which runs it. */
    fmrt_onnx_config *onnx = NULL;
    check(fmrt_onnx_config_new(&onnx), "fmrt_onnx_config_new");
    if (argc > 2) {
        check(fmrt_onnx_config_set_ort_library(onnx, argv[2]), "fmrt_onnx_config_set_ort_library");
    }
    check(fmrt_onnx_config_set_provider(onnx, "cpu"), "fmrt_onnx_config_set_provider");
    fmrt_field *field = NULL;
    check(fmrt_field_onnx_file_config(argv[1], onnx, &field), "fmrt_field_onnx_file_config");
    fmrt_onnx_config_free(onnx);
    char provider[32];
    check(fmrt_field_onnx_provider(field, provider, sizeof provider, NULL),
          "fmrt_field_onnx_provider");
    printf("provider %s\n", provider);

    /* Points near two of the ring's components, between them, and at the centre. */
    const float x[N * D] = {4.0f, 0.0f, 2.9f, 2.7f, 2.0f, -3.5f, 0.0f, 0.0f};
    const double t_data = 1.0;

    /* Exact divergence, adaptive dopri5 with tight tolerances. */
    fmrt_adaptive_config *tight = NULL;
    check(fmrt_adaptive_config_new(&tight), "fmrt_adaptive_config_new");
    check(fmrt_adaptive_config_set_rtol(tight, 1e-7), "fmrt_adaptive_config_set_rtol");
    check(fmrt_adaptive_config_set_atol(tight, 1e-7), "fmrt_adaptive_config_set_atol");
    fmrt_solver *solver = NULL;
    check(fmrt_solver_adaptive_config("dopri5", tight, &solver), "fmrt_solver_adaptive_config");
    fmrt_adaptive_config_free(tight);
    fmrt_likelihood_config *options = NULL;
    check(fmrt_likelihood_config_new(&options), "fmrt_likelihood_config_new");
    check(fmrt_likelihood_config_set_solver(options, solver), "fmrt_likelihood_config_set_solver");
    check(fmrt_likelihood_config_set_divergence(options, "exact"),
          "fmrt_likelihood_config_set_divergence");

    double log_p[N], bpd[N];
    float x0[N * D];
    fmrt_likelihood_counters stats = {.size = sizeof stats};
    check(fmrt_log_likelihood_config(field, options, x, N * D, N, &t_data, 1, NULL, log_p, N, x0,
                                     N * D, bpd, N, &stats),
          "fmrt_log_likelihood_config (exact)");
    for (int i = 0; i < N; i++) {
        printf("exact %d %.17g %.17g %.9g %.9g\n", i, log_p[i], bpd[i], x0[D * i],
               x0[D * i + 1]);
    }
    printf("exact-stats %llu %llu %llu\n", (unsigned long long)stats.nfe,
           (unsigned long long)stats.accepted, (unsigned long long)stats.rejected);

    /* Hutchinson's estimator: 4 Rademacher probes per sample from seed 7;
     * only the log-likelihoods are wanted. */
    check(fmrt_likelihood_config_set_divergence(options, "hutchinson"),
          "fmrt_likelihood_config_set_divergence");
    check(fmrt_likelihood_config_set_probes(options, 4), "fmrt_likelihood_config_set_probes");
    check(fmrt_likelihood_config_set_distribution(options, "rademacher"),
          "fmrt_likelihood_config_set_distribution");
    check(fmrt_likelihood_config_set_seed(options, 7), "fmrt_likelihood_config_set_seed");
    check(fmrt_log_likelihood_config(field, options, x, N * D, N, &t_data, 1, NULL, log_p, N,
                                     NULL, 0, NULL, 0, NULL),
          "fmrt_log_likelihood_config (hutchinson)");
    for (int i = 0; i < N; i++) {
        printf("hutchinson %d %.17g\n", i, log_p[i]);
    }

    /* The time in [0.05, 1] at which each point is most likely, exact divergence. */
    check(fmrt_likelihood_config_set_divergence(options, "exact"),
          "fmrt_likelihood_config_set_divergence");
    double t[N];
    check(fmrt_most_probable_time_config(field, options, x, N * D, N, 0.05, 1.0, 1e-3, NULL, t,
                                         N, log_p, N),
          "fmrt_most_probable_time_config");
    for (int i = 0; i < N; i++) {
        printf("mpt %d %.17g %.17g\n", i, t[i], log_p[i]);
    }

    fmrt_likelihood_config_free(options);
    fmrt_solver_free(solver);
    fmrt_field_free(field);
    return 0;
}
