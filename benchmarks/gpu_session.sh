#!/usr/bin/env bash
# The next GPU session (issue "On the GPU", items 1-3), one device call per step, in priority order.
# Run ON THE DEVICE MACHINE from the repository root: `bash benchmarks/gpu_session.sh STEP`. Each step stays under
# the 10-minute call limit (every process runs under its own `timeout`), writes its JSON into $OUT as each case
# finishes (a call cut short still returns what it measured) and tees its log there.
#
# On your machine first (../shared/gpu/README.md):  ../shared/gpu/kit.sh core fa4 video tracking
#   and, only for step ds (optional): bash benchmarks/gpu_session.sh pack-deepspeed   (here, not on the device)
#
#   step         carry (the `run` tool's `carry`)                      device time   what it measures
#   fa4a         .gpu/fa4a .gpu/setup.sh                               ~1 s + start  FlashAttention-4, part 1
#   1            .gpu/fa4b .gpu/core .gpu/setup.sh  (within 30 s of fa4a) ~9.5 min   5B-I2V rows (plain / module,
#                                                                                    SDPA / flash4) + 5B full FSDP offload
#   2            .gpu/core .gpu/setup.sh            (same warm machine)  ~9.5 min   SAC rows for 5B, beside today's rows
#   3            .gpu/core .gpu/setup.sh            (same warm machine)  ~9.5 min   1.5-I2V rows + SAC rows for 1.5
#   video        .gpu/video .gpu/setup.sh                               ~1 s        av + decord for `workbench fit`
#   recipe-5b    .gpu/core .gpu/tracking .gpu/setup.sh (within 30 s)    ~8 min      5B-I2V recipe end to end
#   recipe-15    .gpu/core .gpu/tracking .gpu/setup.sh (warm, video in) ~9.5 min    1.5-I2V recipe end to end
#   ds           .gpu/core .gpu/deepspeed .gpu/setup.sh                  ~5 min      optional: 5B full, DeepSpeed ZeRO-2
#   miniature    .gpu/core .gpu/setup.sh          (after `video`)       ~9.5 min    the shapes miniature's transformer
#                retrained (issue "On the GPU", item 4), the shipped VAE kept; returns reports/ + miniature.tgz
#
# Measured (docs/performance.md): 1, 2, 3 and recipe-5b (2026-12-07/08). Left: recipe-15 (after `video`), ds.
# The flash4 steps need FlashAttention-4 installed on the machine (fa4a then 1 within 30 s; later steps on the same
# warm machine find it in /tmp/site). If the op workbench::flash4_attention misbehaves on the GPU, rerun a case with
# WORKBENCH_FLASH4_OP=0 (FA4's flash_attn_func directly, as before the op; SAC then recomputes attention).
set -uo pipefail
step=${1:?usage: gpu_session.sh STEP (fa4a 1 2 3 video recipe-5b recipe-15 ds miniature pack-deepspeed)}
cd "$(dirname "$0")/.."

if [ "$step" = pack-deepspeed ]; then  # on your machine: deepspeed (pure Python, ops left to JIT) and what it needs
  mkdir -p .gpu/deepspeed
  DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps --no-build-isolation -w .gpu/deepspeed deepspeed  # needs torch here
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
    -d .gpu/deepspeed hjson pydantic pydantic-core annotated-types typing-inspection
  du -sh .gpu/deepspeed; exit 0
fi

OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
SMOKE=${GPU_SESSION_SMOKE:-}  # 1: a CPU check of this script (every real_size.py case at toy size, no setup)
if [ -z "$SMOKE" ]; then
  bash .gpu/setup.sh
  if [ -d .gpu/deepspeed ]; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/deepspeed/*.whl 2>&1 | grep -v WARNING
  fi
  export PYTHONPATH="$(cat /tmp/site/.pythonpath):$PWD" PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
fi

# one real_size.py process: timeout SECONDS NAME ARGS...
rs() { local t=$1 name=$2; shift 2
  timeout "$t" python3 benchmarks/real_size.py --out "$OUT/$name.json" ${SMOKE:+--smoke} "$@" 2>&1 \
    | tee "$OUT/$name.log" | grep -v -e Warning -e '^W1' ; }

# the GPU's memory as nvidia-smi sees it, every 5 s, over a process's run (the host peak: host_peak_gib in the JSON)
# (started in the background, its pid in $m: no command substitution, which would wait for it)
gpumem() { if [ -n "$SMOKE" ]; then sleep 1000 > /dev/null 2>&1 & m=$!; return; fi
  nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader -l 5 > "$OUT/$1_gpu_memory.txt" 2>&1 & m=$!; }

case "$step" in
  fa4a) ;;  # setup.sh only: it keeps part 1 for the next call
  1)
    # 5B-I2V at 49 x 480 x 720 (~4.5 min), then the 5B full fine-tune with FSDP CPU offload in its own process
    rs 280 i2v_5b --max-steps 6 --only baseline_5b_i2v_lora_r128_ckpt,workbench_5b_i2v_lora_r128_ckpt75_compiled,workbench_5b_i2v_lora_r128_ckpt75_compiled_flash4,baseline_5b_i2v_lora_r128_ckpt_flash4
    gpumem full_offload
    rs 290 full_fsdp_offload --max-steps 4 --only workbench_5b_full_fsdp_offload_ckpt
    kill "$m"; free -g | tee "$OUT/host_memory_after.txt" ;;
  2)
    # 5B LoRA r128 at 49 x 480 x 720: the plain loop and today's rows again (same machine), then the SAC rows
    rs 580 sac_5b --max-steps 6 --only baseline_5b_lora_r128_ckpt,workbench_5b_lora_r128_ckpt_compiled_flash4,workbench_5b_lora_r128_sac_attn_compiled_flash4,workbench_5b_lora_r128_sac_attn_compiled_fp8_flash4,workbench_5b_lora_r128_ckpt_compiled,workbench_5b_lora_r128_sac_attn_compiled,workbench_5b_lora_r128_sac_attn_compiled_fp8,workbench_5b_lora_r128_sac_attnmm_compiled_fp8_flash4,workbench_5b_lora_r128_sac_attnmm_compiled ;;
  3)
    # 1.5 at 81 x 768 x 1360: SAC rows first (the goal's), then 1.5-I2V (plain / module, flash4 first)
    rs 300 sac_15 --max-steps 5 --only workbench_1.5_lora_r128_sac_attn_compiled_flash4,workbench_1.5_lora_r128_sac_attn_compiled_fp8_flash4,workbench_1.5_lora_r128_sac_attn_compiled
    rs 280 i2v_15 --max-steps 5 --only workbench_1.5_i2v_lora_r128_ckpt_compiled_flash4,baseline_1.5_i2v_lora_r128_ckpt,workbench_1.5_i2v_lora_r128_ckpt_compiled,baseline_1.5_i2v_lora_r128_ckpt_flash4 ;;
  video) ;;  # setup.sh only: av + decord into /tmp/site
  recipe-5b)
    gpumem recipe_5b_i2v
    timeout 580 python3 benchmarks/recipe_real_size.py --recipe recipes/cogvideox-5b-i2v-lora-a6000.yaml --steps 6 \
      --clips 4 --sample-steps 4 --cap-gib 48 --out "$OUT/recipe_cogvideox-5b-i2v-lora-a6000.json" 2>&1 \
      | tee "$OUT/recipe_5b_i2v.log" | tail -60
    kill "$m" ;;
  recipe-15)
    gpumem recipe_15_i2v
    timeout 585 python3 benchmarks/recipe_real_size.py --recipe recipes/cogvideox1.5-5b-i2v-lora-a6000.yaml --steps 2 \
      --clips 2 --sample-steps 2 --cap-gib 48 --out "$OUT/recipe_cogvideox1.5-5b-i2v-lora-a6000.json" 2>&1 \
      | tee "$OUT/recipe_15_i2v.log" | tail -60
    kill "$m" ;;
  ds)
    gpumem full_deepspeed
    rs 580 full_deepspeed_offload --max-steps 4 --only workbench_5b_full_deepspeed_zero2_offload_ckpt
    kill "$m" ;;
  miniature)
    # Only the transformer is retrained: the shipped VAE reconstructs shapes well enough (the oracle's shape
    # accuracy on its reconstructions: 83 %, workbench/shapes/weights/report.json), the shipped one was cut
    # at 105 s of its 4,000 steps. FIT_STEPS=N for another schedule.
    W=/tmp/shapes-build; mkdir -p "$W/vae"
    cp -r workbench/shapes/weights/miniature/vae/. "$W/vae/"
    timeout 560 python3 -m workbench.cli shapes make --out "$W" --stages data,init,fit,finalize,judge \
      --fit-steps "${FIT_STEPS:-4000}" --workers 16 2>&1 | tee "$OUT/miniature.log" | grep -v Warning | tail -40
    cp -r "$W/reports" "$OUT/" 2>/dev/null; [ -d "$W/miniature" ] && tar czf "$OUT/miniature.tgz" -C "$W" miniature ;;
  *) echo "unknown step $step"; exit 2 ;;
esac
ls -la "$OUT"
