/*
 * threads.c - 8 POSIX threads sample concurrently from one shared sampler
 * (handles are immutable and thread-safe) and must match the same samples
 * drawn one after another on the main thread.
 *
 * Usage: threads [PLUGIN.so]   (samples the plugin field instead of the
 * built-in mixture when a path is given). Prints "threads ok" or the mismatch
 * and exits non-zero.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmrt.h"

#define THREADS 8
#define N 64
#define ROUNDS 4

typedef struct job {
    const fmrt_sampler *sampler;
    int index;
    float out[ROUNDS][N * 2];
    fmrt_status status;
    char message[256];
} job;

static void *run(void *arg) {
    job *j = (job *)arg;
    j->status = FMRT_STATUS_OK;
    for (int r = 0; r < ROUNDS && j->status == FMRT_STATUS_OK; r++) {
        uint64_t seed = (uint64_t)(100 * j->index + r);
        j->status = fmrt_sampler_sample(j->sampler, N, seed, NULL, 0, NULL, j->out[r], N * 2,
                                        NULL, 0, NULL);
    }
    if (j->status != FMRT_STATUS_OK) {
        /* The message is per thread: copy it here, on the failing thread. */
        fmrt_last_error_copy(j->message, sizeof j->message, NULL);
    }
    return NULL;
}

int main(int argc, char **argv) {
    fmrt_scheduler *ot = NULL;
    fmrt_field *field = NULL;
    fmrt_solver *solver = NULL;
    fmrt_sampler *sampler = NULL;
    if (fmrt_scheduler_builtin("ot", NULL, 0, &ot) != FMRT_STATUS_OK) return 2;
    fmrt_status s = argc > 1 ? fmrt_field_plugin(argv[1], NULL, &field)
                             : fmrt_field_gaussian_ring(ot, 8, 4.0, 0.3, &field);
    if (s != FMRT_STATUS_OK) {
        fprintf(stderr, "field: %s\n", fmrt_last_error());
        return 2;
    }
    if (fmrt_solver_adaptive("dopri5", NULL, &solver) != FMRT_STATUS_OK) return 2;
    if (fmrt_sampler_new(field, solver, &sampler) != FMRT_STATUS_OK) return 2;
    /* Only the sampler is needed from here on. */
    fmrt_solver_free(solver);
    fmrt_field_free(field);
    fmrt_scheduler_free(ot);

    static job jobs[THREADS];
    pthread_t ids[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i].sampler = sampler;
        jobs[i].index = i;
        pthread_create(&ids[i], NULL, run, &jobs[i]);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(ids[i], NULL);

    int bad = 0;
    float expect[N * 2];
    for (int i = 0; i < THREADS; i++) {
        if (jobs[i].status != FMRT_STATUS_OK) {
            fprintf(stderr, "thread %d failed: %s\n", i, jobs[i].message);
            bad = 1;
            continue;
        }
        for (int r = 0; r < ROUNDS; r++) {
            uint64_t seed = (uint64_t)(100 * i + r);
            if (fmrt_sampler_sample(sampler, N, seed, NULL, 0, NULL, expect, N * 2, NULL, 0,
                                    NULL) != FMRT_STATUS_OK ||
                memcmp(expect, jobs[i].out[r], sizeof expect) != 0) {
                fprintf(stderr, "thread %d round %d differs from the sequential run\n", i, r);
                bad = 1;
            }
        }
    }
    fmrt_sampler_free(sampler);
    if (!bad) printf("threads ok %d x %d samples\n", THREADS, ROUNDS);
    return bad;
}
