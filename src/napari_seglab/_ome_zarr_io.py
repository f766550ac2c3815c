"""npe2 reader contribution for OME-Zarr images (the batch outputs among them).

A thin adapter over :func:`napari_seglab.batch.omezarr.ome_zarr_layers`: an
OME-Zarr folder opens as multiscale layers whose data are dask arrays over the
stored chunks (nothing is read until napari draws it), with ``scale`` and
``translate`` from the full-resolution level's ``coordinateTransformations``;
a Labels layer when the image carries ``image-label`` metadata (and one per
label image in its ``labels/`` group), an Image layer otherwise. Imports
neither napari nor Qt.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]


def get_ome_zarr_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """The OME-Zarr reader when every path is a zarr group with ``multiscales``, else ``None``."""
    from .batch.omezarr import is_ome_zarr

    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not paths or not all(is_ome_zarr(p) for p in paths):
        return None
    return read_ome_zarr_layers


def read_ome_zarr_layers(path: PathOrPaths) -> list[LayerData]:
    """Lazy multiscale layers of each OME-Zarr image at ``path``."""
    from .batch.omezarr import ome_zarr_layers

    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    return [layer for p in paths for layer in ome_zarr_layers(p)]
