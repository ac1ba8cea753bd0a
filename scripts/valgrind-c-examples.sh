#!/usr/bin/env bash
# Builds the C examples and the plugin against target/debug/libfmrt.so and runs
# them under valgrind memcheck; fails on any leak, invalid access or
# uninitialised read. Usage: scripts/valgrind-c-examples.sh (from anywhere).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --lib
lib="$PWD/target/debug"
out="$PWD/target/valgrind-c-examples"
mkdir -p "$out"
cc -shared -fPIC -O1 -g -Wall -Wextra -Werror -I include examples/plugins/gmm_plugin.c \
  -o "$out/libgmm_plugin.so" -lm
# examples/c/likelihood.c is left out: it loads ONNX Runtime, whose own
# initialisation trips memcheck (overlapping memcpy inside libonnxruntime), so
# a run would fail for reasons outside fmrt. tests/ffi.rs compiles and runs it.
for ex in sample threads; do
  cc -std=c11 -O1 -g -Wall -Wextra -Werror -I include "examples/c/$ex.c" -o "$out/$ex" \
    -L"$lib" -lfmrt -Wl,-rpath,"$lib" -lpthread
done
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
run "$out/threads"
run "$out/threads" "$out/libgmm_plugin.so"
echo "valgrind: no errors, no leaks"
