"""briarpatch: user-level fairness patches for images.

A BriarPatch is a patch of pixels that, pasted onto an image, hides a sensitive attribute from
the embeddings of a frozen, pretrained image encoder.
"""

__version__ = "0.1.0"

__all__ = ["BriarPatch", "PatchFileError", "SyntheticPatchWarning", "UndertrainedPatchWarning", "load_patch",
           "__version__"]

_FROM_ARTIFACTS = {"BriarPatch", "PatchFileError", "SyntheticPatchWarning", "UndertrainedPatchWarning", "load_patch"}


def __getattr__(name):
    # Imported on first use: `briarpatch --help` and `--version` need no torch (3 s on 2 cores).
    if name in _FROM_ARTIFACTS:
        from . import artifacts

        return getattr(artifacts, name)
    raise AttributeError(f"module 'briarpatch' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _FROM_ARTIFACTS)
