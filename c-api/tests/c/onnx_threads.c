/*
 * onnx_threads.c - 16 POSIX threads share one ONNX velocity field and one
 * sampler through the fmrt C API, each building handles of its own on the
 * shared ones and freeing them in an order of its own, while the main thread
 * frees the shared field, schedulers and solver under them.
 *
 * Phase 1 (every thread): velocity and log-likelihood calls on the shared
 * field (the first likelihood derives the tangent model, so threads race to
 * it), samples from the shared sampler, and a schedule-change adapter, a
 * solver and a sampler of its own built on the shared handles.
 * Then the main thread frees the shared field, both schedulers and the solver
 * (in a seeded random order) while the threads wait at a barrier; handles
 * built on them keep their own references.
 * Phase 2 (every thread): samples from the shared sampler and from its own
 * sampler, then frees its own handles in a random order.
 *
 * Every result must equal the one the main thread computed alone beforehand
 * (bit for bit: the same inputs give the same floats on any thread).
 *
 * Usage: onnx_threads MODEL.onnx [ORT_LIBRARY]   (the model maps a [B, 2]
 * state; tests/fixtures/gmm_ot.onnx). Prints "onnx threads ok" and exits 0, or
 * names the failing thread and call and exits 1.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmrt.h"

#define THREADS 16
#define N 8
#define D 2

/* The shared handles, and the results each thread must reproduce. */
static fmrt_field *field;
static fmrt_scheduler *ot, *cosine;
static fmrt_solver *solver;
static fmrt_sampler *sampler;
static float x[N * D];
static float expect_velocity[N * D];
static double expect_log_p[N];
static float expect_sample[N * D];
static float expect_adapted[N * D];
static pthread_barrier_t handles_built, shared_freed;

/* A small linear congruential generator: a reproducible random order. */
static unsigned next(unsigned *state) {
    *state = *state * 1103515245u + 12345u;
    return (*state >> 16) & 0x7fff;
}

/* Shuffles order[0..n] with the generator seeded by `seed`. */
static void shuffle(int *order, int n, unsigned seed) {
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(next(&seed) % (unsigned)(i + 1));
        int tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
}

typedef struct job {
    int index;
    const char *failed; /* the call that failed or differed, NULL if none */
    char message[256];
} job;

/* Records the first failure of a thread (with the thread's last error). */
static int fail(job *j, const char *what, fmrt_status status) {
    if (!j->failed) {
        j->failed = what;
        if (status != FMRT_STATUS_OK)
            fmrt_last_error_copy(j->message, sizeof j->message, NULL);
        else
            snprintf(j->message, sizeof j->message, "differs from the main thread's result");
    }
    return 0;
}

/* Checks a status and, on success, that `got` equals `want` (`bytes` long). */
static int same(job *j, const char *what, fmrt_status status, const void *got, const void *want,
                size_t bytes) {
    if (status != FMRT_STATUS_OK || memcmp(got, want, bytes) != 0) return fail(j, what, status);
    return 1;
}

/* The schedule-change adapter every thread builds: the field sampled along cosine. */
static fmrt_status adapted_sampler(fmrt_field **adapter, fmrt_solver **own_solver,
                                   fmrt_sampler **own_sampler) {
    fmrt_status s = fmrt_field_schedule_change(field, ot, cosine, adapter);
    if (s == FMRT_STATUS_OK) s = fmrt_solver_fixed("heun", 6, own_solver);
    if (s == FMRT_STATUS_OK) s = fmrt_sampler_new(*adapter, *own_solver, own_sampler);
    return s;
}

/* Exact log-likelihoods of the states x at t = 1 under `f`, solved with `solver`. */
static fmrt_status log_likelihood(const fmrt_field *f, double *out) {
    fmrt_likelihood_config *options = NULL;
    fmrt_status s = fmrt_likelihood_config_new(&options);
    if (s == FMRT_STATUS_OK) s = fmrt_likelihood_config_set_solver(options, solver);
    if (s == FMRT_STATUS_OK) s = fmrt_likelihood_config_set_divergence(options, "exact");
    double t = 1.0;
    if (s == FMRT_STATUS_OK) {
        s = fmrt_log_likelihood_config(f, options, x, N * D, N, &t, 1, NULL, out, N, NULL, 0,
                                       NULL, 0, NULL);
    }
    fmrt_likelihood_config_free(options);
    return s;
}

static void *run(void *arg) {
    job *j = (job *)arg;
    float v[N * D], out[N * D];
    double log_p[N];
    double t = 0.5;
    uint64_t seed = 42;

    /* Phase 1: the shared field and sampler; handles of our own on them. */
    same(j, "fmrt_field_velocity",
         fmrt_field_velocity(field, x, N * D, N, &t, 1, NULL, v, N * D), v, expect_velocity,
         sizeof v);
    same(j, "fmrt_log_likelihood", log_likelihood(field, log_p), log_p, expect_log_p, sizeof log_p);
    same(j, "fmrt_sampler_sample (shared)",
         fmrt_sampler_sample(sampler, N, seed, NULL, 0, NULL, out, N * D, NULL, 0, NULL), out,
         expect_sample, sizeof out);
    fmrt_field *adapter = NULL;
    fmrt_solver *own_solver = NULL;
    fmrt_sampler *own_sampler = NULL;
    fmrt_status s = adapted_sampler(&adapter, &own_solver, &own_sampler);
    if (s != FMRT_STATUS_OK) fail(j, "building the adapter and its sampler", s);

    pthread_barrier_wait(&handles_built);
    /* The main thread frees the shared field, schedulers and solver now. */
    pthread_barrier_wait(&shared_freed);

    /* Phase 2: only the shared sampler and our own handles. */
    same(j, "fmrt_sampler_sample (shared, after frees)",
         fmrt_sampler_sample(sampler, N, seed, NULL, 0, NULL, out, N * D, NULL, 0, NULL), out,
         expect_sample, sizeof out);
    if (own_sampler) {
        same(j, "fmrt_sampler_sample (own adapter)",
             fmrt_sampler_sample(own_sampler, N, seed, NULL, 0, NULL, out, N * D, NULL, 0, NULL),
             out, expect_adapted, sizeof out);
    }
    int order[3];
    shuffle(order, 3, (unsigned)j->index + 1);
    for (int i = 0; i < 3; i++) {
        switch (order[i]) {
        case 0: fmrt_field_free(adapter); break;
        case 1: fmrt_solver_free(own_solver); break;
        default: fmrt_sampler_free(own_sampler); break;
        }
    }
    return NULL;
}

