"""The batch dock's form (magicgui) and the core objects it stands for.

The form maps to a :class:`~napari_seglab.batch.predict.PredictPipeline`
(model, CRF, instances, output format), a list of
:class:`~napari_seglab.batch.pipeline.BatchItem` (an input folder and an
optional file pattern) and the run's options (output folder, workers, a
scheduler address).
"""

from __future__ import annotations

import os
from pathlib import Path

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, LineEdit, SpinBox

__all__ = ["FROM_FILE", "FROM_VIEWER", "BatchForm"]

FROM_VIEWER = "Model trained or loaded in this viewer"
FROM_FILE = "Model file"
FORMATS = ("same", "tif", "nii.gz", "npy", "ome-zarr")


class BatchForm(Container):
    """Model, inputs, outputs and cluster of a batch prediction run.

    Attributes
    ----------
    source, model_file, inputs, pattern, output, crf, instances, output_format,
    workers, scheduler : magicgui widgets
    """

    def __init__(self) -> None:
        cpus = os.cpu_count() or 1
        self.source = ComboBox(label="Model", choices=[FROM_VIEWER, FROM_FILE], value=FROM_VIEWER)
        self.model_file = FileEdit(label="Model file", mode="r", filter="Model (*.pt *.pth)")
        self.inputs = FileEdit(label="Input folder", mode="d")
        self.pattern = LineEdit(label="Files", value="")
        self.pattern.tooltip = "A glob inside the input folder, e.g. *.nii.gz (empty: every image)"
        self.output = FileEdit(label="Output folder", mode="d")
        self.crf = CheckBox(text="CRF refinement", value=False)
        self.instances = ComboBox(
            label="Objects", choices=["none", "connected", "watershed"], value="none"
        )
        self.output_format = ComboBox(label="Format", choices=list(FORMATS), value="same")
        self.output_format.tooltip = "same: the input's format (NIfTI keeps its geometry)"
        self.workers = SpinBox(label="Workers", min=1, max=max(cpus, 1), value=min(2, cpus))
        self.scheduler = LineEdit(label="Scheduler", value="")
        self.scheduler.tooltip = (
            "Address of a running dask scheduler (tcp://host:8786); empty: a local cluster"
        )
        super().__init__(
            widgets=[
                self.source,
                self.model_file,
                self.inputs,
                self.pattern,
                self.output,
                self.crf,
                self.instances,
                self.output_format,
                self.workers,
                self.scheduler,
            ],
            labels=True,
        )
        self.source.changed.connect(self._source_changed)
        self._source_changed()

    def _source_changed(self, *_) -> None:
        self.model_file.visible = self.source.value == FROM_FILE

    # -------------------------------------------------------------- core side
    def pipeline(self, viewer_model):
        """The prediction pipeline the form describes.

        Parameters
        ----------
        viewer_model : SegmentationModel or None
            The model trained or loaded in the viewer.

        Raises
        ------
        ValueError
            No model, or a setting the pipeline refuses.
        """
        from ..batch.predict import PredictPipeline

        if self.source.value == FROM_FILE:
            path = Path(self.model_file.value)
            if not path.is_file():
                raise ValueError(f"Expected a model file (.pt), got {str(path)!r}.")
            model = path
        else:
            if viewer_model is None:
                raise ValueError(
                    "Expected a model: train or load one in the U-Net widget, "
                    "or choose 'Model file'."
                )
            model = viewer_model
        return PredictPipeline(
            model,
            crf=self.crf.value,
            instances=self.instances.value,
            output_format=self.output_format.value,
        )

    def items(self):
        """The inputs: the images of the input folder (matching the pattern).

        Raises
        ------
        ValueError, FileNotFoundError
            No folder, or no image in it.
        """
        from ..batch.inputs import collect_items

        folder = Path(self.inputs.value)
        if not folder.is_dir() or str(self.inputs.value) in ("", "."):
            raise ValueError(f"Expected an input folder, got {str(folder)!r}.")
        pattern = self.pattern.value.strip()
        return collect_items([str(folder / pattern) if pattern else folder], what="input")

    def output_dir(self) -> Path:
        """The output folder, refused when it is (or is inside) the input folder.

        Outputs there would be taken as inputs by the next run.
        """
        output = Path(self.output.value).expanduser()
        if str(self.output.value) in ("", "."):
            raise ValueError("Expected an output folder, got none.")
        folder = Path(self.inputs.value).expanduser().resolve()
        resolved = output.resolve()
        if resolved == folder or folder in resolved.parents:
            raise ValueError(
                f"Expected an output folder outside the input folder, got {str(output)!r}: "
                "outputs there would be read as inputs by the next run."
            )
        return output

    def cluster(self) -> dict:
        """``workers`` and ``scheduler`` keywords of the run."""
        address = self.scheduler.value.strip()
        return {"workers": self.workers.value, "scheduler": address or None}
