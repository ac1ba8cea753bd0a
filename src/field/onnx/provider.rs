//! Execution providers: where ONNX Runtime runs the model.
//!
//! # GPU setup (CUDA)
//!
//! 1. Build fmrt with the `cuda` feature: `cargo build --release --features cuda`.
//!    Without it, asking for CUDA with [`ProviderPolicy::Require`] is an error
//!    saying so.
//! 2. Get the GPU build of ONNX Runtime: `bash scripts/fetch-onnxruntime.sh --gpu`
//!    puts `libonnxruntime.so.1.31.1` with its CUDA provider into `.ort/gpu/lib/`,
//!    which a `cuda` build searches before `.ort/lib/` (or point `ORT_DYLIB_PATH`
//!    at it).
//! 3. Provide CUDA 13 and cuDNN 9: a system installation, or NVIDIA's wheels
//!    (`python3 -m pip install nvidia-cuda-runtime~=13.0 nvidia-cublas~=13.0
//!    nvidia-cufft~=12.0 nvidia-curand~=10.0 nvidia-cuda-nvrtc~=13.0
//!    nvidia-cudnn-cu13~=9.0`) with their `nvidia/*/lib` folders on
//!    `LD_LIBRARY_PATH`.
//! 4. Load with `.execution_provider(ExecutionProvider::Cuda { device_id: 0 })`;
//!    [`OnnxField::provider`](super::OnnxField::provider) reports `CUDA:0` when
//!    the GPU is used.

use std::path::Path;

use ort::session::builder::SessionBuilder;

/// Where the model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExecutionProvider {
    /// ONNX Runtime's CPU provider (the default).
    #[default]
    Cpu,
    /// NVIDIA GPU `device_id` through the CUDA provider (needs the `cuda`
    /// feature and the GPU library; see the [module docs](self)).
    Cuda {
        /// The CUDA device ordinal.
        device_id: i32,
    },
}

impl std::fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecutionProvider::Cpu => f.write_str("CPU"),
            ExecutionProvider::Cuda { device_id } => write!(f, "CUDA:{device_id}"),
        }
    }
}

/// What to do when the requested provider cannot be used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProviderPolicy {
    /// Fail to load (the default).
    #[default]
    Require,
    /// Fall back to the CPU and record a note
    /// ([`OnnxField::provider_notes`](super::OnnxField::provider_notes)).
    Prefer,
}

/// Registers `provider` on `builder`; `Err` holds the reason it cannot be used.
pub(crate) fn register(
    builder: SessionBuilder,
    provider: ExecutionProvider,
    library: &Path,
) -> Result<SessionBuilder, String> {
    match provider {
        ExecutionProvider::Cpu => Ok(builder),
        ExecutionProvider::Cuda { device_id } => register_cuda(builder, device_id, library),
    }
}

#[cfg(feature = "cuda")]
fn register_cuda(
    builder: SessionBuilder,
    device_id: i32,
    library: &Path,
) -> Result<SessionBuilder, String> {
    use ort::ep::ExecutionProvider as _;

    let cpu_build = || {
        format!(
            "the ONNX Runtime library `{}` has no CUDA execution provider (it is a CPU build); \
             get the GPU build with `bash scripts/fetch-onnxruntime.sh --gpu`",
            library.display()
        )
    };
    match ort::ep::CUDA::is_available() {
        Ok(true) => {}
        Ok(false) => return Err(cpu_build()),
        Err(e) => return Err(format!("cannot query ONNX Runtime's providers: {e}")),
    }
    let cuda = ort::ep::CUDA::default()
        .with_device_id(device_id)
        .build()
        .error_on_failure();
    builder.with_execution_providers([cuda]).map_err(|e| {
        format!(
            "cannot start the CUDA provider on device {device_id}: {} \
             (CUDA 13 and cuDNN 9 libraries must be on the library path)",
            e.to_string().trim_end()
        )
    })
}

#[cfg(not(feature = "cuda"))]
fn register_cuda(
    builder: SessionBuilder,
    _device_id: i32,
    _library: &Path,
) -> Result<SessionBuilder, String> {
    let _ = builder;
    Err("this fmrt was built without CUDA support; rebuild it with `--features cuda`".to_string())
}
