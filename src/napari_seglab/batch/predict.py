"""The ``predict`` pipeline: a saved U-Net model applied to every input.

Per input ``NAME`` it writes ``NAME_labels.EXT`` (most probable class per
pixel), and on request ``NAME_probabilities.EXT`` (``(C, *spatial)``
float32) and ``NAME_instances.EXT`` (objects numbered from 1), each
atomically. ``EXT`` follows ``output_format``: ``"same"`` keeps the input's
format where it can be written (NIfTI ``.nii.gz``/``.nii``, ``.tif``,
``.npy``; NIfTI keeps the source geometry, TIFF the spacing), writes a
DICOM series as ``.nii.gz`` on its geometry, and ``.tif`` for the others
(zarr, pictures); ``"tif"``, ``"nii.gz"``,
``"npy"`` force one; ``"ome-zarr"`` writes ``NAME_labels.ome.zarr`` with a
multiscale pyramid (:mod:`.omezarr`).

Models of an instance or panoptic family (Mask R-CNN, Mask2Former) always
write ``NAME_instances`` and are predicted whole (:mod:`.predict_family`).

An input is predicted whole, in memory, with
:func:`napari_seglab.unet.predict_and_split` (the same call as
``seglab predict`` and the widget, so the labels are identical), followed by
the dense CRF (:func:`napari_seglab.crf.refine`) when ``crf``. An input whose
prediction would need more than ``memory_budget`` bytes is predicted block
by block (:mod:`.blockwise`) into zarr arrays, and the CRF then runs block by
block too (:mod:`.crf_blocks`); both paths give the CRF blocks of the same size
(:func:`.crf_blocks.crf_block_voxels` of the budget).

The model file's bytes travel inside the pipeline object, so workers on
other machines need no copy of the file; each worker process builds the
network once (:meth:`PredictPipeline.load`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .pipeline import BatchItem, ItemOutcome

__all__ = ["OUTPUTS", "OUTPUT_FORMATS", "PredictPipeline", "parse_bytes"]

#: Values of ``output_format``.
OUTPUT_FORMATS = ("same", "tif", "nii.gz", "npy", "ome-zarr")
#: Values of ``outputs``.
OUTPUTS = ("labels", "probabilities")
#: Bytes per voxel of whole-volume prediction, per class (probabilities, blending).
_BYTES_PER_VOXEL_CLASS = 12
_BYTES_PER_VOXEL = 16


def parse_bytes(value: int | str | None) -> int | None:
    """``"2GB"``, ``"512MiB"``, ``1e9`` or None (no budget) as a number of bytes."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        from dask.utils import parse_bytes as parse

        try:
            return int(parse(value))
        except (ValueError, KeyError):
            raise ValueError(f"memory budget: expected e.g. '2GB', got {value!r}") from None
    if value <= 0:
        raise ValueError(f"memory budget: expected a positive number of bytes, got {value}")
    return int(value)


def _model_bytes(model: Any) -> tuple[bytes, str]:
    """The bytes of a saved model (a path, bytes, or a ``SegmentationModel`` saved now)."""
    if isinstance(model, (bytes, bytearray)):
        return bytes(model), "model"
    if isinstance(model, (str, os.PathLike)):
        path = Path(model).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {str(path)!r}")
        return path.read_bytes(), path.name
    if hasattr(model, "save") and hasattr(model, "network"):
        with tempfile.TemporaryDirectory() as folder:
            path = model.save(Path(folder) / "model.pt")
            return Path(path).read_bytes(), "model"
    raise TypeError(
        "model: expected a model file, its bytes or a SegmentationModel, "
        f"got {type(model).__name__}"
    )


