"""U-Net dock: predict only the part of the image on screen ("Predict visible region").

For a large (often lazy) volume the user pans to an area and asks for the
model's answer there, without waiting for the whole volume. The region is the
screen's rectangle in the image's data coordinates on the plane shown (a 3D
model also gets half its patch depth of planes on each side); the values equal
the whole-volume prediction in that region
(:func:`~napari_seglab.batch.stores.predict_region_events`). Results go into one
``"<image> U-Net (visible)"`` Labels layer the size of the image, backed by a
zarr store in the cache folder (``predictions/visible-*.zarr``): each region
predicted fills in more of it, and nothing else of the image is read.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..batch.stores import spatial_shape, visible_region

SUFFIX = " U-Net (visible)"


def screen_region(viewer, image_layer, model, slicewise: bool) -> tuple[slice, ...]:
    """The spatial slices of ``image_layer``'s data on screen (see :func:`visible_region`).

    Raises
    ------
    ValueError
        In a 3D view (no single rectangle is on screen), or when the screen
        shows no part of the image.
    """
    if viewer.dims.ndisplay != 2:
        raise ValueError("Expected a 2D view to predict the visible region; switch to 2D.")
    height, width = (float(n) for n in viewer.canvas.size)
    zoom = float(viewer.camera.zoom)
    centre = np.asarray(viewer.camera.center, dtype=float)[-2:]
    half = np.array([height, width]) / (2.0 * zoom)
    displayed = list(viewer.dims.displayed)
    corners = []
    for sign_row, sign_col in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
        point = np.asarray(viewer.dims.point, dtype=float).copy()
        point[displayed[0]] = centre[0] + sign_row * half[0]
        point[displayed[1]] = centre[1] + sign_col * half[1]
        corners.append(np.asarray(image_layer.world_to_data(point), dtype=float))
    corners = np.asarray(corners)
    data_shape = tuple(
        image_layer.data[0].shape if image_layer.multiscale else image_layer.data.shape
    )
    if image_layer.rgb:
        data_shape = data_shape[:-1]
    elif model.channel_axis is not None:
        axis = model.channel_axis % len(data_shape)
        corners = np.delete(corners, axis, axis=1)
        data_shape = data_shape[:axis] + data_shape[axis + 1 :]
    plane = tuple(int(np.rint(v)) for v in corners[0, :-2])
    depth = None
    if model.spatial_dims == 3 and not slicewise:
        depth = (int(model.patch_size[0]),)
    return visible_region(data_shape, corners[:, -2:], plane, depth)


def region_labels(viewer, image_layer, model, image) -> tuple[object, bool]:
    """The labels array regions go into, and whether its layer must still be added.

    Reuses the ``"<image> U-Net (visible)"`` layer when it has the image's
    spatial shape; else creates a zarr array of that shape (chunks of 64,
    nothing written until a region is) under the cache folder.
    """
    import zarr

    from ..cache import cache_dir

    shape = spatial_shape(model, image.shape)
    name = f"{image_layer.name}{SUFFIX}"
    if name in viewer.layers and tuple(viewer.layers[name].data.shape) == shape:
        return viewer.layers[name].data, False
    folder = Path(cache_dir("predictions"))
    folder.mkdir(parents=True, exist_ok=True)
    store = Path(tempfile.mkdtemp(prefix="visible-", suffix=".zarr", dir=folder))
    values = np.asarray(model.classes)
    labels = zarr.open_array(
        str(store),
        mode="w",
        shape=shape,
        chunks=tuple(min(n, 64) for n in shape),
        dtype=np.min_scalar_type(int(values.max())),
        fill_value=0,
    )
    return labels, True


def predict_visible(dock) -> None:
    """Run "Predict visible region" for the U-Net ``dock`` (a ``UNetWidget``).

    The region is taken when the button is pressed; the job writes it into the
    region layer's array when it finished (a cancelled job writes nothing), and
    the layer is added or refreshed on the GUI thread.
    """
    from ..batch.stores import predict_region_events
    from ._layers import notify_error
    from .unet_parts import module_family, source_geometry

    inputs = dock._prediction_inputs("U-Net prediction of the visible region")
    if inputs is None:
        return
    if module_family(dock.model.family):
        error = ValueError(
            f"Predict visible region works for per-pixel families; the {dock.model.family!r} "
            "model predicts whole planes: use Predict."
        )
        return notify_error(error, "U-Net prediction of the visible region")
    image_layer, image, predict_kwargs = inputs
    model, viewer = dock.model, dock.viewer
    try:
        region = screen_region(viewer, image_layer, model, predict_kwargs["slicewise"])
        labels, new = region_labels(viewer, image_layer, model, image)
    except ValueError as exc:
        notify_error(exc, "U-Net prediction of the visible region")
        dock.status.setText(f"Failed: {exc}")
        return
    name = f"{image_layer.name}{SUFFIX}"

    def show(done: tuple[slice, ...]) -> None:
        if new or name not in viewer.layers:
            geometry = source_geometry(image_layer, labels.ndim, model.channel_axis)
            viewer.add_labels(labels, name=name, **geometry)
        else:
            viewer.layers[name].refresh()
        where = ", ".join(f"{part.start}:{part.stop}" for part in done)
        dock.status.setText(f"Region [{where}] predicted into {name!r}.")

    dock._start(
        "Predicting the visible region…",
        predict_region_events,
        model,
        image,
        region,
        labels,
        what="U-Net prediction of the visible region",
        on_returned=show,
        progress={"total": 0, "desc": "U-Net visible region"},
        **predict_kwargs,
    )
