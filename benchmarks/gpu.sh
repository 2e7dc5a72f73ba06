#!/usr/bin/env bash
# One prepared GPU check (issue 20), under 8 minutes on a machine with a CUDA GPU:
#   1 env     nvidia-smi, torch / CUDA / numpy versions
#   2 embed   CCT384 bare model(x) vs the embedding stage, fp32 and bf16, batch 64, 3072 synthetic
#             384 px frames written as the frames stage writes them (uncompressed TIFF), and as .npy; the
#             null-model ceiling of the stage per worker count; for each run, where the stage's
#             time went (main thread phases and waits, writer threads' busy share)
#   3 train   2 epochs of Adapt-STformer with the authors' freeze_te 1 on the synthetic Nordland world
#   4 table2  benchmarks/bench_models.py --table 2 on cuda (fp32, bf16)
#   5 table34 benchmarks/bench_models.py --table 3-4 on cuda (fp32, bf16)
# Each part runs under its own time limit and writes its file under $OUT as it goes, so a part
# that fails or runs out of time loses nothing of the others; the summary table comes last.
#
#   bash benchmarks/gpu.sh               # needs CUDA; results in $OUT (default ./gpu-out)
#   bash benchmarks/gpu.sh --cpu-smoke   # every part at tiny sizes on a CPU, to catch errors before
#   PARTS="embed train" bash benchmarks/gpu.sh   # only some parts (default: env embed train table2 table34)
#
# Run from the repository root. If .whl/ exists (faiss-cpu and utm wheels for Python 3.12, which
# the GPU machine lacks), they are installed into $SITE (default /tmp/site) first.
set -u
cd "$(dirname "$0")/.."
SMOKE=0
if [ "${1:-}" = "--cpu-smoke" ]; then SMOKE=1; elif [ $# -gt 0 ]; then echo "usage: $0 [--cpu-smoke]" >&2; exit 2; fi
OUT=${OUT:-$PWD/gpu-out}
SITE=${SITE:-/tmp/site}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD
START=$(date +%s)
LOG=$OUT/gpu.log
exec > >(tee -a "$LOG") 2>&1
declare -a SUMMARY

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl; then
    export PYTHONPATH=$PWD:$SITE
    echo "installed $(ls .whl | tr '\n' ' ')into $SITE"
  else
    echo "WARNING: installing the wheels in .whl failed; parts that need faiss or utm will fail"
  fi
fi

if [ $SMOKE = 0 ]; then
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "ERROR: no CUDA device visible to $PY (torch.cuda.is_available() is False); this check needs a GPU." \
         "Use --cpu-smoke to dry-run it on a CPU." >&2
    exit 3
  fi
  DEVICE=cuda
else
  DEVICE=cpu
  echo "CPU SMOKE RUN: tiny sizes, the numbers mean nothing"
fi

# part KEY NAME LIMIT_SECONDS OUTFILE COMMAND...: unless KEY is left out of $PARTS, run with a time
# limit, output to OUTFILE and the log
PARTS=" ${PARTS:-env embed train table2 table34} "
part() {
  local key=$1 name=$2 limit=$3 file=$4; shift 4
  if [[ "$PARTS" != *" $key "* ]]; then SUMMARY+=("| $name | skipped | 0 | - |"); return; fi
  local t0=$(date +%s)
  echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S): $*"
  timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$file"
  local rc=${PIPESTATUS[0]}
  local secs=$(( $(date +%s) - t0 ))
  local status=ok
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status="TIMED OUT"; elif [ "$rc" != 0 ]; then status="FAILED rc=$rc"; fi
  echo "=== $name: $status in ${secs}s"
  SUMMARY+=("| $name | $status | $secs | $(basename "$file") |")
}

