"""OME-Zarr outputs: multiscale images and label images, written atomically and streamed.

:func:`write_ome_zarr` writes a numpy or dask array as an OME-Zarr image
(NGFF 0.5 through the ``ome-zarr`` library: ``multiscales`` metadata with a
``scale`` and a ``translation`` per level) with a resolution pyramid, so napari
opens it lazily at the resolution on screen. Label images are downsampled by
taking every second voxel (the values are ids: never averaged, so a coarser
level holds no id the full one lacks); images by the mean of 2x2(x2) voxels.
Dask arrays are written chunk by chunk (never computed whole), each level
computed from the source; pass arrays backed by storage (zarr, not a long
graph) for speed.

The store is written into a temporary folder beside the target and renamed
into place (:func:`~.atomic.atomic_dir`): an interrupted write leaves no
folder under the target's name.

:func:`read_ome_zarr` reads one back (lazily as dask arrays by default), and
:func:`ome_zarr_layers` turns it into napari layer data for the plugin's reader.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_dir

__all__ = [
    "OmeZarrImage",
    "default_axes",
    "is_ome_zarr",
    "ome_zarr_layers",
    "read_ome_zarr",
    "write_ome_zarr",
]

#: Smallest spatial size a pyramid level is allowed to reach along every axis.
MIN_LEVEL_SIZE = 32
#: Most levels :func:`write_ome_zarr` makes by default.
MAX_LEVELS = 6
_SPATIAL = ("z", "y", "x")


def default_axes(ndim: int, *, channels: bool = False) -> tuple[str, ...]:
    """Axis names for an ``ndim``-D array: ``("y","x")``, ``("z","y","x")``, ``("c",...)``.

    ``channels`` puts a ``"c"`` axis first (probabilities ``(C, *spatial)``).
    """
    spatial = ndim - (1 if channels else 0)
    if spatial not in (2, 3):
        raise ValueError(
            f"Expected 2 or 3 spatial axes, got an array of {ndim} axes"
            f"{' with a channel axis' if channels else ''}; pass axes=."
        )
    names = _SPATIAL[-spatial:]
    return ("c", *names) if channels else names


def _levels_for(shape: Sequence[int], spatial: Sequence[bool]) -> int:
    sizes = [s for s, sp in zip(shape, spatial) if sp]
    levels = 1
    while levels < MAX_LEVELS and min(sizes) // 2**levels >= MIN_LEVEL_SIZE:
        levels += 1
    return levels


def _downsample(level: Any, spatial: Sequence[bool], labels: bool) -> Any:
    """One pyramid step: every second voxel (labels) or the mean of 2 per axis (images)."""
    import dask.array as da

    if labels:
        return level[tuple(slice(None, None, 2) if sp else slice(None) for sp in spatial)]
    factors = {i: 2 for i, sp in enumerate(spatial) if sp and level.shape[i] >= 2}
    mean = da.coarsen(np.mean, level.astype(np.float32), factors, trim_excess=True)
    if np.issubdtype(level.dtype, np.integer):
        mean = da.round(mean).astype(level.dtype)
    return mean.astype(level.dtype)


def write_ome_zarr(
    data: Any,
    path: str | os.PathLike,
    *,
    spacing: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    axes: Sequence[str] | None = None,
    kind: str = "image",
    pyramid_levels: int | None = None,
    chunks: Sequence[int] | None = None,
    name: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``data`` as an OME-Zarr multiscale image or label image at ``path``.

    Parameters
    ----------
    data : numpy or dask array
        ``(Y, X)``, ``(Z, Y, X)``, or with a leading channel axis (name it
        ``"c"`` in ``axes``), e.g. probabilities ``(C, Z, Y, X)``.
    path : path-like
        The store folder to create (``*.ome.zarr`` by convention).
    spacing : sequence of float, optional
        Voxel size per axis of ``data`` (1 for a channel axis); default 1.
        Per spatial axis only (without the channel axis) is accepted too.
    origin : sequence of float, optional
        Position of voxel 0 (napari ``translate``), same rules; default 0.
    axes : sequence of str, optional
        Axis names among ``"c", "t", "z", "y", "x"``; default
        :func:`default_axes` (a 4D array gets a leading ``"c"``).
    kind : {"image", "labels"}
        ``"labels"``: integer ids, downsampled by every second voxel; the root
        carries ``image-label`` metadata so readers show it as labels.
    pyramid_levels : int, optional
        Levels including the full resolution (1: no pyramid). Default: halve
        until the smallest spatial axis would fall under :data:`MIN_LEVEL_SIZE`,
        at most :data:`MAX_LEVELS`.
    chunks : sequence of int, optional
        Chunk shape on disk per axis of ``data`` (default 64 per spatial axis,
        1 along channels).
    name : str, optional
        Name stored in the metadata (default: the folder's stem).
    overwrite : bool
        Replace an existing store (atomically); False raises ``FileExistsError``.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        Unknown kind, non-integer labels, axes/spacing/origin of the wrong length.
    """
    import dask
    import dask.array as da
    import zarr
    from ome_zarr.format import CurrentFormat

    with warnings.catch_warnings():  # ome-zarr 0.18 warns about its own Scaler on import
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import add_metadata, write_multiscale

    if kind not in ("image", "labels"):
        raise ValueError(f"Unknown kind {kind!r}: expected 'image' or 'labels'.")
    ndim = len(data.shape)
    axes = tuple(axes) if axes is not None else default_axes(ndim, channels=ndim == 4)
    if len(axes) != ndim:
        raise ValueError(f"Expected {ndim} axis names for data of shape {data.shape}, got {axes}.")
    is_spatial = [a in _SPATIAL for a in axes]
    if kind == "labels" and not (np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_):
        raise ValueError(f"Expected integer label ids for kind='labels', got dtype {data.dtype}.")
    scale = _per_axis(spacing, is_spatial, 1.0, "spacing")
    shift = _per_axis(origin, is_spatial, 0.0, "origin")
    chunks = tuple(int(c) for c in (chunks or [64 if sp else 1 for sp in is_spatial]))
    chunks = tuple(min(c, int(s)) for c, s in zip(chunks, data.shape))
    levels = pyramid_levels or _levels_for(data.shape, is_spatial)
    level = data if isinstance(data, da.Array) else da.from_array(data, chunks=chunks)
    pyramid, transforms = [], []
    for k in range(int(levels)):
        if k:
            if any(level.shape[i] < 2 for i, sp in enumerate(is_spatial) if sp):
                break
            level = _downsample(level, is_spatial, kind == "labels")
        factor = 2**k
        pyramid.append(level)
        step = [s * factor if sp else s for s, sp in zip(scale, is_spatial)]
        centre = 0.0 if kind == "labels" else (factor - 1) / 2
        move = [o + centre * s if sp else o for o, s, sp in zip(shift, scale, is_spatial)]
        transforms.append(
            [{"type": "scale", "scale": step}, {"type": "translation", "translation": move}]
        )
    fmt = CurrentFormat()
    with atomic_dir(path, overwrite=overwrite) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=fmt.zarr_format)
        with warnings.catch_warnings(), dask.config.set(scheduler="synchronous"):
            warnings.simplefilter("ignore", DeprecationWarning)  # coordinate_transformations
            write_multiscale(
                pyramid,
                group,
                fmt=fmt,
                axes=list(axes),
                coordinate_transformations=transforms,
                storage_options=[{"chunks": chunks}] * len(pyramid),
                name=name or Path(path).name.split(".")[0],
            )
        if kind == "labels":
            add_metadata(group, {"image-label": {"version": fmt.version}}, fmt=fmt)
    return Path(path)


