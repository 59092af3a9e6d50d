#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with libFuzzer on the stable
# toolchain (RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the sanitizer flags it needs), starting
# from the seeds in seeds/<dir>, and prints the executions each ran.
#   cargo install cargo-fuzz && fuzz/run.sh 300
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
cargo fuzz build -O >/dev/null
for t in $targets; do
  seeds=seeds/${t#*_}
  [ "$t" = translate_encode ] && seeds=seeds/encode
  [ "$t" = translate_decode ] && seeds=seeds/decode
  mkdir -p "corpus/$t"
  log=$(mktemp)
  if cargo fuzz run -O "$t" "corpus/$t" $( [ -d "$seeds" ] && echo "$seeds" ) -- \
      -max_total_time="$secs" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
    echo "$t: $execs executions in ${secs}s, 0 crashes"
  else
    echo "$t: FAILED, see $log"; tail -30 "$log"; exit 1
  fi
  rm -f "$log"
done
