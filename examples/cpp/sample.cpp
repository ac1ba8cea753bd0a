// sample.cpp - the fmrt C API from C++17 with RAII wrappers: handles live in
// std::unique_ptr with their free functions as deleters, and a failed call
// throws fmrt::error carrying the status and the library's message.
//
// Usage: sample_cpp [PLUGIN.so]
// Prints "cpp I X Y" for the ring mixture sampled like examples/c/sample.c,
// then the error a bad scheduler raises, and "cpp-plugin I X Y" given a plugin.
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "fmrt.h"

namespace fmrt {

// A failed fmrt call: the status and the thread's last error message.
class error : public std::runtime_error {
  public:
    error(fmrt_status status, const std::string &what)
        : std::runtime_error(what + ": " + fmrt_status_name(status) + ": " + fmrt_last_error()),
          status_(status) {}
    fmrt_status status() const noexcept { return status_; }

  private:
    fmrt_status status_;
};

// Throws when status is not FMRT_STATUS_OK.
inline void check(fmrt_status status, const char *what) {
    if (status != FMRT_STATUS_OK) throw error(status, what);
}

// A deleter calling an fmrt_*_free function.
template <typename T, void (*Free)(T *)> struct deleter {
    void operator()(T *p) const noexcept { Free(p); }
};
template <typename T, void (*Free)(T *)> using handle = std::unique_ptr<T, deleter<T, Free>>;

using scheduler_ptr = handle<fmrt_scheduler, fmrt_scheduler_free>;
using field_ptr = handle<fmrt_field, fmrt_field_free>;
using solver_ptr = handle<fmrt_solver, fmrt_solver_free>;
using sampler_ptr = handle<fmrt_sampler, fmrt_sampler_free>;

inline scheduler_ptr builtin_scheduler(const char *name) {
    fmrt_scheduler *s = nullptr;
    check(fmrt_scheduler_builtin(name, nullptr, 0, &s), "fmrt_scheduler_builtin");
    return scheduler_ptr(s);
}

inline scheduler_ptr scheduler_from_source(const std::string &source) {
    fmrt_scheduler *s = nullptr;
    check(fmrt_scheduler_from_source(source.c_str(), "inline.fm", nullptr, 0, &s),
          "fmrt_scheduler_from_source");
    return scheduler_ptr(s);
}

inline field_ptr ring(const fmrt_scheduler &s, size_t k, double radius, double std_dev) {
    fmrt_field *f = nullptr;
    check(fmrt_field_gaussian_ring(&s, k, radius, std_dev, &f), "fmrt_field_gaussian_ring");
    return field_ptr(f);
}

inline field_ptr plugin(const std::string &path, const std::string &config) {
    fmrt_field *f = nullptr;
    check(fmrt_field_plugin(path.c_str(), config.c_str(), &f), "fmrt_field_plugin");
    return field_ptr(f);
}

// A sampler owning its field reference and a copy of its solver settings.
class sampler {
  public:
    sampler(const fmrt_field &field, const char *method, size_t steps) {
        fmrt_solver *solver = nullptr;
        check(fmrt_solver_fixed(method, steps, &solver), "fmrt_solver_fixed");
        solver_ptr owned(solver);
        fmrt_sampler *s = nullptr;
        check(fmrt_sampler_new(&field, owned.get(), &s), "fmrt_sampler_new");
        ptr_.reset(s);
        check(fmrt_field_state_size(&field, &state_size_), "fmrt_field_state_size");
    }

    // n samples from seed, flattened [n, state size].
    std::vector<float> sample(size_t n, uint64_t seed) const {
        std::vector<float> x(n * state_size_);
        check(fmrt_sampler_sample(ptr_.get(), n, seed, nullptr, 0, nullptr, x.data(), x.size(),
                                  nullptr, 0, nullptr),
              "fmrt_sampler_sample");
        return x;
    }

    size_t state_size() const noexcept { return state_size_; }

  private:
    sampler_ptr ptr_;
    size_t state_size_ = 0;
};

}  // namespace fmrt

static void print(const char *prefix, const std::vector<float> &x) {
    for (size_t i = 0; i + 1 < x.size(); i += 2) {
        std::printf("%s %zu %.9g %.9g\n", prefix, i / 2, x[i], x[i + 1]);
    }
}

int main(int argc, char **argv) {
    try {
        auto ot = fmrt::scheduler_from_source("alpha = t\nsigma = 1 - t\n");
        auto field = fmrt::ring(*ot, 8, 4.0, 0.3);
        fmrt::sampler s(*field, "rk4", 20);
        print("cpp", s.sample(4, 42));

        try {
            fmrt::builtin_scheduler("cosin");
        } catch (const fmrt::error &e) {
            std::printf("cpp-error %u\n", static_cast<unsigned>(e.status()));
        }

        if (argc > 1) {
            auto p = fmrt::plugin(argv[1], "k=8 radius=4 std=0.3");
            fmrt::sampler ps(*p, "rk4", 20);
            print("cpp-plugin", ps.sample(4, 42));
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    return 0;
}
