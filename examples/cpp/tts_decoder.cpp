// tts_decoder.cpp - a CosyVoice-style flow-matching decoder driven from C++17.
//
// Loads the estimator once and synthesises two utterances of different
// lengths with the same handles: the model's length axis is dynamic
// (`seq_len`), so each call gives the shape of its sample
// (fmrt_sampler_sample_shaped). The export's batch is fixed at 2; fmrt packs
// each sample's conditional and unconditional rows into one model call.
//
//   - guidance w = 0.7 with mu, spks and cond zeroed as the null condition;
//   - the cosine time grid t = 1 - cos(pi u / 2) written as a .fm grid;
//   - Euler, 10 steps; noise N(0, I) from a seed;
//   - the solver state in f32, the network's precision, as CosyVoice's own
//     loop keeps it (fmrt_sampler_with_state_precision): no conversion per
//     model call, the speed of a bare ONNX Runtime loop.
//
// Channel counts are read from the model's declared input shapes, not
// assumed. Usage: tts_decoder MODEL.onnx [LIBONNXRUNTIME.so]
// Prints "model ..." and then one "utterance I frames T channels C ms MS rms R"
// line per utterance (MS the wall time of its sampling call).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <map>
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

inline void check(fmrt_status status, const char *what) {
    if (status != FMRT_STATUS_OK) throw error(status, what);
}

template <typename T, void (*Free)(T *)> struct deleter {
    void operator()(T *p) const noexcept { Free(p); }
};
template <typename T, void (*Free)(T *)> using handle = std::unique_ptr<T, deleter<T, Free>>;

using onnx_config_ptr = handle<fmrt_onnx_config, fmrt_onnx_config_free>;
using model_options_ptr = handle<fmrt_model_options, fmrt_model_options_free>;
using model_ptr = handle<fmrt_model, fmrt_model_free>;
using field_ptr = handle<fmrt_field, fmrt_field_free>;
using solver_ptr = handle<fmrt_solver, fmrt_solver_free>;
using sampler_ptr = handle<fmrt_sampler, fmrt_sampler_free>;
using extras_ptr = handle<fmrt_extras, fmrt_extras_free>;

// The declared dims of every input of `model` by name (-1: a dynamic axis),
// and the name of its state input.
struct inputs {
    std::map<std::string, std::vector<int64_t>> dims;
    std::string state;
};

inline inputs declared_inputs(const fmrt_model &model) {
    inputs out;
    size_t count = 0;
    check(fmrt_model_input_count(&model, &count), "fmrt_model_input_count");
    for (size_t i = 0; i < count; ++i) {
        size_t name_len = 0, dtype_len = 0, rank = 0;
        // A size query first: both lengths come back with BUFFER_TOO_SMALL.
        fmrt_model_input(&model, i, nullptr, nullptr, 0, &name_len, nullptr, 0, &dtype_len);
        std::vector<char> name(name_len), dtype(dtype_len);
        fmrt_input_role role = FMRT_INPUT_ROLE_EXTRA;
        check(fmrt_model_input(&model, i, &role, name.data(), name.size(), nullptr, dtype.data(),
                               dtype.size(), nullptr),
              "fmrt_model_input");
        fmrt_model_input_shape(&model, i, nullptr, 0, &rank);
        std::vector<int64_t> dims(rank);
        check(fmrt_model_input_shape(&model, i, dims.data(), dims.size(), &rank),
              "fmrt_model_input_shape");
        out.dims[name.data()] = dims;
        if (role == FMRT_INPUT_ROLE_STATE) out.state = name.data();
    }
    return out;
}

// The fixed size of axis `axis` of the input `name`, or an error.
inline size_t fixed_dim(const inputs &in, const std::string &name, size_t axis) {
    auto it = in.dims.find(name);
    if (it == in.dims.end() || it->second.size() <= axis || it->second[axis] < 0) {
        throw std::runtime_error("the model has no input " + name + " with a fixed axis " +
                                 std::to_string(axis));
    }
    return static_cast<size_t>(it->second[axis]);
}

// Sets a float32 conditioning input of shape `shape` (batch first).
inline void set_float(fmrt_extras &extras, const char *name, const std::vector<float> &data,
                      const std::vector<size_t> &shape) {
    check(fmrt_extras_set_tensor(&extras, name, FMRT_DTYPE_FLOAT32, data.data(), data.size(),
                                 shape.data(), shape.size()),
          name);
}

}  // namespace fmrt

