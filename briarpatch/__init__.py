"""briarpatch: user-level fairness patches for images.

A BriarPatch is a patch of pixels that, pasted onto an image, hides a sensitive attribute from
the embeddings of a frozen, pretrained image encoder.
"""

__version__ = "0.1.0"

from .artifacts import BriarPatch, PatchFileError, SyntheticPatchWarning, load_patch  # noqa: E402

__all__ = ["BriarPatch", "PatchFileError", "SyntheticPatchWarning", "load_patch", "__version__"]
