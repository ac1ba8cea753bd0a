#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer, AddressSanitizer,
# debug assertions on) for SECONDS each, one after another.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS  per target (default 60)
#   TARGET   fm_source, onnx_tangent, npy_csv, c_abi (default: all four)
#
# Installs cargo-fuzz when it is missing; uses the nightly toolchain when
# there is one (FUZZ_TOOLCHAIN picks another), else the default toolchain with
# RUSTC_BOOTSTRAP=1. Each target starts from its committed seeds in
# fuzz/corpus/<target>/ and grows a working corpus in
# fuzz/target/corpus/<target>/ (not committed); crashes land in
# fuzz/artifacts/<target>/ and fail the run. The last libFuzzer stats line
# of each target (executions, coverage) is printed at the end; full logs are
# in fuzz/target/logs/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
shift || true
if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  targets=(fm_source onnx_tangent npy_csv c_abi)
fi
# cargo-fuzz needs nightly's -Z flags: the nightly toolchain when there is
# one, else the default toolchain with RUSTC_BOOTSTRAP=1 (same flags, no
# second toolchain to install).
if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then
  toolchain="+$FUZZ_TOOLCHAIN"
elif rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain="+nightly"
else
  toolchain="+$(rustup show active-toolchain | cut -d' ' -f1)"
  export RUSTC_BOOTSTRAP=1
fi
if ! cargo fuzz --version > /dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked
fi
mkdir -p target/logs
cargo "$toolchain" fuzz build --debug-assertions
failed=()
for t in "${targets[@]}"; do
  mkdir -p "target/corpus/$t" "artifacts/$t"
  echo "== $t for ${seconds}s"
  # -timeout: an input running 60 s (on a loaded machine) is a hang worth
  # reporting; -rss_limit_mb: one needing 2 GB is an allocation worth it.
  if ! cargo "$toolchain" fuzz run --debug-assertions "$t" "target/corpus/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -timeout=60 -rss_limit_mb=2048 -print_final_stats=1 \
      > "target/logs/$t.log" 2>&1; then
    failed+=("$t")
  fi
  grep -E '^#[0-9]+[[:space:]]+DONE' "target/logs/$t.log" | tail -n 1 || true
  grep -E '^stat::number_of_executed_units' "target/logs/$t.log" || true
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: ${failed[*]} failed; see fuzz/target/logs/ and fuzz/artifacts/" >&2
  exit 1
fi
echo "fuzz: no crashes"
