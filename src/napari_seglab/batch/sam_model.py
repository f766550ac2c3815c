"""Which SAM a batch pipeline uses, as a small picklable description.

A :class:`SamModelSpec` travels to every worker instead of the network: it
names a registered checkpoint (``"vit_b"``, ``"medsam"`` ...) or a local
``.pth`` file with the full model (any registered architecture, ``"tiny"``
included), plus an optional fine-tuned decoder file. Its identity (the
pinned hash of a registered file, the SHA-256 of a local one, and the
decoder's) is computed once on the client and goes into the pipeline's
settings, so a rerun with other weights redoes every item. Each worker
process builds the model once with :func:`napari_seglab.sam.load_model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..sam import SamModel

__all__ = ["SamModelSpec"]


@dataclass(frozen=True)
class SamModelSpec:
    """A SAM model to load on each worker.

    Build it with :meth:`resolve`, which checks the files and hashes them.

    Attributes
    ----------
    model : str
        A registered checkpoint name, or the absolute path of a ``.pth`` file.
    architecture : str
        The architecture the weights are built with (``"vit_b"``, ``"tiny"`` ...).
    model_hash : str
        ``"<algorithm>:<hex>"`` of the weights file.
    decoder : str or None
        Absolute path of a fine-tuned decoder file.
    decoder_hash : str or None
        ``"sha256:<hex>"`` of the decoder file.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` ... (resolved on each worker).
    download : bool
        Whether a worker may download a registered checkpoint it lacks.
    """

    model: str
    architecture: str
    model_hash: str
    decoder: str | None = None
    decoder_hash: str | None = None
    device: str = "auto"
    download: bool = True

    @classmethod
    def resolve(
        cls,
        model: str | Path,
        *,
        architecture: str | None = None,
        decoder: str | Path | None = None,
        device: str = "auto",
        download: bool = True,
    ) -> SamModelSpec:
        """Check ``model`` (and ``decoder``) and record their identity.

        Parameters
        ----------
        model : str or Path
            A registered name (``"vit_b"``, ``"vit_l"``, ``"vit_h"``, ``"medsam"``, or a
            SAM 2.1 name such as ``"sam2.1_hiera_tiny"``) or a ``.pth`` file holding a
            full SAM state dict (a SAM 2 ``.pt`` file needs ``architecture``).
        architecture : str, optional
            For a file: its architecture; default guessed from its weights (SAM only: for
            a SAM 2 file give its registered name or ``sam2`` config name).
        decoder : path, optional
            Fine-tuned decoder weights (see :func:`napari_seglab.sam.save_decoder`).
        device, download
            See the attributes.

        Raises
        ------
        FileNotFoundError
            ``model`` is neither registered nor an existing file, or the decoder is missing.
        ValueError
            An unknown architecture, or a file whose weights fit no registered one.
        """
        from ..sam.download import file_digest
        from ..sam.registry import CHECKPOINTS, get_architecture, get_checkpoint

        text = str(model)
        path = Path(text).expanduser()
        sam2 = _sam2_spec(text, path, architecture, decoder, device, download)
        if sam2 is not None:
            return sam2
        if not path.is_file():
            if any(sep in text for sep in ("/", "\\")) or text.lower().endswith((".pt", ".pth")):
                raise FileNotFoundError(f"SAM model file not found: {path}")
            try:
                spec = get_checkpoint(text)
            except ValueError:
                raise FileNotFoundError(
                    f"SAM model {text!r} is neither a registered checkpoint "
                    f"({', '.join(sorted(CHECKPOINTS))}) nor an existing .pth file."
                ) from None
            if architecture is not None and architecture != spec.architecture:
                raise ValueError(
                    f"The registered checkpoint {spec.name!r} is a {spec.architecture} model, "
                    f"not {architecture!r}."
                )
            name, arch, model_hash = spec.name, spec.architecture, spec.hash
        else:
            path = path.resolve()
            arch = architecture or _guess_architecture(path)
            get_architecture(arch)  # refuses unknown names
            name, model_hash = str(path), "sha256:" + file_digest(path)
        decoder_path = decoder_hash = None
        if decoder is not None:
            found = Path(decoder).expanduser()
            if not found.is_file():
                raise FileNotFoundError(f"SAM decoder file not found: {found}")
            decoder_path = str(found.resolve())
            decoder_hash = "sha256:" + file_digest(found)
        return cls(name, arch, model_hash, decoder_path, decoder_hash, str(device), download)

    @property
    def is_file(self) -> bool:
        """Whether :attr:`model` is a local file (not a registered name)."""
        return Path(self.model).is_absolute()

    def settings(self) -> dict[str, Any]:
        """The identity of the weights, as JSON values (no device: it does not name weights)."""
        return {
            "model": Path(self.model).name if self.is_file else self.model,
            "architecture": self.architecture,
            "model_hash": self.model_hash,
            "decoder_hash": self.decoder_hash,
        }

    def load(self) -> SamModel:
        """The model, built on this process's device (slow: call once per worker).

        ``"auto"``/``"cuda"`` on a worker of a local cluster with several GPUs
        takes the worker's own GPU (:func:`~.engine.worker_device`).
        """
        from ..sam import load_model
        from .engine import worker_device

        return load_model(
            self.architecture if self.is_file else self.model,
            checkpoint=self.model if self.is_file else None,
            device=worker_device(self.device),
            decoder_checkpoint=self.decoder,
            download=self.download,
            progress=False,
        )


def _sam2_spec(
    text: str, path: Path, architecture: str | None, decoder, device: str, download: bool
) -> SamModelSpec | None:
    """The spec of a SAM 2 model (registered name, or a ``.pt`` file with a SAM 2 architecture).

    ``architecture`` for a file is a registered SAM 2 name or a ``sam2`` config name; the
    spec's architecture is always the config, and a registered file is identified by its
    pinned size (no checksum is published).
    """
    from ..sam.sam2_registry import get_sam2_checkpoint, is_sam2_name

    named = not path.is_file() and is_sam2_name(text) and not text.startswith("configs/")
    if not named and not (path.is_file() and is_sam2_name(architecture)):
        return None
    if decoder is not None:
        raise ValueError("A fine-tuned decoder applies to SAM models, not to SAM 2.")
    if named:
        spec = get_sam2_checkpoint(text)
        return SamModelSpec(
            spec.name, spec.config, f"size:{spec.size}", None, None, str(device), download
        )
    from ..sam.sam2_download import file_identity

    config = architecture
    if not config.startswith("configs/"):
        config = get_sam2_checkpoint(config).config
    path = path.resolve()
    return SamModelSpec(str(path), config, file_identity(path), None, None, str(device), download)


def _guess_architecture(path: Path) -> str:
    """The registered architecture a full SAM ``.pth`` file fits (reads shapes, not weights)."""
    import torch

    from ..sam.registry import ARCHITECTURES
    from ..sam.weights import guess_architecture, load_checkpoint_file

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # old (non-zip) format: read it whole, with the usual errors
        state = load_checkpoint_file(path)
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    guess = guess_architecture(state) if isinstance(state, dict) else None
    if guess not in ARCHITECTURES:
        raise ValueError(
            f"Cannot tell the SAM architecture of {path}: "
            + ("it holds no image encoder." if guess is None else f"it looks like {guess}.")
            + f" Give it explicitly (one of {', '.join(ARCHITECTURES)})."
        )
    return guess