class PredictPipeline:
    """U-Net prediction of every item (see the module docstring).

    Parameters
    ----------
    model : path-like, bytes or SegmentationModel
        A model file written by ``seglab train`` / ``SegmentationModel.save``.
        It is checked here (``SegmentationModel.load``), before any work.
    outputs : sequence of {"labels", "probabilities"}
        What to write per item.
    crf : bool
        Refine the probabilities with a dense CRF before taking labels.
    instances : {"none", "connected", "watershed"}
        Also write objects (``NAME_instances``), split from the labels.
    device : str
        ``"auto"`` (one GPU per worker where there are several), ``"cpu"``, ``"cuda"``...
    output_format : {"same", "tif", "nii.gz", "npy", "ome-zarr"}
    memory_budget : int, str or None
        Bytes one whole-volume prediction may use (``"4GB"``); larger inputs
        go block by block. None: always whole.
    overlap, tta, batch_size :
        As :func:`napari_seglab.unet.predict`.
    """

    name = "predict"

    def __init__(
        self,
        model: Any,
        *,
        outputs: tuple[str, ...] | list[str] = ("labels",),
        crf: bool = False,
        instances: str = "none",
        device: str = "auto",
        output_format: str = "same",
        memory_budget: int | str | None = None,
        overlap: float = 0.5,
        tta: bool = False,
        batch_size: int | None = None,
    ):
        from ..unet.postprocess import INSTANCE_METHODS

        self.model_bytes, self.model_name = _model_bytes(model)
        self.outputs = tuple(dict.fromkeys(outputs))
        unknown = [o for o in self.outputs if o not in OUTPUTS]
        if unknown or not self.outputs:
            raise ValueError(f"outputs: expected some of {OUTPUTS}, got {list(outputs)}")
        if instances not in INSTANCE_METHODS:
            raise ValueError(f"instances: expected one of {INSTANCE_METHODS}, got {instances!r}")
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(
                f"output format: expected one of {OUTPUT_FORMATS}, got {output_format!r}"
            )
        if not 0.0 <= float(overlap) < 1.0:
            raise ValueError(f"overlap: expected 0 <= overlap < 1, got {overlap}")
        self.crf = bool(crf)
        self.instances = instances
        self.device = str(device)
        self.output_format = output_format
        self.memory_budget = parse_bytes(memory_budget)
        self.overlap = float(overlap)
        self.tta = bool(tta)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.model_sha256 = hashlib.sha256(self.model_bytes).hexdigest()
        self._check_model()

    def _check_model(self) -> None:
        from .predict_family import check_family_settings, family_kind

        model = self.load(device="cpu")
        self.classes = [int(c) for c in model.classes]
        self.family_kind = family_kind(model)
        check_family_settings(
            model.architecture,
            self.family_kind,
            crf=self.crf,
            instances=self.instances,
            memory_budget=self.memory_budget,
            tta=self.tta,
        )

    # ------------------------------------------------------------- the contract
    def settings(self) -> dict[str, Any]:
        """Settings that change the outputs (device and memory budget do not)."""
        return {
            "model_sha256": self.model_sha256,
            "outputs": list(self.outputs),
            "crf": self.crf,
            "instances": self.instances,
            "output_format": self.output_format,
            "overlap": self.overlap,
            "tta": self.tta,
        }

    def fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of :meth:`settings`, which include the model's hash."""
        text = json.dumps({"pipeline": self.name, **self.settings()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def suffix_for(self, item: BatchItem) -> str:
        """The output suffix for ``item`` (see ``output_format``)."""
        if self.output_format == "ome-zarr":
            return ".ome.zarr"
        if self.output_format != "same":
            return "." + self.output_format
        name = item.path.name.lower()
        if name.endswith(".nii.gz"):
            return ".nii.gz"
        for suffix in (".nii", ".npy"):
            if name.endswith(suffix):
                return suffix
        dicom_folder = item.path.is_dir() and not name.endswith(".zarr")
        if dicom_folder or name.endswith((".dcm", ".dicom", ".ima")):
            return ".nii.gz"  # keeps the series' geometry (as the sam pipeline does)
        return ".tif"

    def output_kinds(self) -> list[str]:
        """Outputs per item, in order: ``labels``, ``probabilities``, ``instances``."""
        from .predict_family import writes_instances

        kinds = list(self.outputs)
        if self.instances != "none" or writes_instances(getattr(self, "family_kind", None)):
            kinds.append("instances")
        return kinds

    def output_names(self, item: BatchItem) -> list[str]:
        """``NAME_labels.EXT`` (and ``_probabilities``, ``_instances``)."""
        suffix = self.suffix_for(item)
        return [f"{item.name}_{kind}{suffix}" for kind in self.output_kinds()]

    def load(self, device: str | None = None) -> Any:
        """The :class:`~napari_seglab.unet.SegmentationModel` from the shipped bytes."""
        from ..unet import SegmentationModel

        with tempfile.TemporaryDirectory(prefix="seglab-model-") as folder:
            path = Path(folder) / "model.pt"
            path.write_bytes(self.model_bytes)
            try:
                model = SegmentationModel.load(path, device="cpu")
            except ValueError as exc:
                raise ValueError(str(exc).replace(str(path), self.model_name)) from None
        if device is not None:
            model.network.to(device)
        return model

    def run_item(self, item: BatchItem, output_dir: Path, loaded: Any) -> ItemOutcome:
        """Read, predict (CRF, instances) and write one item's outputs."""
        from ..io import read_array
        from .engine import worker_device

        model = loaded
        device = worker_device(self.device)
        if self.memory_budget is not None or self.output_format == "ome-zarr":
            from .lazy import open_lazy

            source = open_lazy(item.path, what="input", layer_type="image")
        else:
            source = read_array(item.path, lazy=True, what="input")
        channel_axis = -1 if model.rgb else model.channel_axis
        n_spatial = len(source.shape) - (0 if channel_axis is None else 1)
        spacing = _spatial_spacing(source, n_spatial, channel_axis)
        over_budget = (
            self.memory_budget is not None
            and _whole_bytes(source.shape, len(model.classes)) > self.memory_budget
        )
        if over_budget or self.output_format == "ome-zarr":
            return self._run_large(item, output_dir, model, source, spacing, device, over_budget)
        image = np.asarray(source.data)
        arrays, used = self._predict(model, image, spacing, device)
        written = self._write(item, output_dir, arrays, source, spacing)
        return ItemOutcome(written, self._row(source, spacing, arrays, used, model))

    # ---------------------------------------------------------------- helpers
    def _predict(self, model, image, spacing, device) -> tuple[dict[str, np.ndarray], Any]:
        from ..unet import predict_and_split, to_instances
        from ..unet.postprocess import instance_spacing

        kwargs = {
            "spacing": spacing,
            "device": device,
            "overlap": self.overlap,
            "tta": self.tta,
            "batch_size": self.batch_size,
        }
        if not self.crf:
            result = predict_and_split(model, image, instances=self.instances, **kwargs)
            arrays = {"labels": result.labels, "probabilities": result.probabilities}
            if result.instances is not None:
                arrays["instances"] = result.instances
            return arrays, result.spacing
        from .. import crf

        result = predict_and_split(model, image, instances="none", **kwargs)
        from .crf_blocks import crf_block_voxels

        blocks = crf_block_voxels(self.memory_budget, len(model.classes))
        index = crf.refine(image, result.probabilities, spacing=spacing, max_block_voxels=blocks)
        classes = np.asarray(model.classes).astype(result.labels.dtype)
        arrays = {"labels": classes[index], "probabilities": result.probabilities}
        used = None
        if self.instances != "none":
            used = instance_spacing(model, arrays["labels"].ndim, spacing)
            arrays["instances"] = to_instances(
                arrays["labels"], method=self.instances, background=model.classes[0], spacing=used
            )
        return arrays, used

    def _write(self, item, output_dir, arrays, source, spacing) -> list[str]:
        from ..io import write_array
        from ..io.nifti import write_nifti

        written = []
        for kind, name in zip(self.output_kinds(), self.output_names(item)):
            data = arrays[kind]
            target = Path(output_dir) / name
            is_probabilities = kind == "probabilities"
            if name.endswith(".ome.zarr"):
                from .omezarr import write_ome_zarr

                spatial = ("z", "y", "x")[-(len(data.shape) - int(is_probabilities)) :]
                write_ome_zarr(
                    _as_dask(data),
                    target,
                    axes=("c", *spatial) if is_probabilities else spatial,
                    spacing=spacing,
                    origin=_origin(source, spacing),
                    kind="image" if is_probabilities else "labels",
                    name=f"{item.name}_{kind}",
                )
            elif name.lower().endswith((".nii", ".nii.gz")):
                data = np.asarray(data)
                if is_probabilities:
                    write_nifti(
                        target,
                        data,
                        spacing=None if spacing is None else (1.0, *spacing),
                        origin=None if source.origin is None else (0.0, *source.origin),
                        is_label=False,
                    )
                else:
                    same_grid = source.spacing is not None and len(source.spacing) == data.ndim
                    write_nifti(
                        target,
                        data,
                        spacing=source.spacing if same_grid else spacing,
                        origin=source.origin if same_grid else None,
                        metadata=source.metadata if same_grid else None,
                        is_label=True,
                    )
            else:
                data = np.asarray(data)
                channel_spacing = None
                if spacing is not None:
                    channel_spacing = (1.0, *spacing) if is_probabilities else tuple(spacing)
                write_array(target, data, spacing=channel_spacing, what=f"{kind} output")
            written.append(name)
        return written

    def _row(self, source, spacing, arrays, used, model) -> dict[str, Any]:
        labels = arrays["labels"]
        background = model.classes[0]
        present = [int(v) for v in np.unique(labels) if v != background]
        if "instances" in arrays:
            objects = int(len(np.unique(arrays["instances"])) - (arrays["instances"] == 0).any())
        else:
            from scipy import ndimage as ndi

            objects = int(ndi.label(labels != background)[1])
        return {
            "shape": list(source.shape),
            "spacing": None if spacing is None else [float(s) for s in spacing],
            "format": source.format,
            "classes": present,
            "objects": objects,
            "instance_spacing": None if used is None else [float(s) for s in used],
        }

    def _run_large(self, item, output_dir, model, source, spacing, device, over_budget):
        """OME-Zarr outputs, and inputs over the memory budget predicted block by block."""
        import dask

        try:
            from .blockwise import create_outputs, predict_blockwise
            from .omezarr import write_ome_zarr  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                f"{item.name}: blockwise prediction / OME-Zarr writing is not available in this "
                f"build ({exc}); choose another output format or no memory budget"
            ) from None
        if not over_budget:
            with dask.config.set(scheduler="synchronous"):
                image = np.asarray(source.data)
            arrays, used = self._predict(model, image, spacing, device)
            written = self._write(item, output_dir, arrays, source, spacing)
            return ItemOutcome(written, self._row(source, spacing, arrays, used, model))
        shape = _spatial_shape(source.shape, model)
        scratch = _scratch_dir(output_dir, item.name)
        kinds = self.output_kinds()
        if self.crf:
            kinds = list(dict.fromkeys(["probabilities", "labels", *kinds]))
        try:
            out = create_outputs(scratch / "blocks.zarr", model, shape, what=kinds)
            predicted = {"probabilities": out["probabilities"]} if self.crf else out
            with dask.config.set(scheduler="synchronous"):
                result = predict_blockwise(
                    model,
                    source.data,
                    predicted,
                    memory_budget=self.memory_budget,
                    instances="none" if self.crf else self.instances,
                    device=device,
                    overlap=self.overlap,
                    tta=self.tta,
                    batch_size=self.batch_size,
                )
                objects = result.objects
                if self.crf:
                    objects = self._refine_blocks(source, out, model, spacing, scratch)
                written = self._write(item, output_dir, out, source, spacing)
        finally:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
        row = {
            "shape": list(source.shape),
            "spacing": None if spacing is None else [float(s) for s in spacing],
            "format": source.format,
            "objects": objects,
            "blocks": int(result.blocks),
        }
        return ItemOutcome(written, row)

    def _refine_blocks(self, source, out, model, spacing, scratch) -> int | None:
        """The dense CRF (and the object split) over the blockwise probabilities."""
        from ..jobs import run_to_end
        from .crf_blocks import crf_block_voxels, refine_and_split_events

        return run_to_end(
            refine_and_split_events(
                source.data,
                out,
                model.classes,
                spacing=spacing,
                channel_axis=-1 if model.rgb else model.channel_axis,
                scratch=scratch,
                max_block_voxels=crf_block_voxels(self.memory_budget, len(model.classes)),
                instances=self.instances,
            )
        )


def _scratch_dir(output_dir: Path, name: str) -> Path:
    """A folder for the blocks of one prediction, named like :func:`.atomic.atomic_dir`'s.

    Scratch folders of killed workers on this host are removed first.
    """
    from ..checkpoints import TEMP_PREFIX, _host_tag
    from .atomic import clean_stale_dirs

    clean_stale_dirs(output_dir)
    prefix = f"{TEMP_PREFIX}{_host_tag()}-{os.getpid()}-"
    return Path(tempfile.mkdtemp(prefix=prefix, suffix=f"-blocks-{name}", dir=output_dir))


def _spatial_shape(shape: tuple[int, ...], model: Any) -> tuple[int, ...]:
    axis = -1 if model.rgb else model.channel_axis
    if axis is None:
        return tuple(int(n) for n in shape)
    axis %= len(shape)
    return tuple(int(n) for i, n in enumerate(shape) if i != axis)


def _as_dask(data: Any) -> Any:
    import dask.array as da

    return data if isinstance(data, da.Array) else da.from_array(data, chunks=_chunks(data))


def _chunks(data: Any) -> Any:
    chunks = getattr(data, "chunks", None)
    return chunks if isinstance(chunks, tuple) and chunks else "auto"


def _origin(source: Any, spacing: Any) -> Any:
    """The input's origin for the spatial axes (None when it has none per spatial axis)."""
    if source.origin is None or spacing is None or len(source.origin) != len(spacing):
        return None
    return tuple(float(o) for o in source.origin)


def _whole_bytes(shape: tuple[int, ...], classes: int) -> int:
    voxels = int(np.prod(shape, dtype=np.int64))
    return voxels * (_BYTES_PER_VOXEL + _BYTES_PER_VOXEL_CLASS * classes)


def _spatial_spacing(source: Any, n_spatial: int, channel_axis: int | None):
    """The file's spacing for the spatial axes, or None when it has no such value per axis."""
    stored = source.spacing
    if stored is None:
        return None
    stored = tuple(float(s) for s in stored)
    if channel_axis is not None and len(stored) == len(source.shape) == n_spatial + 1:
        axis = channel_axis % len(stored)
        stored = stored[:axis] + stored[axis + 1 :]
    return stored if len(stored) == n_spatial else None