// The cosine grid of CosyVoice's sampler over u in [0, 1].
static const char *const COSINE_GRID = "# CosyVoice's t_scheduler \"cosine\"\n"
                                       "grid = 1 - cos(pi * u / 2)\n";

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s MODEL.onnx [LIBONNXRUNTIME.so]\n", argv[0]);
        return 2;
    }
    try {
        fmrt_onnx_config *raw_onnx = nullptr;
        fmrt::check(fmrt_onnx_config_new(&raw_onnx), "fmrt_onnx_config_new");
        fmrt::onnx_config_ptr onnx(raw_onnx);
        fmrt::check(fmrt_onnx_config_set_state_input(onnx.get(), "x"), "state input");
        fmrt::check(fmrt_onnx_config_set_time_input(onnx.get(), "t"), "time input");
        if (argc > 2) fmrt::check(fmrt_onnx_config_set_ort_library(onnx.get(), argv[2]), "ORT");

        fmrt_model_options *raw_options = nullptr;
        fmrt::check(fmrt_model_options_new(&raw_options), "fmrt_model_options_new");
        fmrt::model_options_ptr options(raw_options);
        fmrt::check(fmrt_model_options_set_guidance(options.get(), 0.7), "guidance");
        for (const char *name : {"mu", "spks", "cond"}) {
            fmrt::check(fmrt_model_options_set_null_zeros(options.get(), name), name);
        }
        fmrt::check(fmrt_model_options_set_time_direction(options.get(), "forward"), "direction");
        fmrt::check(fmrt_model_options_set_time_scale(options.get(), 1.0), "time scale");

        fmrt_model *raw_model = nullptr;
        fmrt::check(fmrt_model_open_config(argv[1], onnx.get(), options.get(), &raw_model),
                    "fmrt_model_open_config");
        fmrt::model_ptr model(raw_model);
        const fmrt::inputs in = fmrt::declared_inputs(*model);
        const size_t channels = fmrt::fixed_dim(in, in.state, 1);
        const size_t mel_mu = fmrt::fixed_dim(in, "mu", 1);
        const size_t mel_cond = fmrt::fixed_dim(in, "cond", 1);
        const size_t speaker = fmrt::fixed_dim(in, "spks", 1);
        std::printf("model state %s channels %zu batch %lld\n", in.state.c_str(), channels,
                    static_cast<long long>(in.dims.at(in.state)[0]));

        fmrt_field *raw_field = nullptr;
        fmrt::check(fmrt_model_field(model.get(), &raw_field), "fmrt_model_field");
        fmrt::field_ptr field(raw_field);
        fmrt_solver *raw_solver = nullptr;
        fmrt::check(fmrt_solver_time_grid_source("euler", COSINE_GRID, "cosine_tts.fm", nullptr,
                                                 0, 10, &raw_solver),
                    "fmrt_solver_time_grid_source");
        fmrt::solver_ptr solver(raw_solver);
        fmrt_sampler *raw_f64 = nullptr;
        fmrt::check(fmrt_sampler_new(field.get(), solver.get(), &raw_f64), "fmrt_sampler_new");
        fmrt::sampler_ptr f64_state(raw_f64);
        fmrt_sampler *raw_sampler = nullptr;
        fmrt::check(fmrt_sampler_with_state_precision(f64_state.get(), FMRT_STATE_PRECISION_F32,
                                                      &raw_sampler),
                    "fmrt_sampler_with_state_precision");
        fmrt::sampler_ptr sampler(raw_sampler);

        const size_t lengths[] = {37, 64};
        for (size_t u = 0; u < 2; ++u) {
            const size_t frames = lengths[u];
            // One utterance: an encoder output mu, a speaker embedding, a
            // prompt of 10 frames in cond, every frame unmasked.
            std::vector<float> mask(frames, 1.0f), mu(mel_mu * frames), cond(mel_cond * frames);
            std::vector<float> spks(speaker);
            for (size_t c = 0; c < mel_mu; ++c) {
                for (size_t t = 0; t < frames; ++t) {
                    mu[c * frames + t] = 0.5f * std::sin(0.3f * t + 0.1f * c);
                }
            }
            for (size_t c = 0; c < mel_cond; ++c) {
                for (size_t t = 0; t < frames && t < 10; ++t) {
                    cond[c * frames + t] = 0.25f * std::cos(0.2f * t + 0.05f * c);
                }
            }
            for (size_t c = 0; c < speaker; ++c) spks[c] = 0.1f * std::cos(0.7f * c);

            fmrt_extras *raw_extras = nullptr;
            fmrt::check(fmrt_extras_new(&raw_extras), "fmrt_extras_new");
            fmrt::extras_ptr extras(raw_extras);
            fmrt::set_float(*extras, "mask", mask, {1, 1, frames});
            fmrt::set_float(*extras, "mu", mu, {1, mel_mu, frames});
            fmrt::set_float(*extras, "spks", spks, {1, speaker});
            fmrt::set_float(*extras, "cond", cond, {1, mel_cond, frames});

            const size_t shape[] = {channels, frames};
            std::vector<float> mel(channels * frames);
            fmrt_stats stats{};
            const auto start = std::chrono::steady_clock::now();
            fmrt::check(fmrt_sampler_sample_shaped(sampler.get(), shape, 2, 1, 1000 + u,
                                                   extras.get(), mel.data(), mel.size(), &stats),
                        "fmrt_sampler_sample_shaped");
            const std::chrono::duration<double, std::milli> wall =
                std::chrono::steady_clock::now() - start;
            double sum = 0.0;
            for (float v : mel) sum += static_cast<double>(v) * v;
            std::printf("utterance %zu frames %zu channels %zu ms %.3f rms %.6g nfe %llu\n", u,
                        frames, channels, wall.count(), std::sqrt(sum / mel.size()),
                        static_cast<unsigned long long>(stats.nfe));
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "tts_decoder: %s\n", e.what());
        return 1;
    }
    return 0;
}
