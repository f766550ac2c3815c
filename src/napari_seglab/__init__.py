"""napari-seglab: segmentation tools for napari label layers.

The package is importable without napari, Qt or magicgui: the core modules
(``device``, ``imaging``, ``data``, ``io``, ``metrics``, ``crf``, ``sam``,
``unet``) depend on numpy, scipy, scikit-image and, inside the functions
that need them, torch and MONAI. Widgets live in ``napari_seglab._widgets``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
