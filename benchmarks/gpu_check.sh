#!/usr/bin/env bash
# The GPU check: on a machine with one CUDA GPU, in under 8 minutes, prints one JSON with
#   - ResNet-18 (CIFAR stem) BYOL throughput in bf16, with and without torch.compile,
#   - the aggregate throughput of 1, 2 and 4 trials sharing the GPU (--gpus-per-trial 1, 0.5, 0.25)
#     and the peak device memory of each trial,
#   - a 16-trial ASHA sweep of the `default` space shortened to a few epochs, end to end with its report.
# Usage: bash benchmarks/gpu_check.sh [CIFAR-10 ImageFolder tree]   (default: the shared tarball, extracted)
# Where no GPU is present it stops at once, saying so, with exit status 2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU is visible to torch here (torch.cuda.is_available() is False); run it on a GPU machine" >&2
  exit 2
fi

TREE=${1:-/tmp/cifar10-jpeg}
if [ ! -d "$TREE/train" ]; then
  TARBALL=${CIFAR_TARBALL:-../shared/data/cifar10-jpeg.tar.gz}
  if [ ! -f "$TARBALL" ]; then
    echo "gpu_check: no CIFAR-10 ImageFolder tree at $TREE and no $TARBALL to extract; pass a tree" >&2
    exit 2
  fi
  mkdir -p "$TREE" && tar -xzf "$TARBALL" -C "$TREE"
fi
OUT=$(mktemp -d)
bench() { $PY benchmarks/throughput.py --backbone resnet18_cifar --data "$TREE/train" --batch-size 512 \
            --precision bf16 --no-lightly --steps 30 --warmup 5 "$@"; }

bench > "$OUT/eager.json"
bench --compile --warmup 10 > "$OUT/compiled.json"
for n in 1 2 4; do  # n trials sharing the GPU, as --gpus-per-trial 1/n places them
  for i in $(seq 1 "$n"); do bench --seed "$i" > "$OUT/share${n}_$i.json" & done
  wait
done

SWEEP="$OUT/sweep"
mkdir -p "$SWEEP"
# the shipped `default` space, shortened: 6 epochs, ASHA rungs at 1 and 3, the shared tree, a 2-seed final stage
$PY - "$TREE" "$SWEEP/gpu-check.yaml" <<'PYEOF'
import sys, yaml
from sweep.space import resolve_space_path
space = yaml.safe_load(resolve_space_path("default").read_text())
space["name"] = "gpu-check"
space["base"].update(dataset=f"imagefolder:{sys.argv[1]}", warmup_epochs=1, knn_bank_size=5000, knn_queries=2000)
space["num_samples"] = 16
space["asha"] = {"grace_period": 1, "reduction_factor": 3, "max_epochs": 6}
space["base"]["epochs"] = 6
space["final"] = {"top_k": 1, "seeds": 2}
open(sys.argv[2], "w").write(yaml.safe_dump(space))
PYEOF
start=$(date +%s)
(cd "$SWEEP" && timeout 420 byol-sweep run gpu-check.yaml --name gpu-check --gpus-per-trial 0.25 \
   >"$OUT/sweep.log" 2>&1 || true)
sweep_s=$(( $(date +%s) - start ))

$PY - "$OUT" "$sweep_s" "$TREE" <<'PYEOF'
import json, sys
from pathlib import Path
out, sweep_s, tree = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
load = lambda name: json.loads((out / name).read_text())
eager, compiled = load("eager.json"), load("compiled.json")
sharing = {}
for n in (1, 2, 4):
    runs = [load(f"share{n}_{i}.json") for i in range(1, n + 1)]
    sharing[f"{n}_trials"] = {"gpus_per_trial": 1 / n,
                              "aggregate_images_per_s": round(sum(r["byol_sweep"]["images_per_s"] for r in runs), 1),
                              "peak_device_mb_per_trial": max(r["peak_device_mb"] for r in runs)}
log = (out / "sweep.log").read_text()
report = next((line.split(": ", 1)[1] for line in log.splitlines() if line.startswith("report written")), None)
print(json.dumps({
    "gpu": eager["gpu"], "torch": eager["torch"],
    "resnet18_cifar_bf16_images_per_s": {"eager": eager["byol_sweep"]["images_per_s"],
                                         "compiled": compiled["byol_sweep"]["images_per_s"]},
    "sharing": sharing,
    "sweep_16_trials_asha": {"wall_s": sweep_s, "report": report,
                             "finished": "finished" in log and report is not None},
}, indent=2))
PYEOF
