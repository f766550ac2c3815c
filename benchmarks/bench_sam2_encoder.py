"""SAM 2 image encoder on the CPU: ours against SAM2ImagePredictor and against SAM ViT-B.

One 512×512 plane, random weights of the real architectures (no weights can be
downloaded here; speed does not depend on the values):

* ours: ``PromptSegmenter(Hiera tiny).set_image`` (normalisation to uint8 RGB,
  hashing, official SAM 2 preprocessing, ``forward_image``, caching) against
  the official ``SAM2ImagePredictor.set_image`` on the same network and plane
  (target <= 1.1);
* the same ours against ``segment_anything.SamPredictor.set_image`` with ViT-B
  (target <= 0.25: the lighter encoder is the point of SAM 2 on a CPU).

Calls alternate between the two sides, so load from other processes hits both
alike; medians of a few runs, in wall-clock and in process CPU time.
``--quick``: 256-px encoder input and the tiny SAM, 256×256 plane (smoke run).

    python benchmarks/bench_sam2_encoder.py [--quick]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import arguments, report


def alternate(ours, reference, repeats: int) -> tuple[float, float, float, float]:
    """Medians of ``ours()`` and ``reference()``, call by call in turn (order flips).

    Returns wall-clock seconds of ours and reference, then process CPU seconds of
    each (all threads): CPU time is far less inflated than wall time when other
    jobs compete for the cores.
    """
    wall: tuple[list[float], list[float]] = ([], [])
    cpu: tuple[list[float], list[float]] = ([], [])
    for round_ in range(repeats):
        pairs = [(ours, 0), (reference, 1)]
        for fn, side in pairs if round_ % 2 == 0 else pairs[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[side].append(time.perf_counter() - start)
            cpu[side].append(time.process_time() - start_cpu)
    return (
        statistics.median(wall[0]),
        statistics.median(wall[1]),
        statistics.median(cpu[0]),
        statistics.median(cpu[1]),
    )


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    import torch
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    from segment_anything import SamPredictor

    from napari_seglab.data import nuclei_2d
    from napari_seglab.sam import EmbeddingCache, PromptSegmenter, SamInput, build_tiny_sam
    from napari_seglab.sam.sam2_model import build_sam2_model

    quick = args.quick
    size = 256 if quick else 512
    model = build_sam2_model(image_size=256 if quick else None, seed=0)
    sam_arch = "tiny" if quick else "vit_b"
    print(
        f"# SAM 2 {model.name} at {model.img_size} px vs SAM {sam_arch} (random weights), "
        f"plane {size}x{size}, torch threads {torch.get_num_threads()}",
        flush=True,
    )
    image = nuclei_2d((size, size), n_objects=30, seed=0).image
    rgb = SamInput(image).plane()

    official = SAM2ImagePredictor(model.net)
    grid = model.img_size // 4
    official._bb_feat_sizes = [(grid, grid), (grid // 2, grid // 2), (grid // 4, grid // 4)]

    def ours() -> None:
        PromptSegmenter(model, EmbeddingCache(max_items=1)).set_image(image)

    ours()  # first calls (allocations, lazy imports) hit neither side
    official.set_image(rgb)
    repeats = 5 if quick else 3
    ours_s, official_s, ours_cpu, official_cpu = alternate(
        ours, lambda: official.set_image(rgb), repeats
    )
    report(
        "sam2 encoder, hiera_t vs SAM2ImagePredictor.set_image",
        ours_s,
        official_s,
        target=1.10,
        note="ours includes normalisation, hashing and caching",
    )
    report("  same, process CPU time", ours_cpu, official_cpu, target=1.10)

    sam = build_tiny_sam(architecture=sam_arch, seed=0, device="cpu")
    sam_official = SamPredictor(sam.sam)
    sam_official.set_image(rgb)
    ours_s, vit_b_s, ours_cpu, vit_b_cpu = alternate(
        ours, lambda: sam_official.set_image(rgb), repeats
    )
    target = None if quick else 0.25
    report(
        f"sam2 encoder, hiera_t vs SAM {sam_arch} SamPredictor.set_image",
        ours_s,
        vit_b_s,
        target=target,
    )
    report("  same, process CPU time", ours_cpu, vit_b_cpu, target=target)


if __name__ == "__main__":
    main()
