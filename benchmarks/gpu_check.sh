#!/usr/bin/env bash
# GPU checks for a lent accelerator machine (run from the repository root).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # every part
#   ONLY=ct,sam2 bash benchmarks/gpu_check.sh OUT    # some parts
#
# Expects the project's dependencies importable (on the device machine: wheels
# unpacked into /tmp/site by the caller, PYTHONPATH set). Parts, each with a
# time limit so one slow part cannot eat the lease:
#   tests  the device tests (tests/core/test_device.py) on CUDA;
#   train  U-Net: a few epochs of `seglab train` on CUDA (AMP) and on the CPU;
#   batch  `seglab batch predict` with a two-worker LocalCluster, CUDA vs CPU result;
#   ct     one CT-sized item (128, 512, 512) through batch predict, CUDA and CPU seconds;
#   unet   bench_unet.py --quick (includes the CUDA autocast-vs-fp32 check);
#   sam    bench_sam.py --quick (encoder and click times, CUDA precompute);
#   sam2   SAM 2 propagation timing on CUDA, fp32 and bf16 autocast (when sam2 imports);
#   maskrcnn  Mask R-CNN (small backbone) trained and predicted on CUDA (autocast).
set -uo pipefail
OUT_DIR=${1:-gpu-check-output}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SEGLAB_CACHE_DIR="$OUT_DIR/cache"
seglab() { "$PY" -m napari_seglab.cli "$@"; }
step() { echo; echo "=== $* ($(date +%T))"; }
want() { [ -z "${ONLY:-}" ] || [[ ",$ONLY," == *",$1,"* ]]; }

step environment
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

if want tests; then
  step device tests
  timeout 60 "$PY" -m pytest -q -p no:cacheprovider tests/core/test_device.py 2>&1 | tail -5
fi

W="$OUT_DIR/work"; mkdir -p "$W"
seglab sample 3d -o "$W" >/dev/null
IMG=$(ls "$W"/*image*.tif | head -1); LAB=$(ls "$W"/*label*.tif | head -1)
if want train; then devices="cuda cpu"; else devices="cuda"; fi
if want train || want batch || want ct; then
  step training "($devices)"
  for dev in $devices; do
    TIMEFORMAT="train $dev: %R s wall"
    time timeout 150 "$PY" -m napari_seglab.cli train "$IMG" "$LAB" -o "$W/model-$dev.pt" --epochs 4 --binary --device "$dev" 2>&1 | tail -2
  done
fi

if want batch; then
  step batch predict on cuda and cpu
  cp "$IMG" "$W/a.tif"; cp "$IMG" "$W/b.tif"
  for dev in cuda cpu; do
    TIMEFORMAT="batch $dev: %R s wall"
    time timeout 150 "$PY" -m napari_seglab.cli batch predict "$W/model-cuda.pt" "$W/a.tif" "$W/b.tif" \
      -o "$W/batch-$dev" --workers 2 --device "$dev" 2>&1 | tail -1
  done
  "$PY" - "$W" <<'PYEOF'
import pathlib, sys
import numpy as np, tifffile
w = pathlib.Path(sys.argv[1])
for name in ("a", "b"):
    found = {d: sorted((w / f"batch-{d}").rglob(f"{name}*labels*.tif")) for d in ("cuda", "cpu")}
    if not all(found.values()):
        print("missing outputs:", {d: [p.name for p in f] for d, f in found.items()})
        continue
    a, b = (tifffile.imread(found[d][0]) for d in ("cuda", "cpu"))
    print(f"{name}: cuda vs cpu labels agree on {np.mean(a == b):.5f} of {a.size} voxels")
PYEOF
fi

if want ct; then
  step "one CT-sized item (128, 512, 512): batch predict, 1 worker"
  mkdir -p "$W/big"
  "$PY" -c "import numpy as np, tifffile; r = np.random.default_rng(0); tifffile.imwrite('$W/big/ct.tif', r.integers(0, 4000, (128, 512, 512), dtype=np.uint16))"
  for dev in cuda cpu; do
    timeout 200 "$PY" -m napari_seglab.cli batch predict "$W/model-cuda.pt" "$W/big/ct.tif" \
      -o "$W/big-$dev" --workers 1 --device "$dev" >/dev/null 2>&1
    "$PY" -c "import csv, sys; row = next(csv.DictReader(open(sys.argv[1]))); print('$dev:', row['status'], row['seconds'], 's')" "$W/big-$dev/report.csv" 2>&1 | tail -1
  done
fi

if want unet; then
  step bench_unet --quick
  timeout 150 "$PY" benchmarks/bench_unet.py --quick 2>&1 | tail -12
fi

if want sam; then
  step bench_sam --quick
  timeout 120 "$PY" benchmarks/bench_sam.py --quick 2>&1 | tail -12
fi

if want sam2 && "$PY" -c "import sam2" 2>/dev/null; then
  step SAM 2 propagation on CUDA, 32 planes at 1024, fp32 then bf16 autocast
  timeout 150 "$PY" benchmarks/bench_sam2_propagate.py --device cuda --planes 32 --part timing 2>&1 | tail -8
  timeout 150 "$PY" benchmarks/bench_sam2_propagate.py --device cuda --planes 32 --part timing --autocast bf16 2>&1 | tail -8
fi
if want maskrcnn; then
  step "Mask R-CNN (small backbone) on CUDA: train 2 epochs, predict the 2D sample"
  seglab sample 2d -o "$W/2d" >/dev/null
  I2=$(ls "$W"/2d/*image*.tif | head -1); L2=$(ls "$W"/2d/*label*.tif | head -1)
  TIMEFORMAT="maskrcnn train cuda: %R s wall"
  time timeout 150 "$PY" -m napari_seglab.cli train "$I2" "$L2" -o "$W/maskrcnn.pt" \
    --family maskrcnn --encoder small --epochs 2 --device cuda 2>&1 | tail -2
  TIMEFORMAT="maskrcnn predict cuda: %R s wall"
  time timeout 100 "$PY" -m napari_seglab.cli predict "$W/maskrcnn.pt" "$I2" \
    -o "$W/maskrcnn_objects.tif" --device cuda 2>&1 | tail -2
  "$PY" -c "import sys, numpy as np, tifffile; a = tifffile.imread(sys.argv[1]); print('objects predicted:', len(np.unique(a)) - 1, 'of', len(np.unique(tifffile.imread(sys.argv[2]))) - 1)" "$W/maskrcnn_objects.tif" "$L2"
fi
step done
