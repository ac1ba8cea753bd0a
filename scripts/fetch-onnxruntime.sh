#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library that fmrt loads at run time.
#
#   bash scripts/fetch-onnxruntime.sh          # CPU library  -> .ort/lib/
#   bash scripts/fetch-onnxruntime.sh --gpu    # CUDA library -> .ort/gpu/lib/
#
# The library comes from the official ONNX Runtime wheel on PyPI (pip is used
# only as the download client; nothing is installed into any Python
# environment). The wheel's SHA-256 is pinned below and checked before
# anything is extracted; a mismatch aborts. Running the script again when the
# right files are already there does nothing. The library's absolute path is
# printed on stdout (progress goes to stderr), so a caller can capture it.
#
# --gpu: the `onnxruntime-gpu` wheel (x86_64 Linux, CUDA 13). It contains the
# CUDA execution provider but not CUDA itself: CUDA 13 and cuDNN 9 come either
# from a system installation or from NVIDIA's wheels, e.g.
#   python3 -m pip install nvidia-cuda-runtime~=13.0 nvidia-cublas~=13.0 \
#       nvidia-cufft~=12.0 nvidia-curand~=10.0 nvidia-cuda-nvrtc~=13.0 \
#       nvidia-cudnn-cu13~=9.0
# whose `nvidia/*/lib` folders must then be on LD_LIBRARY_PATH. Build fmrt
# with `--features cuda` to use it.
#
# Environment: PYTHON (default python3) is the interpreter that runs pip and
# unpacks the wheel.
set -euo pipefail

VERSION=1.31.1
LIB="libonnxruntime.so.${VERSION}"

gpu=0
for arg in "$@"; do
    case "$arg" in
        --gpu) gpu=1 ;;
        -h | --help)
            sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "fetch-onnxruntime: unknown argument \`$arg\` (try --help)" >&2
            exit 2
            ;;
    esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
target="$(uname -s)-$(uname -m)"

# One pinned wheel per (flavour, platform): package, pip platform tag,
# SHA-256 of the wheel file, destination folder, files to extract.
case "$gpu:$target" in
    0:Linux-x86_64)
        package=onnxruntime
        platform=manylinux_2_28_x86_64
        sha256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
        dest=.ort/lib
        files="$LIB"
        ;;
    0:Linux-aarch64)
        package=onnxruntime
        platform=manylinux_2_28_aarch64
        sha256=da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3
        dest=.ort/lib
        files="$LIB"
        ;;
    1:Linux-x86_64)
        package=onnxruntime-gpu
        platform=manylinux_2_28_x86_64
        sha256=e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6
        dest=.ort/gpu/lib
        files="$LIB libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so"
        ;;
    *)
        flavour=CPU
        [ "$gpu" = 1 ] && flavour=GPU
        echo "fetch-onnxruntime: no pinned ONNX Runtime $VERSION $flavour wheel for $target." >&2
        echo "Install ONNX Runtime >= 1.31 yourself and set ORT_DYLIB_PATH to its shared library." >&2
        exit 1
        ;;
esac

out="$root/$dest"
stamp="$out/.wheel-sha256"

present=1
for f in $files; do
    [ -f "$out/$f" ] || present=0
done
if [ "$present" = 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sha256" ]; then
    echo "fetch-onnxruntime: $package $VERSION already in $dest" >&2
    echo "$out/$LIB"
    exit 0
fi

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "fetch-onnxruntime: \`$python\` not found; it is needed to run pip (set PYTHON)." >&2
    exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "fetch-onnxruntime: downloading $package==$VERSION ($platform) from PyPI" >&2
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.11 --platform "$platform" \
    "$package==$VERSION" -d "$tmp" >&2

# Verify the wheel, then extract each file to a temporary name in the
# destination and rename it into place, so an interrupted run never leaves a
# truncated library behind.
"$python" - "$tmp" "$sha256" "$out" $files <<'PY'
import glob, hashlib, os, sys, zipfile

tmp, expected, out, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
wheels = glob.glob(os.path.join(tmp, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"fetch-onnxruntime: expected one wheel, pip produced {wheels}")
wheel = wheels[0]
digest = hashlib.sha256()
with open(wheel, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
actual = digest.hexdigest()
if actual != expected:
    sys.exit(
        f"fetch-onnxruntime: CHECKSUM MISMATCH for {os.path.basename(wheel)}\n"
        f"  expected sha256 {expected}\n  got      sha256 {actual}\n"
        "Nothing was extracted."
    )
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for name in names:
        member = "onnxruntime/capi/" + name
        try:
            data = z.read(member)
        except KeyError:
            sys.exit(f"fetch-onnxruntime: {member} is not in {os.path.basename(wheel)}")
        part = os.path.join(out, name + ".part")
        with open(part, "wb") as f:
            f.write(data)
        os.chmod(part, 0o755)
        os.replace(part, os.path.join(out, name))
PY

echo "$sha256" >"$stamp"
echo "fetch-onnxruntime: extracted $files into $dest" >&2
echo "$out/$LIB"
