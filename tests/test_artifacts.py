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
    foreign = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(PatchFileError, match="not a briarpatch patch"):
        load_patch(foreign)
    with pytest.raises(PatchFileError, match="no such patch file"):
        load_patch(tmp_path / "missing.safetensors")
