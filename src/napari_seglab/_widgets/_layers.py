"""Helpers shared by the dock widgets: layer data in, undoable label writes out.

Everything that touches napari layers in a way more than one widget needs
lives here, so each widget module stays a thin shell over the core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.notifications import show_error, show_info, show_warning

__all__ = [
    "commit_object",
    "current_plane",
    "error_text",
    "fill_combo",
    "layer_geometry",
    "layer_spacing",
    "layers_of_type",
    "notify_error",
    "replace_labels",
    "show_info",
    "show_warning",
    "spatial_image",
    "start_job",
    "write_labels",
]


def layers_of_type(viewer, kind: type[Layer]) -> list[Layer]:
    """Layers of ``viewer`` that are instances of ``kind``, in layer-list order."""
    return [layer for layer in viewer.layers if isinstance(layer, kind)]


def fill_combo(combo, names: list[str], default: str | None = None) -> None:
    """Offer ``names`` in a QComboBox, keeping the current choice when it is still there.

    Otherwise ``default`` is selected when given and offered. No change signal is
    emitted while the list is rebuilt.
    """
    current = combo.currentText()
    combo.blockSignals(True)
    try:
        combo.clear()
        combo.addItems(names)
        if current in names:
            combo.setCurrentText(current)
        elif default is not None and default in names:
            combo.setCurrentText(default)
    finally:
        combo.blockSignals(False)


def layer_spacing(layer: Layer) -> tuple[float, ...]:
    """Physical spacing of the spatial axes of ``layer`` (its ``scale``, RGB axis excluded)."""
    return tuple(float(s) for s in layer.scale)


def layer_geometry(layer: Layer) -> dict[str, Any]:
    """Keyword arguments that place a new layer where ``layer`` is in the world.

    ``scale``, ``translate``, ``rotate``, ``shear`` and ``affine`` of ``layer``
    (its data-to-world transform), for ``viewer.add_labels(data, **geometry)``
    with data on the same grid as ``layer.data``.
    """
    return {
        "scale": np.array(layer.scale),
        "translate": np.array(layer.translate),
        "rotate": np.array(layer.rotate),
        "shear": np.array(layer.shear),
        "affine": np.array(layer.affine.affine_matrix),
    }


def error_text(exc: BaseException) -> str:
    """The message of ``exc`` for a status line; its type name when it has none."""
    return str(exc).strip() or type(exc).__name__


def spatial_image(layer: Image) -> tuple[np.ndarray, bool]:
    """Data of an image layer as a numpy array, and whether its last axis is RGB.

    Multiscale layers give their full-resolution level. Lazy arrays (dask,
    zarr) are kept lazy; callers slice planes before converting.
    """
    data = layer.data[0] if layer.multiscale else layer.data
    return data, bool(layer.rgb)


def current_plane(viewer, layer: Layer) -> int | None:
    """Index along axis 0 of ``layer`` of the plane the viewer shows, or None for 2D layers."""
    if layer.ndim < 3:
        return None
    world = np.asarray(viewer.dims.point)[-layer.ndim :]
    data_coords = layer.world_to_data(world)
    plane = int(np.round(data_coords[0]))
    return int(np.clip(plane, 0, layer.data.shape[0] - 1))


def write_labels(layer: Labels, indices: tuple[np.ndarray, ...], values: Any) -> None:
    """Write ``values`` at ``indices`` into ``layer`` as one undoable step (Ctrl+Z)."""
    if len(indices) == 0 or indices[0].size == 0:
        return
    with layer.block_history():
        layer.data_setitem(indices, values)


def replace_labels(layer: Labels, new_data: np.ndarray) -> int:
    """Replace the contents of ``layer`` by ``new_data`` as one undoable step.

    Only voxels that change are recorded, so undo costs memory proportional
    to the change, not to the volume. Returns the number of changed voxels.
    """
    new_data = np.asarray(new_data)
    if new_data.shape != layer.data.shape:
        raise ValueError(
            f"Expected labels of shape {layer.data.shape} for layer {layer.name!r}, "
            f"got {new_data.shape}."
        )
    indices = np.nonzero(np.asarray(layer.data) != new_data)
    write_labels(layer, indices, new_data[indices])
    return int(indices[0].size)


def commit_object(
    layer: Labels,
    mask: np.ndarray,
    *,
    offset: tuple[int, ...] | None = None,
    overwrite: bool = False,
) -> int:
    """Write ``mask`` into ``layer`` as a new object with id ``max + 1``; undoable.

    Parameters
    ----------
    layer : napari Labels layer
    mask : bool array
        Same shape as ``layer.data``, or a smaller block placed at ``offset``
        (for a plane of a stack: shape ``(1, Y, X)`` at ``(z, 0, 0)``).
    offset : tuple of int, optional
        Index of ``mask[0, ..., 0]`` in the layer.
    overwrite : bool
        If False (default) existing non-zero labels are kept.

    Returns
    -------
    int
        The new label id, or 0 when the mask added nothing.
    """
    mask = np.asarray(mask, dtype=bool)
    offset = offset or (0,) * mask.ndim
    if mask.ndim != layer.data.ndim:
        raise ValueError(
            f"Expected a mask with {layer.data.ndim} axes for layer {layer.name!r}, "
            f"got shape {mask.shape}."
        )
    region = tuple(slice(o, o + s) for o, s in zip(offset, mask.shape))
    if not overwrite:
        mask = mask & (np.asarray(layer.data[region]) == 0)
    local = np.nonzero(mask)
    if local[0].size == 0:
        return 0
    new_id = int(np.max(layer.data)) + 1
    indices = tuple(ix + o for ix, o in zip(local, offset))
    write_labels(layer, indices, new_id)
    return new_id


def notify_error(exc: BaseException, what: str = "") -> None:
    """Show a core error as a napari notification (no traceback dialog for expected errors)."""
    prefix = f"{what}: " if what else ""
    show_error(f"{prefix}{exc}")


def start_job(
    generator_function: Callable[..., Iterator[Any]],
    *args: Any,
    on_yielded: Callable[[Any], None] | None = None,
    on_returned: Callable[[Any], None] | None = None,
    on_errored: Callable[[BaseException], None] | None = None,
    on_finished: Callable[[], None] | None = None,
    progress: dict | None = None,
    **kwargs: Any,
):
    """Run a core generator in a napari worker thread and wire its signals.

    Parameters
    ----------
    generator_function : callable returning a generator
        A core function that yields progress events and returns its result.
    on_yielded, on_returned, on_errored, on_finished : callable, optional
        Called in the GUI thread with each event, the return value, an
        exception, or nothing.
    progress : dict, optional
        Passed to ``thread_worker(progress=...)``, e.g. ``{"total": n, "desc": "Predicting"}``,
        to show a napari progress bar.

    Returns
    -------
    napari.qt.threading.GeneratorWorker
        Already started; call ``.quit()`` to request cancellation.
    """
    from napari.qt.threading import thread_worker

    factory = thread_worker(
        _carrying_runtime_errors(generator_function), progress=progress or False
    )
    # Errors go to ``on_errored`` (a notification by default), not re-raised into
    # the Qt event loop as a traceback.
    kwargs.setdefault("_ignore_errors", True)
    worker = factory(*args, **kwargs)
    if on_yielded is not None:
        worker.yielded.connect(on_yielded)
    if on_returned is not None:
        worker.returned.connect(on_returned)
    handler = on_errored or notify_error
    worker.errored.connect(lambda exc: handler(exc.error if isinstance(exc, _Carried) else exc))
    if on_finished is not None:
        worker.finished.connect(on_finished)
    worker.start()
    return worker


class _Carried(Exception):
    """A ``RuntimeError`` (e.g. ``JobCancelled``) on its way out of a worker thread.

    superqt's generator workers take a ``RuntimeError`` for "the worker was
    deleted" and emit neither ``errored`` nor ``finished``, which would leave a
    widget busy forever; :func:`start_job` wraps it on the way out and hands
    the original to ``on_errored``.
    """

    def __init__(self, error: RuntimeError):
        super().__init__(str(error))
        self.error = error


def _carrying_runtime_errors(function: Callable[..., Any]) -> Callable[..., Iterator[Any]]:
    def run(*args: Any, **kwargs: Any):
        try:
            result = function(*args, **kwargs)
            if isinstance(result, Iterator):
                result = yield from result
            return result
        except RuntimeError as exc:
            raise _Carried(exc) from exc

    return run
