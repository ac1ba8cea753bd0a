/*
 * tune.c - the work-precision table through the fmrt C API: the
 * 8-component ring mixture (CondOT) tuned for 10 calls from 128 samples of
 * seed 7 against dopri5 at rtol = atol = 1e-7, with the schedule given.
 *
 * Prints "rows R skipped S", one "row" line per row ("row METHOD GRID
 * BUDGET STEPS CALLS MEDIAN P99 MAX"), "best METHOD GRID CALLS MEDIAN" and
 * "refused" lines for the calls that must fail (a budget of 0, a row out of
 * range, an unmeasured budget) with their status names, then "tune ok";
 * exits 1 naming the call that went wrong.
 */
#include <stdio.h>
#include <stdlib.h>

#include "fmrt.h"

#define CHECK(call)                                                          \
    do {                                                                     \
        fmrt_status status_ = (call);                                        \
        if (status_ != FMRT_STATUS_OK) {                                     \
            fprintf(stderr, "%s failed: %s\n", #call, fmrt_last_error());    \
            return 1;                                                        \
        }                                                                    \
    } while (0)

#define REFUSED(call, expected)                                              \
    do {                                                                     \
        fmrt_status status_ = (call);                                        \
        if (status_ != (expected)) {                                         \
            fprintf(stderr, "%s gave %s\n", #call, fmrt_status_name(status_)); \
            return 1;                                                        \
        }                                                                    \
        printf("refused %s\n", fmrt_status_name(status_));                   \
    } while (0)

int main(void) {
    fmrt_scheduler *ot = NULL;
    fmrt_field *field = NULL;
    fmrt_solver *solver = NULL;
    fmrt_sampler *sampler = NULL;
    fmrt_tune_table *table = NULL, *untouched = NULL;
    CHECK(fmrt_scheduler_builtin("ot", NULL, 0, &ot));
    CHECK(fmrt_field_gaussian_ring(ot, 8, 4.0, 0.3, &field));
    /* The sampler's own solver does not matter: tuning replaces it. */
    CHECK(fmrt_solver_fixed("euler", 1, &solver));
    CHECK(fmrt_sampler_new(field, solver, &sampler));

    const size_t budgets[] = {10};
    CHECK(fmrt_tune(sampler, budgets, 1, 128, 7, 1e-7, NULL, ot, &table));
    size_t rows = 0, skipped = 0;
    CHECK(fmrt_tune_table_len(table, &rows));
    CHECK(fmrt_tune_table_skipped_len(table, &skipped));
    printf("rows %zu skipped %zu\n", rows, skipped);
    for (size_t i = 0; i < rows; i++) {
        fmrt_tune_row r;
        CHECK(fmrt_tune_table_row(table, i, &r));
        printf("row %s %s %zu %zu %zu %.17g %.17g %.17g\n", r.method, r.grid, r.budget,
               r.steps, r.calls, r.median, r.p99, r.max);
    }
    for (size_t i = 0; i < skipped; i++) {
        fmrt_tune_skipped s;
        CHECK(fmrt_tune_table_skipped(table, i, &s));
        printf("skipped %s %s %zu: %s\n", s.method, s.grid, s.budget, s.reason);
    }
    fmrt_tune_row best;
    CHECK(fmrt_tune_table_best(table, 10, &best));
    printf("best %s %s %zu %.17g\n", best.method, best.grid, best.calls, best.median);

    const size_t zero[] = {0};
    REFUSED(fmrt_tune(sampler, zero, 1, 128, 7, 1e-7, NULL, ot, &untouched),
            FMRT_STATUS_INVALID_ARGUMENT);
    REFUSED(fmrt_tune(sampler, budgets, 1, 128, 7, 0.0, NULL, ot, &untouched),
            FMRT_STATUS_INVALID_ARGUMENT);
    REFUSED(fmrt_tune(NULL, budgets, 1, 128, 7, 1e-7, NULL, ot, &untouched),
            FMRT_STATUS_NULL_PARAMETER);
    REFUSED(fmrt_tune_table_row(table, rows, &best), FMRT_STATUS_INVALID_ARGUMENT);
    REFUSED(fmrt_tune_table_best(table, 11, &best), FMRT_STATUS_INVALID_ARGUMENT);
    if (untouched != NULL) {
        fprintf(stderr, "a failed fmrt_tune wrote its out-parameter\n");
        return 1;
    }

    fmrt_tune_table_free(table);
    fmrt_tune_table_free(NULL);
    fmrt_sampler_free(sampler);
    fmrt_solver_free(solver);
    fmrt_field_free(field);
    fmrt_scheduler_free(ot);
    printf("tune ok\n");
    return 0;
}
