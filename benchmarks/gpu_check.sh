#!/usr/bin/env bash
# GPU check (never run in CI): on a machine with an NVIDIA GPU and `pip install '.[gpu]'`, in under
# 5 minutes: CUDA FP32, CUDA FP16 and TensorRT FP16 scores against ONNX Runtime CPU FP32 on a few
# real photos (through `sixview scan`, both models and the one-pass graph of the HD model that
# `python -m convert.onepass` writes), then model latency on CUDA and TensorRT (`python -m
# benchmarks.latency`, with and without I/O binding; the one-pass graph: a frame per input). Exit 1 if a device did not start,
# ran on another provider, or moved scores past the tolerances below.
#
#   benchmarks/gpu_check.sh                        # photos from ../shared/data/voc07_val/images
#   PHOTOS=~/pics N=16 OUT=/tmp/gpu benchmarks/gpu_check.sh
#
# Settings (environment): PY (default .venv/bin/python), PHOTOS (a folder of JPEGs), N (photos, a multiple
# of BATCH so that every model call has the same shape and TensorRT builds one engine per model),
# BATCH (images per call, 8), OUT (default gpu_check_out/), DEVICES (default "cuda tensorrt"),
# TOL_FP32 (max |score diff| for FP32 on the GPU, default 0.005), TOL_FP16 (default 0.05).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
PHOTOS=${PHOTOS:-../shared/data/voc07_val/images}
N=${N:-24}
BATCH=${BATCH:-8}
OUT=${OUT:-gpu_check_out}
DEVICES=${DEVICES:-cuda tensorrt}
TOL_FP32=${TOL_FP32:-0.005}
TOL_FP16=${TOL_FP16:-0.05}
export SIXVIEW_TRT_CACHE=${SIXVIEW_TRT_CACHE:-$HOME/.cache/sixview/trt}

if [[ "$DEVICES" == *cuda* || "$DEVICES" == *tensorrt* ]] && ! command -v nvidia-smi >/dev/null; then
    echo "gpu_check: no nvidia-smi: this script is for a machine with an NVIDIA GPU" >&2
    exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"

rm -rf "$OUT" && mkdir -p "$OUT/photos" "$OUT/scan"
mapfile -t photos < <(find "$PHOTOS" -maxdepth 1 -iname '*.jpg' | sort)
for f in "${photos[@]:0:$N}"; do cp "$f" "$OUT/photos/"; done
count=$(find "$OUT/photos" -type f | wc -l)
[ "$count" -gt 0 ] || { echo "gpu_check: no JPEGs in $PHOTOS" >&2; exit 2; }
echo "gpu_check: $count photos from $PHOTOS"

"$PY" -m convert.onepass models --out "$OUT/onepass" > /dev/null  # the HD graph that sees a frame once
rm -f "$OUT"/onepass/standard*.onnx

scan() {  # scan ENGINE NAME DEVICE PRECISION (ENGINE onepass: HD's one-pass graph)
    local t0=$SECONDS models=models role=$1
    [ "$1" = onepass ] && models="$OUT/onepass" role=hd
    timeout 120 "$PY" -c 'import sys; from edge.cli import main; sys.argv[0] = "sixview"; main()' scan "$OUT/photos" --models "$models" --engine "$role" --device "$3" --precision "$4" \
        --batch "$BATCH" --out "$OUT/scan/$1.$2.jsonl" 2> "$OUT/scan/$1.$2.log" \
        || { echo "gpu_check: scan $1 on $3 $4 failed:"; tail -3 "$OUT/scan/$1.$2.log"; return 1; }
    echo "  scan $1 $2: $((SECONDS - t0)) s (first run includes session creation / TensorRT engine build)"
}

status=0
for engine in hd standard onepass; do
    scan "$engine" cpu-fp32 cpu fp32
    runs=()
    for d in $DEVICES; do
        case $d in
            cuda) scan "$engine" cuda-fp32 cuda fp32 && runs+=("cuda-fp32:cuda:$TOL_FP32") || status=1
                  scan "$engine" cuda-fp16 cuda fp16 && runs+=("cuda-fp16:cuda:$TOL_FP16") || status=1 ;;
            tensorrt) scan "$engine" trt-fp16 tensorrt auto && runs+=("trt-fp16:tensorrt:$TOL_FP16") || status=1 ;;
            *) scan "$engine" "$d" "$d" auto && runs+=("$d:$d:$TOL_FP16") || status=1 ;;
        esac
    done
    for r in "${runs[@]}"; do
        IFS=: read -r name provider tol <<< "$r"
        "$PY" - "$OUT/scan/$engine.cpu-fp32.jsonl" "$OUT/scan/$engine.$name.jsonl" "$provider" "$tol" "$engine $name" <<'EOF' || status=1
import json, sys
ref_path, run_path, provider, tol, label = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
load = lambda p: {r["path"]: r for r in map(json.loads, open(p))}
ref, run = load(ref_path), load(run_path)
diff, flips, changed, wrong = 0.0, 0, 0, set()
for path, r in run.items():
    wrong |= {r["provider"]} - {provider}
    a = ref[path]
    if a["error"] or r["error"]:
        continue
    diff = max(diff, max(abs(r["scores"][c] - a["scores"][c]) for c in a["scores"]))
    flip = len(set(a["labels"]) ^ set(r["labels"]))
    flips, changed = flips + flip, changed + bool(flip or a["guess"] != r["guess"])
prec = {r["precision"] for r in run.values()}
ok = not wrong and diff <= tol
print(f"  {label:<22} provider {provider}{' (RAN ON ' + ','.join(sorted(wrong)) + ')' if wrong else ''} "
      f"precision {','.join(sorted(prec))}: max |score diff| vs CPU FP32 {diff:.5f} (tolerance {tol}), "
      f"{flips} label flips on {changed} of {len(run)} images: {'ok' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
EOF
    done
done

# Latency: the HD files only (one TensorRT engine per file and batch shape), CUDA and TensorRT.
mkdir -p "$OUT/models"
for f in hd.onnx hd.fp16.onnx; do [ -f "models/$f" ] && ln -sf "$(pwd)/models/$f" "$OUT/models/$f"; done
timeout 150 "$PY" -m benchmarks.latency --models "$OUT/models" --devices "$(echo "$DEVICES" | tr ' ' ',')" \
    --batches 6,48 --runs 50 --warmup 10 --out "$OUT/latency" 2> "$OUT/latency.log" || {
    echo "gpu_check: latency failed or ran out of time:"; tail -5 "$OUT/latency.log"; status=1; }
[ -f "$OUT/latency/latency.md" ] && grep -E '^\| hd' "$OUT/latency/latency.md" | cut -d'|' -f2-6,9,11,13
timeout 120 "$PY" -m benchmarks.latency --models "$OUT/onepass" --devices "$(echo "$DEVICES" | tr ' ' ',')" \
    --batches 1,8 --runs 50 --warmup 10 --out "$OUT/latency-onepass" 2> "$OUT/latency-onepass.log" || {
    echo "gpu_check: one-pass latency failed or ran out of time:"; tail -5 "$OUT/latency-onepass.log"; status=1; }
[ -f "$OUT/latency-onepass/latency.md" ] && grep -E '^\| hd' "$OUT/latency-onepass/latency.md" | cut -d'|' -f2-6,9,11,13
echo "gpu_check: $([ $status = 0 ] && echo passed || echo FAILED); records in $OUT/scan, latency in $OUT/latency"
exit $status
