#!/usr/bin/env bash
# A GPU check of gan-rl, run on a lent NVIDIA H200 (benchmarks/results/gpu-check/): model.dtype auto on a
# CUDA device (issue 16) and discriminator.kind adapter (issue 17) through quickstart runs of ppo and
# reinforce, then tests/utils/test_hardware.py and the adapter unit tests. The image there had torch,
# transformers and accelerate; the wheels of what it lacked (trl, datasets, dill, multiprocess, peft) were
# carried in .whl/ (pip download --no-deps; see the device README). Writes logs and summaries into $OUT.
set -u
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import sys, torch, transformers, accelerate, peft, trl, datasets, pyarrow; print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'peft', peft.__version__, 'trl', trl.__version__, 'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__)" || exit 1
python3 - <<'PY'
from gan_rl.utils.hardware import describe_machine, resolve_precision
print(describe_machine())
for full in (False, True):
    print("auto, full_weights", full, "->", resolve_precision("auto", full_weights=full))
print("explicit bfloat16 ->", resolve_precision("bfloat16"))
print("auto, use_cpu ->", resolve_precision("auto", use_cpu=True))
PY
run() {  # name, then gan-rl arguments
  local name=$1; shift
  local start=$(date +%s)
  python3 -m gan_rl "$@" --output-dir /tmp/$name > $OUT/$name.log 2>&1
  local rc=$?
  echo "== $name: rc $rc, $(( $(date +%s) - start )) s"
  tail -25 $OUT/$name.log
  [ -f /tmp/$name/run_summary.json ] && cp /tmp/$name/run_summary.json $OUT/$name.summary.json
}
ADAPTER=(--set discriminator.kind=adapter --set discriminator.d_model=256 --set discriminator.num_layers=2 --set discriminator.num_heads=4 --set discriminator.loss=bradley_terry)
LORA=(--set "model.lora={r: 8, alpha: 16, dropout: 0.0}")
run q-full ppo recipes/quickstart.yaml --set trainer.max_steps=200 --samples 4
run q-lora ppo recipes/quickstart.yaml --set trainer.max_steps=200 --samples 4 "${LORA[@]}"
run q-adapter ppo recipes/quickstart.yaml --set trainer.max_steps=200 --samples 4 "${LORA[@]}" "${ADAPTER[@]}"
run q-adapter-reinforce reinforce recipes/quickstart.yaml --set trainer.max_steps=50 --samples 2 "${LORA[@]}" "${ADAPTER[@]}"
python3 -m pytest -q -p no:cacheprovider tests/utils/test_hardware.py tests/discriminator/test_adapter_discriminator.py -k "not ppo" 2>&1 | tail -5
python3 - <<'PY'
import json, glob, os
for f in sorted(glob.glob(os.environ["OUT"] + "/*.summary.json")):
    s = json.load(open(f))
    print(os.path.basename(f), {k: s.get(k) for k in ("steps", "seconds", "dtype", "dtype_reason", "disc_rounds", "disc_skipped_rounds", "reward_first", "reward_last", "status")})
PY
