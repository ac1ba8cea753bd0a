/*
 * model.c - a model as exported, through the fmrt C API: open it with its
 * fmrt.* metadata, list its inputs, sample with the defaults (adaptive
 * dopri5), and compute the exact log-likelihood of each sample.
 *
 * Usage: model MODEL.onnx [N] [SEED]
 * ONNX Runtime is found through ORT_DYLIB_PATH, .ort/lib/ beside the program,
 * or the system library path.
 * Output lines (machine-readable): "prediction NAME",
 * "input INDEX ROLE NAME DTYPE [DIMS...]" (ROLE: state, time or extra; -1 for
 * a dynamic axis), "sample I X..." and "log_p I LOG_P".
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

static const char *role_name(fmrt_input_role role) {
    switch (role) {
    case FMRT_INPUT_ROLE_STATE: return "state";
    case FMRT_INPUT_ROLE_TIME: return "time";
    default: return "extra";
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.onnx [N] [SEED]\n", argv[0]);
        return 2;
    }
    size_t n = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : 4;
    unsigned long long seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 42;

    /* The model's metadata decide the training scheduler and what it
     * predicts; NULL options override nothing. */
    fmrt_model *model = NULL;
    check(fmrt_model_open(argv[1], NULL, NULL, &model), "fmrt_model_open");
    char prediction[16];
    check(fmrt_model_prediction(model, prediction, sizeof prediction, NULL),
          "fmrt_model_prediction");
    printf("prediction %s\n", prediction);

    size_t inputs = 0;
    check(fmrt_model_input_count(model, &inputs), "fmrt_model_input_count");
    for (size_t i = 0; i < inputs; i++) {
        fmrt_input_role role;
        char name[256], dtype[32];
        int64_t dims[8];
        size_t rank = 0;
        check(fmrt_model_input(model, i, &role, name, sizeof name, NULL, dtype, sizeof dtype,
                               NULL),
              "fmrt_model_input");
        check(fmrt_model_input_shape(model, i, dims, 8, &rank), "fmrt_model_input_shape");
        printf("input %zu %s %s %s", i, role_name(role), name, dtype);
        for (size_t k = 0; k < rank; k++) {
            printf(" %lld", (long long)dims[k]);
        }
        printf("\n");
    }

    /* The field to integrate: the network with the conversion its prediction
     * type needs. */
    fmrt_field *field = NULL;
    check(fmrt_model_field(model, &field), "fmrt_model_field");
    size_t dim = 0;
    check(fmrt_field_state_size(field, &dim), "fmrt_field_state_size");
    fmrt_solver *solver = NULL;
    check(fmrt_solver_adaptive("dopri5", NULL, &solver), "fmrt_solver_adaptive");
    fmrt_sampler *sampler = NULL;
    check(fmrt_sampler_new(field, solver, &sampler), "fmrt_sampler_new");

    float *x = calloc(n * dim, sizeof *x);
    double *log_p = calloc(n, sizeof *log_p);
    if (!x || !log_p) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    check(fmrt_sampler_sample(sampler, n, seed, NULL, 0, NULL, x, n * dim, NULL, 0, NULL),
          "fmrt_sampler_sample");
    for (size_t i = 0; i < n; i++) {
        printf("sample %zu", i);
        for (size_t k = 0; k < dim; k++) {
            printf(" %.9g", x[i * dim + k]);
        }
        printf("\n");
    }

    /* Exact log-likelihoods of the samples, with the same solver. */
    fmrt_likelihood_config *options = NULL;
    check(fmrt_likelihood_config_new(&options), "fmrt_likelihood_config_new");
    check(fmrt_likelihood_config_set_solver(options, solver), "fmrt_likelihood_config_set_solver");
    const double t_data = 1.0;
    check(fmrt_log_likelihood_config(field, options, x, n * dim, n, &t_data, 1, NULL, log_p, n,
                                     NULL, 0, NULL, 0, NULL),
          "fmrt_log_likelihood_config");
    fmrt_likelihood_config_free(options);
    for (size_t i = 0; i < n; i++) {
        printf("log_p %zu %.17g\n", i, log_p[i]);
    }

    free(x);
    free(log_p);
    fmrt_sampler_free(sampler);
    fmrt_solver_free(solver);
    fmrt_field_free(field);
    fmrt_model_free(model);
    return 0;
}