/* Exits with the failed call and the library's message. */
static void check(fmrt_status status, const char *what) {
    if (status != FMRT_STATUS_OK) {
        fprintf(stderr, "%s failed: %s\n", what, fmrt_last_error());
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.onnx [ORT_LIBRARY]\n", argv[0]);
        return 2;
    }
    fmrt_onnx_config *onnx = NULL;
    check(fmrt_onnx_config_new(&onnx), "fmrt_onnx_config_new");
    if (argc > 2) check(fmrt_onnx_config_set_ort_library(onnx, argv[2]), "ort_library");
    check(fmrt_onnx_config_set_sessions(onnx, 4), "fmrt_onnx_config_set_sessions");
    check(fmrt_onnx_config_set_intra_threads(onnx, 1), "fmrt_onnx_config_set_intra_threads");
    check(fmrt_field_onnx_file_config(argv[1], onnx, &field), "fmrt_field_onnx_file_config");
    check(fmrt_scheduler_builtin("ot", NULL, 0, &ot), "fmrt_scheduler_builtin ot");
    check(fmrt_scheduler_builtin("cosine", NULL, 0, &cosine), "fmrt_scheduler_builtin cosine");
    check(fmrt_solver_fixed("rk4", 8, &solver), "fmrt_solver_fixed");
    check(fmrt_sampler_new(field, solver, &sampler), "fmrt_sampler_new");
    for (int i = 0; i < N * D; i++) x[i] = (float)((i % 7) - 3) * 0.9f;

    /* The expected results, computed here alone. The likelihood comes from a
     * second copy of the model: the shared field derives its tangent model on
     * first use, and the threads race to do that. */
    {
        fmrt_field *reference = NULL;
        check(fmrt_field_onnx_file_config(argv[1], onnx, &reference),
              "fmrt_field_onnx_file_config (reference)");
        check(log_likelihood(reference, expect_log_p), "fmrt_log_likelihood");
        fmrt_field_free(reference);
    }
    fmrt_onnx_config_free(onnx);
    double t = 0.5;
    check(fmrt_field_velocity(field, x, N * D, N, &t, 1, NULL, expect_velocity, N * D),
          "fmrt_field_velocity");
    check(fmrt_sampler_sample(sampler, N, 42, NULL, 0, NULL, expect_sample, N * D, NULL, 0, NULL),
          "fmrt_sampler_sample");
    {
        fmrt_field *adapter = NULL;
        fmrt_solver *own_solver = NULL;
        fmrt_sampler *own_sampler = NULL;
        check(adapted_sampler(&adapter, &own_solver, &own_sampler), "adapted sampler");
        check(fmrt_sampler_sample(own_sampler, N, 42, NULL, 0, NULL, expect_adapted, N * D, NULL,
                                  0, NULL),
              "fmrt_sampler_sample (adapter)");
        fmrt_sampler_free(own_sampler);
        fmrt_field_free(adapter);
        fmrt_solver_free(own_solver);
    }

    static job jobs[THREADS];
    pthread_t ids[THREADS];
    pthread_barrier_init(&handles_built, NULL, THREADS + 1);
    pthread_barrier_init(&shared_freed, NULL, THREADS + 1);
    for (int i = 0; i < THREADS; i++) {
        jobs[i].index = i;
        if (pthread_create(&ids[i], NULL, run, &jobs[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    pthread_barrier_wait(&handles_built);
    int order[4];
    shuffle(order, 4, 2026);
    for (int i = 0; i < 4; i++) {
        switch (order[i]) {
        case 0: fmrt_field_free(field); break;
        case 1: fmrt_scheduler_free(ot); break;
        case 2: fmrt_scheduler_free(cosine); break;
        default: fmrt_solver_free(solver); break;
        }
    }
    pthread_barrier_wait(&shared_freed);
    for (int i = 0; i < THREADS; i++) pthread_join(ids[i], NULL);
    pthread_barrier_destroy(&handles_built);
    pthread_barrier_destroy(&shared_freed);

    int bad = 0;
    for (int i = 0; i < THREADS; i++) {
        if (jobs[i].failed) {
            fprintf(stderr, "thread %d: %s: %s\n", i, jobs[i].failed, jobs[i].message);
            bad = 1;
        }
    }
    fmrt_sampler_free(sampler);
    if (!bad) printf("onnx threads ok: %d threads\n", THREADS);
    return bad;
}
