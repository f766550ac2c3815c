"""Grid search that chose the CRF defaults documented in ``docs/crf.md``.

Scores every parameter combination on four tasks built from the synthetic
samples (:func:`napari_seglab.data.nuclei_2d` and ``nuclei_3d``): refining
degraded probabilities and refining SAM-like grown instance masks, in 2D and
in 3D with anisotropic voxels. The score is the mean boundary F-score
(tolerance 1 physical unit: one pixel in 2D, two in-plane pixels in the 3D stack)
over the tasks.

Run: ``python docs/scripts/tune_crf_defaults.py`` (about two minutes).
"""

from __future__ import annotations

import itertools

import numpy as np

from napari_seglab import crf, data, metrics


def tasks():
    """(name, image, spacing, kind, input, truth) for the four tasks."""
    s2 = data.nuclei_2d()
    s3 = data.nuclei_3d(shape=(24, 96, 96), n_objects=8)
    out = []
    for name, s, blur, shift, grow in (
        ("2d", s2, 2.0, (2, 2), 3.0),
        ("3d", s3, 1.5, (0, 3, 3), 1.5),
    ):
        probs = data.degrade_probabilities(s.labels, spacing=s.spacing, blur=blur, shift=shift)
        blob = data.blobby_labels(s.labels, grow=grow, spacing=s.spacing)
        out.append((f"{name} probabilities", s.image, s.spacing, "probs", probs, s.labels))
        out.append((f"{name} grown masks", s.image, s.spacing, "labels", blob, s.labels))
    return out


def score(task, **params) -> float:
    """Boundary F-score of one refinement (tolerance 1 physical unit)."""
    _, image, spacing, kind, given, truth = task
    if kind == "probs":
        result = crf.refine(image, given, spacing=spacing, **params)
    else:
        result = crf.refine_labels(image, given, spacing=spacing, **params)
    return metrics.boundary_f_score(result, truth, spacing=spacing, tolerance=1.0)


def main() -> None:
    all_tasks = tasks()
    grid = {
        "spatial_voxels": (2.0, 3.0, 5.0, 8.0),
        "intensity_sigma": (0.05, 0.1, 0.2),
        "bilateral_weight": (3.0, 5.0, 10.0, 20.0),
        "smoothness_weight": (0.0, 3.0),
    }
    rows = []
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values))
        scores = []
        for task in all_tasks:
            finest = min(task[2])
            scores.append(
                score(
                    task,
                    spatial_sigma=setting["spatial_voxels"] * finest,
                    intensity_sigma=setting["intensity_sigma"],
                    bilateral_weight=setting["bilateral_weight"],
                    smoothness_weight=setting["smoothness_weight"],
                )
            )
        rows.append((float(np.mean(scores)), setting, scores))
        print(f"{np.mean(scores):.3f} {setting} {np.round(scores, 3).tolist()}", flush=True)
    rows.sort(key=lambda r: -r[0])
    print("\nbest ten (mean boundary F-score; per task:", [t[0] for t in all_tasks], ")")
    for mean, setting, scores in rows[:10]:
        print(f"{mean:.3f} {setting} {np.round(scores, 3).tolist()}")
    base = [
        metrics.boundary_f_score(
            t[4].argmax(0) if t[3] == "probs" else t[4], t[5], spacing=t[2], tolerance=1.0
        )
        for t in all_tasks
    ]
    print(f"before refinement: {np.round(base, 3).tolist()}")


if __name__ == "__main__":
    main()