def _per_axis(values, is_spatial, default: float, what: str) -> list[float]:
    n, spatial = len(is_spatial), sum(is_spatial)
    if values is None:
        return [default] * n
    values = [float(v) for v in values]
    if len(values) == n:
        return values
    if len(values) == spatial:
        it = iter(values)
        return [next(it) if sp else default for sp in is_spatial]
    raise ValueError(f"Expected {n} or {spatial} {what} values, got {values}.")


@dataclass(frozen=True)
class OmeZarrImage:
    """An OME-Zarr multiscale image as stored.

    Attributes
    ----------
    levels : list of array
        Full resolution first; dask arrays (lazy) or numpy arrays.
    axes : tuple of str
        Axis names (``"c"``, ``"z"``, ``"y"``, ``"x"``...).
    scales, translations : list of tuple of float
        Per level, per axis (napari ``scale`` / ``translate``).
    kind : {"image", "labels"}
        ``"labels"`` when the group carries ``image-label`` metadata.
    path : Path
    labels : list of str
        Names of label images stored in the image's ``labels/`` group.
    """

    levels: list[Any]
    axes: tuple[str, ...]
    scales: list[tuple[float, ...]]
    translations: list[tuple[float, ...]]
    kind: str
    path: Path
    labels: list[str] = field(default_factory=list)

    @property
    def data(self) -> Any:
        """The full-resolution level."""
        return self.levels[0]

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size of the full-resolution level, per axis."""
        return self.scales[0]

    @property
    def origin(self) -> tuple[float, ...]:
        """Position of voxel 0 of the full-resolution level, per axis."""
        return self.translations[0]


def _ome_attrs(group: Any) -> dict:
    attrs = dict(group.attrs)
    return dict(attrs.get("ome", attrs))


def is_ome_zarr(path: str | os.PathLike) -> bool:
    """True when ``path`` is a zarr group with OME ``multiscales`` metadata."""
    path = Path(path)
    if not path.is_dir() or not any(
        (path / n).is_file() for n in ("zarr.json", ".zattrs", ".zgroup")
    ):
        return False
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception:  # zarr raises various errors for other folders
        return False
    return bool(_ome_attrs(group).get("multiscales"))


def read_ome_zarr(path: str | os.PathLike, *, lazy: bool = True) -> OmeZarrImage:
    """Read an OME-Zarr image (NGFF 0.4 or 0.5): every level with its scale and translation.

    Parameters
    ----------
    path : path-like
        The image group (the folder holding ``multiscales`` metadata).
    lazy : bool
        Dask arrays over the stored chunks (nothing read until computed);
        False loads every level into numpy arrays.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not a zarr group with ``multiscales`` metadata.
    """
    import dask.array as da
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"OME-Zarr image not found: {str(path)!r} does not exist.")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise ValueError(
            f"expected an OME-Zarr image, could not open {str(path)!r} as a zarr group "
            f"({type(exc).__name__}: {exc})."
        ) from None
    attrs = _ome_attrs(group)
    if not attrs.get("multiscales"):
        raise ValueError(
            f"expected an OME-Zarr image in {str(path)!r}: no 'multiscales' metadata."
        )
    multiscale = attrs["multiscales"][0]
    names = tuple(a["name"] if isinstance(a, dict) else str(a) for a in multiscale.get("axes", []))
    levels, scales, translations = [], [], []
    for dataset in multiscale["datasets"]:
        array = group[dataset["path"]]
        ndim = len(array.shape)
        scale, move = (1.0,) * ndim, (0.0,) * ndim
        for transform in dataset.get("coordinateTransformations", []):
            if transform.get("type") == "scale":
                scale = tuple(float(s) for s in transform["scale"])
            elif transform.get("type") == "translation":
                move = tuple(float(t) for t in transform["translation"])
        levels.append(da.from_zarr(array) if lazy else np.asarray(array[...]))
        scales.append(scale)
        translations.append(move)
    labels = []
    if "labels" in group:
        labels = list(_ome_attrs(group["labels"]).get("labels", []))
    kind = "labels" if "image-label" in attrs else "image"
    axes = names or default_axes(len(levels[0].shape))
    return OmeZarrImage(levels, axes, scales, translations, kind, path, labels)


def ome_zarr_layers(path: str | os.PathLike) -> list[tuple[Any, dict, str]]:
    """napari layer data for an OME-Zarr image: multiscale, lazy, with its geometry.

    The image is a Labels layer when it carries ``image-label`` metadata, an
    Image layer otherwise (a ``"c"`` axis becomes napari's ``channel_axis``);
    each label image in its ``labels/`` group is one more Labels layer.
    Every layer's data is the list of dask arrays of its levels.
    """
    image = read_ome_zarr(path)
    layers = [_layer(image, Path(path).name.split(".")[0])]
    for label in image.labels:
        layers.append(_layer(read_ome_zarr(Path(path) / "labels" / label), label))
    return layers


def _layer(image: OmeZarrImage, name: str) -> tuple[Any, dict, str]:
    kwargs: dict[str, Any] = {"name": name, "multiscale": len(image.levels) > 1}
    scale, translate = list(image.spacing), list(image.origin)
    if "c" in image.axes and image.kind == "image":
        axis = image.axes.index("c")
        kwargs["channel_axis"] = axis
        del scale[axis], translate[axis]
    kwargs["scale"], kwargs["translate"] = scale, translate
    kwargs["metadata"] = {"ome_zarr": {"path": str(image.path), "axes": list(image.axes)}}
    data = image.levels if len(image.levels) > 1 else image.levels[0]
    return data, kwargs, "labels" if image.kind == "labels" else "image"
