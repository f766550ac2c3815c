"""Interactive prompting: points, boxes and masks in, masks out.

Coordinates follow napari: points are ``(row, col)`` pixel positions, boxes
``(row0, col0, row1, col1)``. SAM's ``(x, y)`` order, its resized input frame
and its low-resolution mask frame are converted in :mod:`.frames` only (the
same functions fine-tuning uses).

Speed: the image embedding comes from an :class:`~.embedding.EmbeddingCache`;
a prompt runs only the prompt encoder and the mask decoder, rewritten in
:mod:`.decoder` to skip most image-token projections; its prompt-independent
part is computed once per image and reused by every click. Only the mask that
is shown is laid out and upsampled to full size (:attr:`Prediction.mask`);
:attr:`Prediction.masks` upsamples all proposals on first access, for callers
that want them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .compat import check_segment_anything
from .decoder import LowResMasks, PreparedImage, decode, prepare_image
from .embedding import Embedding, EmbeddingCache
from .frames import MASK_PROMPT_LOGIT, mask_to_logits, to_model_xy, upsample_logits
from .image import SamInput
from .image import content_hash as _raw_hash
from .sam2_decode import LOW_RES_CLAMP, decode_sam2, upsample_direct

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .model import SamModel

__all__ = ["MASK_PROMPT_LOGIT", "Prediction", "PromptSegmenter"]


@dataclass
class Prediction:
    """Masks proposed for one prompt.

    Attributes
    ----------
    scores : array ``(K,)`` float32
        SAM's predicted IoU of each proposal (K = 3 with ``multimask``, else 1).
    logits : array ``(K, h, w)`` float32
        Low-resolution logits (h = w = 256 for published models); pass one
        (``logits[k]``) as ``mask_input`` of the next prompt to refine.
    best : int
        Index of the highest-scoring proposal.
    original_size : (int, int)
        ``(Y, X)`` of the image.
    low_res : LowResMasks or tensor ``(1, K, h, w)``
        The decoder's low-resolution logits, as it returned them.
    input_size : (int, int)
        ``(Y, X)`` of the image resized to the encoder frame (before padding).
    img_size : int
        Side of the padded encoder input.
    threshold : float
        Logit above which a pixel is in a mask.
    stretched : bool
        SAM 2 (:mod:`.sam2_decode`): masks upsampled in one step, logits clamped to ±32.
    """

    scores: np.ndarray
    best: int
    original_size: tuple[int, int]
    low_res: LowResMasks | torch.Tensor = field(repr=False)
    input_size: tuple[int, int] = field(repr=False)
    img_size: int = field(repr=False)
    threshold: float = field(default=0.0, repr=False)
    stretched: bool = field(default=False, repr=False)
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _all: np.ndarray | None = field(default=None, repr=False)

    @property
    def logits(self) -> np.ndarray:
        """Low-resolution logits ``(K, h, w)`` float32."""
        low = self._low_res(slice(None))[0].detach().float()
        if self.stretched:
            low = low.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)
        return low.cpu().numpy()

    @property
    def mask(self) -> np.ndarray:
        """The best proposal at full size, ``(Y, X)`` bool."""
        return self.mask_at(self.best)

    def mask_at(self, k: int) -> np.ndarray:
        """Proposal ``k`` at full size, ``(Y, X)`` bool (upsampled on first use)."""
        k = int(k)
        if not 0 <= k < len(self.scores):
            raise ValueError(f"Proposal index {k} out of range: there are {len(self.scores)}.")
        if self._all is not None:
            return self._all[k]
        if k not in self._cache:
            self._cache[k] = self._upsample(slice(k, k + 1))[0]
        return self._cache[k]

    @property
    def masks(self) -> np.ndarray:
        """All proposals at full size, ``(K, Y, X)`` bool."""
        if self._all is None:
            self._all = self._upsample(slice(None))
        return self._all

    def _low_res(self, which: slice) -> torch.Tensor:
        """Low-resolution logits of some proposals, ``(1, k, h, w)``."""
        if isinstance(self.low_res, LowResMasks):
            return self.low_res.select(which)
        return self.low_res[:, which]

    def _upsample(self, which: slice) -> np.ndarray:
        """SAM's postprocessing (resize to the padded input, crop, resize) for some masks."""
        if self.stretched:
            return upsample_direct(self._low_res(which), self.original_size, self.threshold)
        return upsample_logits(
            self._low_res(which),
            self.input_size,
            self.original_size,
            self.img_size,
            self.threshold,
        )


