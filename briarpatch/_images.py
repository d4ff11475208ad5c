"""Images deeper than 8 bits, HEIC, and files cut short, read the same way by `apply` and by the datasets."""

from __future__ import annotations

import numpy as np

__all__ = ["DEEP_MODES", "ENDED", "HEIF_SUFFIXES", "IMAGE_SUFFIXES", "JPEG_SUFFIXES", "ends_whole", "file_ends_whole",
           "gray_scale", "read_ends", "read_heif", "unit_gray", "webp_lossless"]

# PIL modes of grey images with more than 8 bits: integers (16-bit PNG and TIFF, 32-bit TIFF) and floats.
DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
# Names of HEIC/HEIF files (iPhones' photos), read through pillow-heif (:func:`read_heif`).
HEIF_SUFFIXES = (".heic", ".heif")
# JPEG under its other names: browsers on Windows save downloaded JPEGs as .jfif, older programs as .jpe.
JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
# The names of the photos `apply` takes from a folder, and that a manifest's column of files ends with.
IMAGE_SUFFIXES = frozenset({*JPEG_SUFFIXES, ".png", ".webp", ".avif", *HEIF_SUFFIXES, ".tif", ".tiff", ".bmp", ".gif"})


def unit_gray(img) -> np.ndarray:
    """A grey PIL image of a mode in :data:`DEEP_MODES` as float32 in [0, 1].

    Integers are read as 16-bit (their usual depth); floats as [0, 1] when they fit (the usual
    convention), else as [0, 255]. PIL's own conversion to 8 bits clips instead: a 16-bit photo
    turns white and a [0, 1] float one black.
    """
    arr = np.nan_to_num(np.asarray(img, dtype=np.float32))
    return np.clip(arr / gray_scale(img, arr), 0.0, 1.0)


def gray_scale(img, arr: np.ndarray | None = None) -> float:
    """The value :func:`unit_gray` reads as white in ``img`` (``arr``: its pixels, if already read)."""
    if img.mode != "F":
        return 65535.0
    arr = np.nan_to_num(np.asarray(img, dtype=np.float32)) if arr is None else arr
    return 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0


def read_heif() -> bool:
    """Let PIL open HEIC/HEIF (what iPhones save), through pillow-heif's libheif; whether it can.
    The photo comes upright, its EXIF orientation reset (libheif applies the file's rotation)."""
    try:
        import pillow_heif
    except ImportError:  # an install without it: the caller names the file with the fix
        return False
    pillow_heif.register_heif_opener()
    return True


def webp_lossless(path) -> bool:
    """Whether a WebP file holds a lossless image (a VP8L bitstream; PIL does not say), read from
    its chunk headers: a screenshot or a graphic saved lossless stays so when patched."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
            return False
        for _ in range(64):  # VP8X, ICCP, ANIM, ALPH, EXIF, ... come before the bitstream
            chunk = fh.read(8)
            if len(chunk) < 8:
                return False
            fourcc, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if fourcc in (b"VP8L", b"VP8 "):
                return fourcc == b"VP8L"
            fh.seek(size + (size & 1), 1)
    return False


# Formats whose last bytes are known: JPEG's end-of-image marker, PNG's IEND chunk (WebP: its size field).
ENDED = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


def ends_whole(head: bytes, tail: bytes, size: int) -> bool:
    """Whether a file's last bytes are its format's end (other formats: not checked, ``True``).
    Zero bytes after a JPEG's end (padding some cameras write) are allowed."""
    if head.startswith(b"\xff\xd8\xff"):
        return tail.rstrip(b"\x00").endswith(b"\xff\xd9")
    if head.startswith(b"\x89PNG"):
        return tail.endswith(b"IEND\xaeB`\x82")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return int.from_bytes(head[4:8], "little") + 8 in (size, size - 1)
    return True


def read_ends(path) -> tuple[bytes, bytes, int]:
    """A file's first 16 bytes, its last 64 and its size: what :func:`ends_whole` reads."""
    with open(path, "rb") as fh:
        head = fh.read(16)
        size = fh.seek(0, 2)
        fh.seek(max(0, size - 64))
        return head, fh.read(), size


def file_ends_whole(path) -> bool:
    """:func:`ends_whole` for the file at ``path`` (a download cut short does not)."""
    return ends_whole(*read_ends(path))
