import pytest
import torch
from safetensors.torch import save_file

from briarpatch import load_patch
from briarpatch.artifacts import PatchFileError, save_patch
from briarpatch.placement import Placement


def _save(path, **meta):
    return save_patch(path, pixels=torch.rand(3, 6, 8), mask=torch.ones(1, 6, 8),
                      placement=Placement(size=0.25, anchor="top_left"), metadata={"encoder": "x", **meta})


def test_round_trip(tmp_path):
    path = _save(tmp_path / "p.safetensors", groups=["a", "b"])
    patch = load_patch(path)
    assert patch.pixels.shape == (3, 6, 8) and patch.placement.anchor == "top_left"
    assert patch.metadata["groups"] == ["a", "b"]

def test_directory_with_patch(tmp_path):
    _save(tmp_path / "patch.safetensors")
    assert load_patch(tmp_path).metadata["encoder"] == "x"


def test_pickle_files_are_refused_without_being_read(tmp_path):
    bad = tmp_path / "evil.pt"
    bad.write_bytes(b"\x80\x04this would be a pickle")
    with pytest.raises(PatchFileError, match="refusing a pickle-based file"):
        load_patch(bad)


def test_corrupt_and_foreign_files_are_one_line_errors(tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\xff" * 64)
    with pytest.raises(PatchFileError, match="not a readable safetensors patch") as err:
        load_patch(corrupt)
    assert "\n" not in str(err.value)
    photo = tmp_path / "photo.png"  # evaluate patch=photo.png
    photo.write_bytes(bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b55"
                                    "0000000a4944415408d76360000000020001e221bc330000000049454e44ae426082"))
    with pytest.raises(PatchFileError, match="photo.png: an image, not a patch; a patch is the patch.safetensors"):
        load_patch(photo)
    foreign = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(PatchFileError, match="not a briarpatch patch"):
        load_patch(foreign)
    with pytest.raises(PatchFileError, match="no such patch file"):
        load_patch(tmp_path / "missing.safetensors")


def test_what_is_not_a_patch_path_is_named(tmp_path, monkeypatch):
    with pytest.raises(PatchFileError, match="no patch given: name a patch.safetensors file"):
        load_patch("")
    with pytest.raises(PatchFileError, match="an address, and patches are read from files on this machine"):
        load_patch("https://example.org/patch.safetensors")
    with pytest.raises(PatchFileError, match="a folder without patch.safetensors"):
        load_patch(tmp_path)
    from briarpatch.artifacts import default_patch_path

    (tmp_path / "p.safetensors").write_bytes(default_patch_path().read_bytes())
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_patch("~/p.safetensors").pixels.shape[0] == 3  # as a shell would expand it
    # evaluate's spelling given to apply, info or web: the fix named.
    with pytest.raises(PatchFileError, match="given alone, without 'patch=': default"):
        load_patch("patch=default")


def test_a_patch_missing_a_tensor_is_called_damaged(tmp_path):
    from safetensors import safe_open

    from briarpatch.artifacts import default_patch_path

    with safe_open(str(default_patch_path()), "pt") as fh:
        meta, pixels = dict(fh.metadata()), fh.get_tensor("pixels")
    save_file({"pixels": pixels}, tmp_path / "p.safetensors", metadata=meta)
    with pytest.raises(PatchFileError, match="a briarpatch patch without its mask: the file is damaged"):
        load_patch(tmp_path / "p.safetensors")


def _with_version(path, version):
    """A copy of a patch file whose header says another format version (None: no version key)."""
    from safetensors import safe_open
    from safetensors.torch import save_file as save

    with safe_open(str(path), "pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    meta.pop("format_version")
    if version is not None:
        meta["format_version"] = version
    out = path.with_name(f"v{version}.safetensors")
    save(tensors, out, metadata=meta)
    return out


def test_files_of_a_newer_format_are_refused_and_older_ones_read(tmp_path):
    path = _save(tmp_path / "p.safetensors")
    for version in ("3", "2.1", "x"):
        with pytest.raises(PatchFileError, match="written by a newer briarpatch.*upgrade briarpatch") as err:
            load_patch(_with_version(path, version))
        assert "\n" not in str(err.value)
    # Files of format 1 (and the earliest, without the key) hold placements this version still reads.
    for version in ("1", None):
        assert load_patch(_with_version(path, version)).placement.anchor == "top_left"


def test_folder_problem_answers_without_leaving_anything(tmp_path):
    from briarpatch._atomic import folder_problem

    assert folder_problem(tmp_path / "a" / "b" / "c") is None
    assert not (tmp_path / "a").exists()  # made to try, and removed
    assert folder_problem(tmp_path) is None and list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_bytes(b"x")
    assert folder_problem(tmp_path / "f" / "sub") == f"{tmp_path / 'f'} is a file"
    assert folder_problem("/proc/briarpatch") == "No such file or directory"  # a folder nothing can be made in
    assert folder_problem("/proc") is not None  # exists, but takes no file
