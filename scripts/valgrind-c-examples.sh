#!/usr/bin/env bash
# Builds the C examples, the plugins (ABI v1 and v2) and the 16-thread ONNX test program
# (c-api/tests/c/onnx_threads.c) against target/debug/libfmrt.so and runs them
# under valgrind memcheck; fails on any leak, invalid access or uninitialised
# read. Usage: scripts/valgrind-c-examples.sh (from anywhere; the ONNX program
# needs ONNX Runtime in .ort/lib, from scripts/fetch-onnxruntime.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# The C library alone (package fmrt-c, c-api/artifact/): target/debug/libfmrt.so.
cargo build -p fmrt-c
lib="$PWD/target/debug"
out="$PWD/target/valgrind-c-examples"
mkdir -p "$out"
for plugin in gmm_plugin gmm_plugin_v2; do
  cc -shared -fPIC -O1 -g -Wall -Wextra -Werror -I include "examples/plugins/$plugin.c" \
    -o "$out/lib$plugin.so" -lm
done
# Programs that load ONNX Runtime run with scripts/valgrind-onnxruntime.supp:
# its own initialisation trips memcheck (overlapping memcpy inside
# libonnxruntime); the file suppresses reports inside that library only.
for src in examples/c/sample.c examples/c/threads.c c-api/tests/c/onnx_threads.c; do
  ex="$(basename "$src" .c)"
  cc -std=c11 -O1 -g -Wall -Wextra -Werror -I include "$src" -o "$out/$ex" \
    -L"$lib" -lfmrt -Wl,-rpath,"$lib" -lpthread
done
ort="$(ls "$PWD"/.ort/lib/libonnxruntime.so* 2>/dev/null | head -n 1 || true)"
# Rust's std keeps a few process-lifetime allocations (thread-local destructors
# registration, the main thread's info): "still reachable" is not counted as
# an error, only definite, indirect and possible leaks are.
vg=(valgrind --tool=memcheck --error-exitcode=99 --leak-check=full
    --errors-for-leak-kinds=definite,indirect,possible --show-leak-kinds=definite,indirect,possible
    --track-origins=yes --quiet)
run() {
  echo "== valgrind $*"
  "${vg[@]}" "$@" > "$out/last.out"
  echo "   ok ($(wc -l < "$out/last.out") lines of output)"
}
run "$out/sample"
run "$out/sample" "$out/libgmm_plugin.so"
run "$out/sample" "$out/libgmm_plugin_v2.so"
run "$out/threads"
run "$out/threads" "$out/libgmm_plugin.so"
run "$out/threads" "$out/libgmm_plugin_v2.so"
if [[ -n "$ort" ]]; then
  # 16 threads sharing one ONNX field and one sampler, freeing handles in
  # random order while the others run.
  vg+=(--suppressions=scripts/valgrind-onnxruntime.supp)
  run "$out/onnx_threads" tests/fixtures/gmm_ot.onnx "$ort"
else
  echo "valgrind: no ONNX Runtime in .ort/lib (scripts/fetch-onnxruntime.sh); onnx_threads skipped" >&2
  exit 1
fi
echo "valgrind: no errors, no leaks"
