#!/bin/sh
# CoroNet on-device runner (POSIX sh for Android's toybox/mksh; also runs under dash).
# Runs one benchmark and prints one delimited, versioned result block with the raw tool output.
#
#   runner.sh --tool benchmark_model|onnxruntime_perf_test|executor_runner --bin DIR --model PATH
#             [--threads N] [--cpus HEXMASK] [--warmup N] [--runs N]
#             [--delegate cpu|xnnpack|gpu|nnapi|qnn|external:PATH]
#             [--max-temp-c C] [--max-wait-s S] [--work DIR]
#             [--input-layer NAME --input-shape 1,3,H,W --input-file PATH] [--output-file PATH]
#             [--op-profile PATH]
#
# With --input-file, benchmark_model and executor_runner run on that input (the tensor's raw
# bytes) instead of random data or ones; with --output-file they write the output's raw bytes
# there after the last run, so the host can check what the phone computed (the block's
# output_bytes field; -1: not written). executor_runner has no warm-up of its own: it runs
# warm-up + timed executions and logs each one's time.
#
# With --op-profile, benchmark_model prints its per-op tables with its output
# (--enable_op_profiling=true) and onnxruntime_perf_test writes its profile JSON to PATH (the
# block's profile_bytes field; -1: not written); the timed runs then include the profiler's cost.
#
# ANDROID_ROOT_PREFIX (empty on a phone) prefixes /sys reads, so the loopback test device can
# stand a folder in for the phone's sysfs.
set -u

tool="" bin="" model="" threads=1 cpus="" warmup=5 runs=20 delegate="xnnpack"
max_temp_c=45 max_wait_s=300 work="${TMPDIR:-/data/local/tmp}"
input_layer="" input_shape="" input_file="" output_file="" op_profile=""
root="${ANDROID_ROOT_PREFIX:-}"

die() { echo "runner: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tool) tool="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --delegate) delegate="$2"; shift 2 ;;
    --max-temp-c) max_temp_c="$2"; shift 2 ;;
    --max-wait-s) max_wait_s="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --input-layer) input_layer="$2"; shift 2 ;;
    --input-shape) input_shape="$2"; shift 2 ;;
    --input-file) input_file="$2"; shift 2 ;;
    --output-file) output_file="$2"; shift 2 ;;
    --op-profile) op_profile="$2"; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
[ -n "$tool" ] || die "--tool is required"
[ -f "$model" ] || die "model not found: $model"
[ -z "$input_file" ] || [ -f "$input_file" ] || die "input file not found: $input_file"
[ -x "$bin/$tool" ] || die "missing binary $bin/$tool: provide it for arm64-v8a in the bench's --binaries folder"

# The hottest readable thermal zone, in whole degrees C (milli-degrees in sysfs).
hottest_c() {
  max=0
  for zone in "$root"/sys/class/thermal/thermal_zone*; do
    [ -r "$zone/temp" ] || continue
    t=$(cat "$zone/temp" 2>/dev/null) || continue
    case "$t" in ''|*[!0-9-]*) continue ;; esac
    t=$((t / 1000))
    [ "$t" -gt "$max" ] && max=$t
  done
  echo "$max"
}

thermal_status() {
  s=$(dumpsys thermalservice 2>/dev/null | sed -n 's/.*Thermal Status: \([0-9][0-9]*\).*/\1/p' | head -n 1)
  echo "${s:-0}"
}

print_state() {
  for policy in "$root"/sys/devices/system/cpu/cpufreq/policy*; do
    [ -d "$policy" ] || continue
    echo "freq $(basename "$policy") cur=$(cat "$policy/scaling_cur_freq" 2>/dev/null) max=$(cat "$policy/scaling_max_freq" 2>/dev/null)"
  done
  echo "temp_c $(hottest_c)"
  echo "thermal_status $(thermal_status)"
}

waited=0
while :; do
  if [ "$(thermal_status)" -le 0 ] && [ "$(hottest_c)" -lt "$max_temp_c" ]; then break; fi
  if [ "$waited" -ge "$max_wait_s" ]; then break; fi
  sleep 5
  waited=$((waited + 5))
done