if [ $SMOKE = 0 ]; then
  FRAMES=3072; NULL_FRAMES=1536; DECODE_FRAMES=512; BATCH=64; NULL_WORKERS=1,2,4,8,15; TRAIN_ARGS=(--frames 50)  # the default Nordland world: a 200-frame training stretch, most of its database negative to a query
  MODEL_ARGS=(); LIM_EMBED=170; LIM_TRAIN=125; LIM_T2=70; LIM_T34=90
  CACHES=/tmp; [ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2 {print $4}')" -gt 8000000 ] && CACHES=/tmp,/dev/shm
else
  FRAMES=4; NULL_FRAMES=16; DECODE_FRAMES=16; BATCH=2; NULL_WORKERS=1,2; TRAIN_ARGS=(--frames 6 --epochs 1 --queries-per-epoch 2 --batch 8)
  MODEL_ARGS=(--repeats 1 --warmup 0 --lengths 1); LIM_EMBED=1200; LIM_TRAIN=900; LIM_T2=2400; LIM_T34=2400; CACHES=/tmp
fi

part env env 30 "$OUT/env.txt" bash -c "nvidia-smi 2>&1 || echo 'nvidia-smi: not available'; \
  \"$PY\" -c 'import torch, numpy, sys, os, platform; print(\"python\", sys.version.split()[0], \"| torch\", torch.__version__, \"| cuda\", torch.version.cuda, \"| cudnn\", torch.backends.cudnn.version(), \"| numpy\", numpy.__version__, \"|\", os.cpu_count(), \"cores |\", platform.platform()); print(\"device:\", torch.cuda.get_device_name() if torch.cuda.is_available() else \"cpu\")'; \
  \"$PY\" -c 'import faiss, utm, cv2; print(\"faiss\", faiss.__version__, \"| utm ok | opencv\", cv2.__version__)'; \
  df -h /tmp /dev/shm 2>/dev/null; free -g 2>/dev/null"

EMBED=$OUT/embed.jsonl
part embed "embed: stage vs bare model(x)" $LIM_EMBED "$OUT/embed.log" bash -c "\
  \"$PY\" benchmarks/bench_embed_shards.py stage --device $DEVICE --frames $FRAMES --batch $BATCH --precisions fp32,bf16 \
     --formats tif,npy --cache-roots $CACHES --jsonl $EMBED && \
  \"$PY\" benchmarks/bench_embed_shards.py null --device $DEVICE --frames $NULL_FRAMES --batch $BATCH --workers $NULL_WORKERS \
     --formats tif,png,npy --rounds 1 --jsonl $EMBED && \
  \"$PY\" benchmarks/bench_embed_shards.py decode --frames $DECODE_FRAMES --jsonl $EMBED"

part train "train: 2 epochs, freeze_te 1" $LIM_TRAIN "$OUT/train.log" \
  "$PY" benchmarks/train_check.py --device $DEVICE --freeze-te 1 --epochs 2 "${TRAIN_ARGS[@]}"

part table2 "bench_models table 2" $LIM_T2 "$OUT/models.md" \
  "$PY" benchmarks/bench_models.py --table 2 --device $DEVICE "${MODEL_ARGS[@]}"

part table34 "bench_models tables 3-4" $LIM_T34 "$OUT/models.md" \
  "$PY" benchmarks/bench_models.py --table 3-4 --device $DEVICE "${MODEL_ARGS[@]}"

# the summary, last: each part's status, then the embedding figures
{
  echo
  echo "## gpu.sh summary ($(date -u +%Y-%m-%dT%H:%MZ), $(( $(date +%s) - START ))s in all, device $DEVICE)"
  echo
  echo "| part | status | seconds | file |"
  echo "|---|---|---|---|"
  printf '%s\n' "${SUMMARY[@]}"
  echo
  if [ -s "$EMBED" ]; then
    "$PY" - "$EMBED" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("| embedding | precision | format | workers | cache | bare model(x) frames/s | stage frames/s | stage / bare |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    if r["mode"] == "stage":
        print(f"| stage | {r['precision']} | {r['format']} ({r['frame_kb']} KB) | {r['workers']} | {r['cache']} | {r['bare_fps']} | {r['stage_fps']} | {r['ratio']} |")
for r in rows:
    if r["mode"] == "null":
        print(f"| null model | - | {r['format']} | {r['workers']} | {r['cache']} | - | {r['fps']} | - |")
for r in rows:
    if r["mode"] == "decode":
        print(f"| decode, one core | - | {r['format']} ({r['kb']} KB) | - | - | - | {r['fps_one_core']} | - |")
null = [r for r in rows if r["mode"] == "null" and "per_core_fps" in r]
if null:  # CPU per frame of the null-model runs: what one core could carry
    print()
    print("| null model | format | workers | frames/s | main process CPU ms / frame | of it hashing | workers CPU ms / frame | frames/s per core |")
    print("|---|---|---|---|---|---|---|---|")
    for r in null:
        print(f"| null model | {r['format']} | {r['workers']} | {r['fps']} | {r['main_process_cpu_ms_per_frame']} | "
              f"{r['hash_cpu_ms_per_frame']} | {r['workers_cpu_ms_per_frame']} | {r['per_core_fps']} |")
shares = [r for r in rows if r["mode"] in ("stage", "null") and "time_shares" in r]
if shares:  # where the stage's wall time went (bench_embed_shards.time_shares): what bounds it
    keys = list(shares[0]["time_shares"])
    print()
    print("| where the stage's time went (share of its wall time) | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for r in shares:
        what = f"{r['mode']} {r.get('precision', '-')} {r['format']} w{r['workers']} {r['cache']}"
        print(f"| {what} | " + " | ".join(str(r["time_shares"][k]) for k in keys) + " |")
    print()
    print("main thread: hash, start, wait_batch (decoding bounds), launch, wait_device (the model bounds), "
          "wait_writer (the writers bound), finish, main_other; writer_busy sums 2 writer threads; "
          "main_thread_cpu is the main thread's CPU time over the wall time")
EOF
  fi
  grep -h "untrained val R@5\|stage seconds" "$OUT/train.log" 2>/dev/null
} | tee "$OUT/summary.md"
