#!/usr/bin/env bash
# GPU checks for a lent accelerator machine (run from the repository root).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#
# Expects the project's dependencies importable (on the device machine: wheels
# unpacked into /tmp/site by the caller, PYTHONPATH set). Runs, each with a time
# limit so one slow part cannot eat the lease:
#   1. the device tests (tests/core/test_device.py) on CUDA;
#   2. U-Net: train a few epochs on CUDA (AMP) and on the CPU, and the CUDA
#      autocast-vs-fp32 prediction check of bench_unet.py --quick;
#   3. batch predict on CUDA with a two-worker LocalCluster, against the CPU result;
#   4. SAM: bench_sam.py --quick (encoder and click times, CUDA section);
#   5. SAM 2 propagation with bf16 autocast, when sam2 is importable.
set -uo pipefail
OUT_DIR=${1:-gpu-check-output}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SEGLAB_CACHE_DIR="$OUT_DIR/cache"
seglab() { "$PY" -m napari_seglab.cli "$@"; }
step() { echo; echo "=== $* ($(date +%T))"; }

step environment
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

step device tests
timeout 60 "$PY" -m pytest -q -p no:cacheprovider tests/core/test_device.py 2>&1 | tail -5

W="$OUT_DIR/work"; mkdir -p "$W"
step sample and training
seglab sample 3d -o "$W" >/dev/null && ls "$W"
IMG=$(ls "$W"/*image*.tif | head -1); LAB=$(ls "$W"/*label*.tif | head -1)
for dev in cuda cpu; do
  TIMEFORMAT="train $dev: %R s wall"
  time timeout 150 "$PY" -m napari_seglab.cli train "$IMG" "$LAB" -o "$W/model-$dev.pt" --epochs 4 --binary --device "$dev" 2>&1 | tail -2
done

step batch predict on cuda and cpu
cp "$IMG" "$W/a.tif"; cp "$IMG" "$W/b.tif"
for dev in cuda cpu; do
  TIMEFORMAT="batch $dev: %R s wall"
  time timeout 150 "$PY" -m napari_seglab.cli batch predict \
    "$W/model-cuda.pt" "$W/a.tif" "$W/b.tif" -o "$W/batch-$dev" --workers 2 --device "$dev" 2>&1 | tail -3
done
"$PY" - "$W" <<'PYEOF'
import sys, pathlib, numpy as np, tifffile
w = pathlib.Path(sys.argv[1])
for name in ("a", "b"):
    found = {d: sorted((w / f"batch-{d}").rglob(f"{name}*labels*.tif")) for d in ("cuda", "cpu")}
    if not all(found.values()):
        print("outputs:", {d: [p.name for p in (w / f"batch-{d}").rglob('*')][:8] for d in found})
        continue
    a, b = (tifffile.imread(found[d][0]) for d in ("cuda", "cpu"))
    print(f"{name}: cuda vs cpu labels agree on {np.mean(a == b):.5f} of {a.size} voxels")
PYEOF

step "one CT-sized item (128, 512, 512): batch predict, 1 worker"
"$PY" -c "import numpy as np, tifffile; r=np.random.default_rng(0); tifffile.imwrite('$W/big/ct.tif', r.integers(0, 4000, (128, 512, 512), dtype=np.uint16))" 2>/dev/null \
  || { mkdir -p "$W/big" && "$PY" -c "import numpy as np, tifffile; r=np.random.default_rng(0); tifffile.imwrite('$W/big/ct.tif', r.integers(0, 4000, (128, 512, 512), dtype=np.uint16))"; }
for dev in cuda cpu; do
  timeout 200 "$PY" -m napari_seglab.cli batch predict "$W/model-cuda.pt" "$W/big/ct.tif" \
    -o "$W/big-$dev" --workers 1 --device "$dev" >/dev/null 2>&1
  "$PY" -c "import csv,sys; rows=list(csv.DictReader(open(sys.argv[1]))); print('$dev', {k: rows[0][k] for k in rows[0] if k in ('status','seconds','device')})" "$W/big-$dev/report.csv" 2>&1 | tail -1
done

step bench_unet --quick
timeout 150 "$PY" benchmarks/bench_unet.py --quick 2>&1 | tail -12

step bench_sam --quick
timeout 120 "$PY" benchmarks/bench_sam.py --quick 2>&1 | tail -12

if "$PY" -c "import sam2" 2>/dev/null && [ -f benchmarks/bench_sam2_propagate.py ]; then
  step SAM 2 propagation bf16
  timeout 300 "$PY" benchmarks/bench_sam2_propagate.py --device cuda --autocast bf16 2>&1 | tail -15
fi
step done