case "$tool" in
  benchmark_model)
    set -- --graph="$model" --num_threads="$threads" --warmup_runs="$warmup" --num_runs="$runs"
    case "$delegate" in
      cpu) set -- "$@" --use_xnnpack=false ;;
      xnnpack) set -- "$@" --use_xnnpack=true ;;
      gpu) set -- "$@" --use_gpu=true ;;
      nnapi) set -- "$@" --use_nnapi=true ;;
      external:*) set -- "$@" --external_delegate_path="${delegate#external:}" ;;
      *) die "unknown delegate $delegate for benchmark_model" ;;
    esac
    if [ -n "$input_file" ]; then
      escaped=$(printf '%s' "$input_layer" | sed 's/:/::/g')  # the tool reads "::" as a ':' in a name
      set -- "$@" --input_layer="$input_layer" --input_layer_shape="$input_shape" \
        --input_layer_value_files="$escaped:$input_file"
    fi
    if [ -n "$output_file" ]; then
      rm -f "$output_file"
      set -- "$@" --output_filepath="$output_file"
    fi
    [ -z "$op_profile" ] || set -- "$@" --enable_op_profiling=true ;;
  executor_runner)
    # a .pte carries its delegate (XNNPACK) inside: there is nothing to choose on the phone
    [ "$delegate" = xnnpack ] || die "executor_runner runs the program's own delegate (xnnpack), not $delegate"
    set -- --model_path="$model" --num_executions=$((warmup + runs)) --cpu_threads="$threads"
    [ -z "$input_file" ] || set -- "$@" --inputs="$input_file"
    if [ -n "$output_file" ]; then
      rm -f "$output_file" "$output_file-0.bin"
      set -- "$@" --output_file="$output_file"  # it writes <base>-<output index>.bin
    fi ;;
  onnxruntime_perf_test)
    case "$delegate" in cpu|nnapi|qnn|xnnpack) ;; *) die "unknown execution provider $delegate" ;; esac
    set -- -I -m times -r "$runs" -x "$threads" -y 1 -e "$delegate"
    if [ -n "$op_profile" ]; then
      rm -f "$op_profile" "$op_profile"_*.json
      set -- "$@" -p "$op_profile"  # a prefix: the file is PREFIX_<date>_<time>.json
    fi
    set -- "$@" "$model" ;;
  *) die "unknown tool $tool" ;;
esac

out="$work/coronet_run_$$.txt"
before=$(print_state)
if [ -n "$cpus" ] && command -v taskset >/dev/null 2>&1; then
  taskset "$cpus" "$bin/$tool" "$@" >"$out" 2>&1
else
  "$bin/$tool" "$@" >"$out" 2>&1
fi
rc=$?
after=$(print_state)
if [ "$tool" = executor_runner ] && [ -n "$output_file" ] && [ -f "$output_file-0.bin" ]; then
  mv "$output_file-0.bin" "$output_file"
fi
if [ "$tool" = onnxruntime_perf_test ] && [ -n "$op_profile" ]; then
  for written in "$op_profile"_*.json; do
    [ -f "$written" ] && mv "$written" "$op_profile"
    break
  done
fi

echo "=== CORONET-RESULT v1 BEGIN ==="
echo "tool=$tool"
echo "rc=$rc"
echo "delegate=$delegate"
echo "threads=$threads"
echo "cpus=$cpus"
echo "waited_s=$waited"
if [ -n "$output_file" ] && [ -f "$output_file" ]; then
  echo "output_bytes=$(wc -c <"$output_file" | tr -d ' ')"
elif [ -n "$output_file" ]; then
  echo "output_bytes=-1"
fi
if [ "$tool" = onnxruntime_perf_test ] && [ -n "$op_profile" ]; then
  if [ -f "$op_profile" ]; then echo "profile_bytes=$(wc -c <"$op_profile" | tr -d ' ')"; else echo "profile_bytes=-1"; fi
fi
echo "--- state before ---"
echo "$before"
echo "--- state after ---"
echo "$after"
echo "--- raw output ---"
cat "$out"
echo "=== CORONET-RESULT v1 END ==="
rm -f "$out"
exit 0