class PromptSegmenter:
    """Prompt SAM on one image or plane at a time, reusing cached embeddings.

    Parameters
    ----------
    model : SamModel or Sam2Model
        SAM 2 models take the same prompts (decoding: :mod:`.sam2_decode`).
    cache : EmbeddingCache, optional
        Where embeddings are kept; default a new in-memory cache of 8 planes.
        Share one cache between segmenters (or with a background precompute)
        to reuse embeddings.
    fast_decoder : bool
        Run the mask decoder through :func:`~.decoder.decode` (same weights,
        same result up to float rounding, fewer operations); False calls
        ``segment_anything``'s ``MaskDecoder`` directly. Its segment-anything
        version is checked once (:func:`~.compat.check_segment_anything`).

    Examples
    --------
    >>> seg = PromptSegmenter(load_model("vit_b"))      # doctest: +SKIP
    >>> seg.set_image(image)                            # doctest: +SKIP
    >>> pred = seg.predict(points=[[120, 64]], labels=[1])  # doctest: +SKIP
    >>> pred.mask.shape == image.shape[:2]              # doctest: +SKIP
    True
    """

    def __init__(
        self, model: SamModel, cache: EmbeddingCache | None = None, *, fast_decoder: bool = True
    ) -> None:
        if fast_decoder and not getattr(model, "is_sam2", False):  # SAM 2 needs no SAM import
            check_segment_anything()
        self.model = model
        self.fast_decoder = fast_decoder
        self.cache = cache if cache is not None else EmbeddingCache(max_items=8)
        self._source: SamInput | None = None
        self._seen: dict[int | None, str] = {}
        self._embedding: Embedding | None = None
        self._prepared_key: tuple[Any, ...] | None = None
        self._prepared: PreparedImage | None = None

    # -- image ------------------------------------------------------------------------
    def source_for(
        self,
        image: SamInput | np.ndarray,
        *,
        rgb: bool | None = None,
        plane: int | None = None,
    ) -> SamInput:
        """A :class:`SamInput` for ``image``, reused while the same unchanged array is passed.

        For non-uint8 data the intensity range is derived from the content, so
        the raw content of each requested plane (``plane``, or the image) is
        hashed; when it changed since it was last seen (an in-place edit), a
        new :class:`SamInput` is made and the range computed again.
        """
        if isinstance(image, SamInput):
            self._source = image
            self._seen = {}
            return image
        if (
            self._source is None
            or self._source.data is not image
            or (rgb is not None and self._source.rgb != rgb)
        ):
            self._source = SamInput(image, rgb=rgb)
            self._seen = {}
        source = self._source
        if source.dtype != np.uint8:
            index = plane if source.is_stack else None
            digest = _raw_hash(source.raw_plane(index))
            if self._seen.get(index, digest) != digest:
                source = self._source = SamInput(image, rgb=source.rgb)
                self._seen = {}
            self._seen[index] = digest
        return source

    def set_image(
        self,
        image: SamInput | np.ndarray,
        plane: int | None = None,
        *,
        rgb: bool | None = None,
    ) -> Embedding:
        """Select the image (or plane of a stack) to prompt on.

        Parameters
        ----------
        image : array or SamInput
            ``(Y, X)``, ``(Y, X, 3)`` of any numeric dtype, or a stack
            ``(Z, Y, X[, 3])`` with ``plane`` given. Normalised to uint8 RGB as
            described in :mod:`napari_seglab.sam.image` (stacks: one intensity
            range for all planes). Never modified.
        plane : int, optional
            Plane index for a stack.
        rgb : bool, optional
            Whether the last axis is colour (None: guess).

        Returns
        -------
        Embedding
            From the cache when this content was embedded before by the same
            encoder; otherwise computed (the slow step) and cached.
        """
        source = self.source_for(image, rgb=rgb, plane=plane)
        rgb_plane = source.plane(plane if source.is_stack else None)
        self._embedding = self.cache.get_or_compute(self.model, rgb_plane)
        return self._embedding

    def _prepared_for(
        self, embedding: Embedding, dense: torch.Tensor, masked: bool
    ) -> PreparedImage:
        """The decoder's prompt-independent work for ``embedding``.

        Without a mask prompt it is kept for the current image and reused by
        every click until the embedding or any decoder weight changes (PyTorch
        counts in-place changes of each parameter, e.g. by fine-tuning or
        loading decoder weights).
        """
        sam = self.model.sam
        pe = self.model.pe_tokens()

        def prepare() -> PreparedImage:
            return prepare_image(
                sam.mask_decoder, embedding.features, self.model.dense_pe(), dense, pe_tokens=pe
            )

        if masked:
            return prepare()
        versions = tuple(p._version for p in sam.mask_decoder.parameters())
        key = (embedding, sam.mask_decoder, pe, sam.prompt_encoder.no_mask_embed.weight._version)
        key += versions
        if self._prepared is None or not _same(key, self._prepared_key or ()):
            self._prepared = prepare()
            self._prepared_key = key
        return self._prepared

    def set_embedding(self, embedding: Embedding) -> None:
        """Prompt on a precomputed embedding."""
        self._embedding = embedding

    @property
    def embedding(self) -> Embedding:
        """The current embedding; raises RuntimeError before :meth:`set_image`."""
        if self._embedding is None:
            raise RuntimeError("No image is set: call set_image(image) before predict().")
        return self._embedding

    @property
    def original_size(self) -> tuple[int, int]:
        """``(Y, X)`` of the current image."""
        return self.embedding.original_size

    # -- coordinates --------------------------------------------------------------------
    def to_model_frame(self, rows_cols: np.ndarray) -> np.ndarray:
        """``(..., 2)`` ``(row, col)`` pixels -> SAM ``(x, y)`` in the current image's input frame.

        See :func:`.frames.to_model_xy`.
        """
        embedding = self.embedding
        return to_model_xy(rows_cols, embedding.original_size, embedding.input_size)

    def _check_points(
        self, points: Any, labels: Any
    ) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
        if points is None:
            if labels is not None:
                raise ValueError("labels were given without points.")
            return None, None
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim == 1 and pts.size == 2:
            pts = pts[None]
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"Expected points of shape (N, 2) as (row, col), got {pts.shape}.")
        if pts.shape[0] == 0:
            return None, None
        finite = np.isfinite(pts).all(axis=1)
        if not finite.all():
            raise ValueError(
                f"Points {pts[~finite].tolist()} (row, col) are not finite numbers (NaN or "
                "±Inf); every point needs a position in the image."
            )
        lab = np.ones(len(pts), dtype=np.int64) if labels is None else np.asarray(labels).ravel()
        if lab.shape != (len(pts),):
            raise ValueError(
                f"Expected {len(pts)} point labels (1 positive, 0 negative), "
                f"got shape {lab.shape}."
            )
        if not np.isin(lab, (0, 1)).all():
            raise ValueError(f"Point labels must be 1 (positive) or 0 (negative), got {lab}.")
        height, width = self.original_size
        outside = (pts[:, 0] < -0.5) | (pts[:, 0] > height - 0.5)
        outside |= (pts[:, 1] < -0.5) | (pts[:, 1] > width - 0.5)
        if outside.any():
            raise ValueError(
                f"Points {pts[outside].tolist()} (row, col) lie outside the image of shape "
                f"{(height, width)}."
            )
        return pts, lab.astype(np.int64)

    def _check_box(self, box: Any) -> np.ndarray | None:
        if box is None:
            return None
        b = np.asarray(box, dtype=np.float64).ravel()
        if b.shape != (4,):
            raise ValueError(
                f"Expected a box (row0, col0, row1, col1), got shape {np.shape(box)}."
            )
        if not np.isfinite(b).all():
            raise ValueError(
                f"The box {tuple(b.tolist())} (row0, col0, row1, col1) holds values that are "
                "not finite numbers (NaN or ±Inf)."
            )
        r0, r1 = sorted((b[0], b[2]))
        c0, c1 = sorted((b[1], b[3]))
        height, width = self.original_size
        if r1 < -0.5 or r0 > height - 0.5 or c1 < -0.5 or c0 > width - 0.5:
            raise ValueError(
                f"The box {tuple(b.tolist())} (row0, col0, row1, col1) lies entirely outside "
                f"the image of shape {(height, width)}; it must overlap the image."
            )
        return np.array([[r0, c0], [r1, c1]])

    def mask_to_logits(self, mask: np.ndarray) -> np.ndarray:
        """A full-size mask ``(Y, X)`` (bool or labels > 0) as low-res prompt logits ``(h, w)``.

        The mask is resized like the image, padded, averaged down to the
        decoder's low resolution and mapped to ``±MASK_PROMPT_LOGIT``
        (:func:`.frames.mask_to_logits`).
        """
        mask = np.asarray(mask)
        if mask.shape != tuple(self.original_size):
            raise ValueError(
                f"Expected a mask prompt of the image shape {self.original_size}, "
                f"got {mask.shape}."
            )
        return mask_to_logits(
            mask, self.embedding.input_size, self.model.img_size, self.model.low_res_size
        )

    def _mask_tensor(self, mask_input: Any) -> torch.Tensor | None:
        import torch

        if mask_input is None:
            return None
        arr = np.asarray(mask_input)
        low = self.model.low_res_size
        if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
            arr = self.mask_to_logits(arr)
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise ValueError(
                f"mask_input holds {bad} non-finite value(s) (NaN or ±Inf) of {arr.size}; pass "
                "the logits of a previous prediction (Prediction.logits[k]) or a bool mask."
            )
        if arr.shape != (low, low):
            raise ValueError(
                f"Expected mask_input as low-res logits ({low}, {low}) "
                "(e.g. Prediction.logits[k]) "
                f"or a bool/label mask of the image shape {self.original_size}, got shape "
                f"{np.shape(mask_input)} dtype {np.asarray(mask_input).dtype}."
            )
        return torch.as_tensor(arr, device=self.model.device)[None, None]

    # -- prediction ---------------------------------------------------------------------
    def predict(
        self,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        box: Sequence[float] | np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
    ) -> Prediction:
        """Masks for a prompt on the current image.

        Parameters
        ----------
        points : array ``(N, 2)``, optional
            ``(row, col)`` pixel coordinates.
        labels : array ``(N,)``, optional
            1 = positive (object), 0 = negative (background); default all 1.
        box : ``(row0, col0, row1, col1)``, optional
        mask_input : array, optional
            Low-res logits ``(h, w)`` from a previous :attr:`Prediction.logits`,
            or a full-size bool/label mask ``(Y, X)`` of an existing object
            (converted with :meth:`mask_to_logits`).
        multimask : bool
            Three proposals (for an ambiguous single click) instead of one.

        Returns
        -------
        Prediction

        Raises
        ------
        ValueError
            For a prompt that cannot be right: points or box values that are
            NaN/±Inf, points outside the image (named), a box with no overlap
            with the image (the box and the image shape are named), mask logits
            holding NaN/±Inf, or shapes that do not fit.
        """
        import torch

        embedding = self.embedding
        pts, lab = self._check_points(points, labels)
        corners = self._check_box(box)
        mask_t = self._mask_tensor(mask_input)
        if getattr(self.model, "is_sam2", False):
            return self._predict_sam2(embedding, pts, lab, corners, mask_t, multimask)
        device = self.model.device
        sam = self.model.sam
        point_arg = None
        if pts is not None:
            coords = torch.as_tensor(self.to_model_frame(pts), dtype=torch.float, device=device)
            point_arg = (coords[None], torch.as_tensor(lab, dtype=torch.int, device=device)[None])
        box_t = None
        if corners is not None:
            box_xy = self.to_model_frame(corners).reshape(1, 4)
            box_t = torch.as_tensor(box_xy, dtype=torch.float, device=device)
        with torch.inference_mode():
            sparse, dense = sam.prompt_encoder(points=point_arg, boxes=box_t, masks=mask_t)
            if self.fast_decoder:
                prepared = self._prepared_for(embedding, dense, masked=mask_t is not None)
                low_res, iou = decode(sam.mask_decoder, prepared, sparse, multimask)
            else:
                low_res, iou = sam.mask_decoder(
                    image_embeddings=embedding.features,
                    image_pe=self.model.dense_pe(),
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=multimask,
                )
        scores = iou[0].float().cpu().numpy()
        return Prediction(
            scores=scores,
            best=int(np.argmax(scores)),
            original_size=tuple(embedding.original_size),
            low_res=low_res,
            input_size=tuple(embedding.input_size),
            img_size=self.model.img_size,
            threshold=float(sam.mask_threshold),
        )

    def _predict_sam2(self, embedding, pts, lab, corners, mask_t, multimask) -> Prediction:
        """:meth:`predict` with a SAM 2 model (:func:`~.sam2_decode.decode_sam2`)."""
        points_xy = None if pts is None else self.to_model_frame(pts)
        box_xy = None if corners is None else self.to_model_frame(corners).reshape(4)
        low_res, iou = decode_sam2(
            self.model, embedding, points_xy, lab, box_xy, mask_t, multimask
        )
        scores = iou[0].cpu().numpy()
        return Prediction(
            scores=scores,
            best=int(np.argmax(scores)),
            original_size=tuple(embedding.original_size),
            low_res=low_res,
            input_size=tuple(embedding.input_size),
            img_size=self.model.img_size,
            stretched=True,
        )


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Element-wise identity of two keys (objects by identity, counters by value)."""
    return len(a) == len(b) and all(
        x is y or (isinstance(x, int) and isinstance(y, int) and x == y) for x, y in zip(a, b)
    )
