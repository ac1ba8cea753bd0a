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
    fmrt_onnx_options onnx;
    check(fmrt_onnx_options_default(&onnx), "fmrt_onnx_options_default");
    onnx.ort_library = argc > 2 ? argv[2] : NULL;
    onnx.provider = "cpu";
    fmrt_field *field = NULL;
    check(fmrt_field_onnx_file(argv[1], &onnx, &field), "fmrt_field_onnx_file");
    char provider[32];
    check(fmrt_field_onnx_provider(field, provider, sizeof provider, NULL),
          "fmrt_field_onnx_provider");
    printf("provider %s\n", provider);

    /* Points near two of the ring's components, between them, and at the centre. */
    const float x[N * D] = {4.0f, 0.0f, 2.9f, 2.7f, 2.0f, -3.5f, 0.0f, 0.0f};
    const double t_data = 1.0;

    /* Exact divergence, adaptive dopri5 with tight tolerances. */
    fmrt_adaptive_options tight;
    check(fmrt_adaptive_options_default(&tight), "fmrt_adaptive_options_default");
    tight.rtol = 1e-7;
    tight.atol = 1e-7;
    fmrt_solver *solver = NULL;
    check(fmrt_solver_adaptive("dopri5", &tight, &solver), "fmrt_solver_adaptive");
    fmrt_likelihood_options options;
    check(fmrt_likelihood_options_default(&options), "fmrt_likelihood_options_default");
    options.solver = solver;
    options.divergence = "exact";

    double log_p[N], bpd[N];
    float x0[N * D];
    fmrt_likelihood_stats stats;
    check(fmrt_log_likelihood(field, &options, x, N * D, N, &t_data, 1, NULL, log_p, N, x0,
                              N * D, bpd, N, &stats),
          "fmrt_log_likelihood (exact)");
    for (int i = 0; i < N; i++) {
        printf("exact %d %.17g %.17g %.9g %.9g\n", i, log_p[i], bpd[i], x0[D * i],
               x0[D * i + 1]);
    }
    printf("exact-stats %llu %llu %llu\n", (unsigned long long)stats.nfe,
           (unsigned long long)stats.accepted, (unsigned long long)stats.rejected);

    /* Hutchinson's estimator: 4 Rademacher probes per sample from seed 7;
     * only the log-likelihoods are wanted. */
    options.divergence = "hutchinson";
    options.probes = 4;
    options.distribution = "rademacher";
    options.seed = 7;
    check(fmrt_log_likelihood(field, &options, x, N * D, N, &t_data, 1, NULL, log_p, N, NULL, 0,
                              NULL, 0, NULL),
          "fmrt_log_likelihood (hutchinson)");
    for (int i = 0; i < N; i++) {
        printf("hutchinson %d %.17g\n", i, log_p[i]);
    }

    /* The time in [0.05, 1] at which each point is most likely, exact divergence. */
    options.divergence = "exact";
    double t[N];
    check(fmrt_most_probable_time(field, &options, x, N * D, N, 0.05, 1.0, 1e-3, NULL, t, N,
                                  log_p, N),
          "fmrt_most_probable_time");
    for (int i = 0; i < N; i++) {
        printf("mpt %d %.17g %.17g\n", i, t[i], log_p[i]);
    }

    fmrt_solver_free(solver);
    fmrt_field_free(field);
    return 0;
}
