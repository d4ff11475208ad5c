"""Every real-dataset reader on tiny fixtures written in that dataset's exact on-disk format."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from briarpatch.config import build
from briarpatch.train import train

from .conftest import compose_cfg

CELEBA_ATTRS = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
                "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair "
                "Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face "
                "Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair "
                "Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
N = 60
SMALL = ["data.image_size=32", "data.batch_size=8", "data.num_workers=0", "patch.size=2", "patch_steps=3", "adversary.warmup_steps=0",
         "trainer.enable_progress_bar=false", "eval.n_boot=0", "eval.progress=false", "eval.baselines=false", "eval.robustness=[]"]


def _jpeg(path, i):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(i)
    tint = np.array([60, 0, -60]) if i % 2 else np.array([-60, 0, 60])
    arr = np.clip(rng.integers(60, 200, (40, 36, 3)) + tint, 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=90)


def _celeba_values(i):
    values = {a: (1 if (i + k) % 3 == 0 else -1) for k, a in enumerate(CELEBA_ATTRS)}
    values["Male"] = 1 if i % 2 else -1
    values["Smiling"] = 1 if (i // 2) % 2 else -1
    values["Attractive"] = 1 if (i // 3) % 2 else -1
    values["Blond_Hair"] = 1 if (i // 2) % 2 else -1
    return values


def make_celeba_official(root):
    names = [f"{i:06d}.jpg" for i in range(1, N + 1)]
    lines = [str(N), " ".join(CELEBA_ATTRS)]
    for i, name in enumerate(names):
        v = _celeba_values(i)
        lines.append(name + "".join(f" {v[a]:2d}" for a in CELEBA_ATTRS))
        _jpeg(root / "img_align_celeba" / name, i)
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text(
        "\n".join(f"{n} {0 if i < 36 else 1 if i < 44 else 2}" for i, n in enumerate(names)) + "\n")


def make_celeba_kaggle(root):
    names = [f"{i:06d}.jpg" for i in range(1, N + 1)]
    rows = []
    for i, name in enumerate(names):
        rows.append({"image_id": name, **_celeba_values(i)})
        _jpeg(root / "img_align_celeba" / "img_align_celeba" / name, i)
    pd.DataFrame(rows).to_csv(root / "list_attr_celeba.csv", index=False)
    pd.DataFrame({"image_id": names, "partition": [0 if i < 36 else 1 if i < 44 else 2 for i in range(N)]}).to_csv(
        root / "list_eval_partition.csv", index=False)


def make_utkface(root):
    for i in range(N):
        age = 20 + (i // 2) % 2 * 30 + i % 5
        _jpeg(root / f"{age}_{i % 2}_{i % 5}_20170109{i:09d}.jpg.chip.jpg", i)
    _jpeg(root / "not_a_utkface_name.jpg", 999)
    _jpeg(root / "61_1_20170109150557335.jpg.chip.jpg", 998)  # a real-world malformed name (race missing)


def make_fairface(root):
    races = ["White", "Black", "East Asian"]
    ages = ["20-29", "50-59", "3-9", "more than 70"]

    def rows(prefix, count, offset):
        out = []
        for j in range(count):
            i = offset + j
            _jpeg(root / prefix / f"{j + 1}.jpg", i)
            out.append({"file": f"{prefix}/{j + 1}.jpg", "age": ages[(i // 3) % 4], "gender": ["Male", "Female"][i % 2],
                        "race": races[i % 3], "service_test": bool(i % 2)})
        return pd.DataFrame(out)

    rows("train", 48, 0).to_csv(root / "fairface_label_train.csv", index=False)
    rows("val", 30, 100).to_csv(root / "fairface_label_val.csv", index=False)


def make_waterbirds(root):
    rows = []
    for i in range(N):
        name = f"{['001.Black_footed_Albatross', '014.Indigo_Bunting'][(i // 2) % 2]}/img_{i}.jpg"
        _jpeg(root / name, i)
        rows.append({"img_id": i + 1, "img_filename": name, "y": (i // 2) % 2,
                     "split": 0 if i < 36 else 1 if i < 44 else 2, "place": i % 2, "place_filename": "/x/y.jpg"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)


def make_manifest(root, *, split=True, parquet=False):
    rows = []
    for i in range(N):
        _jpeg(root / "imgs" / f"{i}.jpg", i)
        row = {"path": f"imgs/{i}.jpg", "label": (i // 2) % 2, "group": ["a", "b"][i % 2]}
        if split:
            row["split"] = "train" if i < 36 else "val" if i < 44 else "test"
        rows.append(row)
    frame = pd.DataFrame(rows)
    path = root / ("manifest.parquet" if parquet else "manifest.csv")
    frame.to_parquet(path) if parquet else frame.to_csv(path, index=False)
    return path


PRESETS = [
    ("celeba_smiling_male", make_celeba_official, ["Male", "not Male"]),
    ("celeba_attractive_male", make_celeba_kaggle, ["Male", "not Male"]),
    ("celeba_blond_male", make_celeba_official, ["Male", "not Male"]),
    ("utkface_age_gender", make_utkface, ["female", "male"]),
    ("fairface_age_race", make_fairface, ["Black", "East Asian", "White"]),
    ("waterbirds_place", make_waterbirds, ["0", "1"]),
]


@pytest.mark.parametrize("preset,make,groups", PRESETS)
def test_preset_trains_and_evaluates_on_its_on_disk_format(preset, make, groups, tmp_path):
    root = tmp_path / "data"
    make(root)
    cfg = compose_cfg("train", [f"experiment={preset}", f"data.root={root}", *SMALL], run_dir=tmp_path / "run")
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.eval.cache_dir = str(tmp_path / "cache")
    result = train(cfg)
    assert sorted(result["report"]["settings"]["groups"]) == sorted(groups)
    md = (tmp_path / "run" / "report" / "report.md").read_text()
    threshold = "" if cfg.data.target_threshold is None else f" >= {cfg.data.target_threshold} or not"
    assert f"Downstream predictor of Y ({cfg.data.target}{threshold}): " in md
    assert f"Groups of S ({cfg.data.sensitive}): " in md
    assert set(result["report"]["leakage"]["adaptive"]) == {"logistic", "mlp"}


@pytest.mark.parametrize("split,parquet", [(True, False), (False, True)])
def test_manifest_csv_and_parquet(tmp_path, split, parquet):
    path = make_manifest(tmp_path, split=split, parquet=parquet)
    over = [f"data.manifest={path}", "data.target=label", "data.sensitive=group"]
    if split:
        over.append("data.split_column=split")
    cfg = compose_cfg("train", ["data=manifest", *over, *SMALL], run_dir=tmp_path / "run")
    dm = build(cfg.data)
    sizes = [len(dm.split(s)) for s in ("train", "val", "test")]
    assert sum(sizes) == N and min(sizes) > 0
    assert dm.group_names == ["a", "b"]


def test_photos_held_in_memory_are_decoded_once_and_read_as_decoded(tmp_path, monkeypatch):
    """The evaluation reads each split a dozen times; a photo is decoded on the first only."""
    from briarpatch.datasets import TableDataset

    for i in range(5):
        _jpeg(tmp_path / f"{i}.jpg", i)
    paths = [tmp_path / f"{i}.jpg" for i in range(5)]
    plain = TableDataset(paths, np.zeros(5), np.arange(5) % 2, image_size=32)
    held = TableDataset(paths, np.zeros(5), np.arange(5) % 2, image_size=32)
    assert held.hold(budget=5 * 3 * 32 * 32 - 1) == 0  # does not fit: read from disk each time
    assert held.hold(budget=5 * 3 * 32 * 32) == 5 * 3 * 32 * 32
    decoded = []
    decode = TableDataset._decode
    monkeypatch.setattr(TableDataset, "_decode", lambda self, i: decoded.append(i) or decode(self, i))
    for _ in range(3):
        for batch in torch.utils.data.DataLoader(held, batch_size=2):
            for j, i in enumerate(batch["index"].tolist()):
                assert torch.equal(batch["image"][j], decode(plain, i)["image"]) and batch["s"][j] == i % 2
    assert sorted(decoded) == list(range(5))


def test_training_workers_keep_their_photos_for_the_next_epochs(tmp_path):
    """Each persistent worker keeps what it decoded; later epochs read the same pixels from memory."""
    path = make_manifest(tmp_path)
    dm = build(compose_cfg("train", ["data=manifest", f"data.manifest={path}", "data.target=label",
                                     "data.sensitive=group", "data.split_column=split", "data.image_size=32",
                                     "data.num_workers=1"]).data)
    loader = dm.train_dataloader()
    epochs = [{i: img for batch in loader for i, img in zip(batch["index"].tolist(), batch["image"])}
              for _ in range(2)]
    train = dm.split("train")
    assert train._holds and train._held is None  # held in the worker, not copied into this process
    assert epochs[0].keys() == epochs[1].keys() == set(range(len(train)))
    assert all(torch.equal(epochs[1][i], train._decode(i)["image"]) for i in range(len(train)))


def test_evaluate_a_patch_through_a_preset(tmp_path):
    from omegaconf import open_dict

    from briarpatch.evaluation import evaluate

    make_utkface(tmp_path / "data")
    over = ["experiment=utkface_age_gender", f"data.root={tmp_path / 'data'}", *SMALL]
    trained = train(compose_cfg("train", [*over, "evaluate_after_train=false"], run_dir=tmp_path / "run"))
    cfg = compose_cfg("evaluate", [f"patch_path={trained['patch']}",
                                   *[o for o in over if not o.startswith(("patch", "trainer.", "adversary."))]],
                      run_dir=tmp_path / "eval")
    with open_dict(cfg):
        cfg.eval.cache_dir = str(tmp_path / "cache")
    from briarpatch.datasets import TableDataset

    read = []
    with pytest.MonkeyPatch.context() as mp:
        decode = TableDataset._decode
        mp.setattr(TableDataset, "_decode", lambda self, i: read.append((id(self), i)) or decode(self, i))
        report = evaluate(cfg)
    assert report["data"]["dataset"] == "utkface" and report["settings"]["groups"] == ["female", "male"]
    assert read and len(set(read)) == len(read)  # every photo decoded once, for a dozen passes


def test_utkface_skips_malformed_names(tmp_path, caplog):
    make_utkface(tmp_path)
    cfg = compose_cfg("train", ["experiment=utkface_age_gender", f"data.root={tmp_path}", *SMALL])
    dm = build(cfg.data)
    assert sum(len(dm.split(s)) for s in ("train", "val", "test")) == N
    assert "skipped 2 file(s)" in caplog.text


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="CelebA labels not found: expected .*list_attr_celeba.txt"):
        build(compose_cfg("train", ["data=celeba", f"data.root={tmp_path}"]).data)
    make_celeba_official(tmp_path / "c")
    with pytest.raises(ValueError, match="unknown attribute 'Smiles'; did you mean 'Smiling'. valid names: .*Smiling"):
        build(compose_cfg("train", ["data=celeba", f"data.root={tmp_path / 'c'}", "data.target=Smiles"]).data)
    for p in list((tmp_path / "c" / "img_align_celeba").iterdir())[:5]:
        p.unlink()
    with pytest.raises(FileNotFoundError, match="5 of 60 listed images are missing"):
        build(compose_cfg("train", ["data=celeba", f"data.root={tmp_path / 'c'}"]).data)
    dm = build(compose_cfg("train", ["data=celeba", f"data.root={tmp_path / 'c'}", "data.max_missing=0.1"]).data)
    assert sum(len(dm.split(s)) for s in ("train", "val", "test")) == 55
    path = make_manifest(tmp_path / "m")
    for limit in (0, -1):  # pandas' "negative number of rows" once
        with pytest.raises(ValueError, match=f"data.limit must be a whole number >= 1, got {limit}"):
            build(compose_cfg("train", ["data=manifest", f"data.manifest={path}", "data.target=label",
                                        "data.sensitive=group", "data.split_column=split", f"data.limit={limit}"]).data)


def test_a_root_one_folder_off_and_damaged_label_files_are_named(tmp_path):
    """data.root given as the image folder, or above the folder an archive unpacked into: the
    folder that holds the labels is named. Empty or damaged label files: pandas' "No columns to
    parse from file", an IndexError or a KeyError, without the file's name."""
    make_celeba_official(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match=f"they are in {tmp_path / 'c'}: data.root={tmp_path / 'c'}$"):
        build(compose_cfg("train", ["data=celeba", f"data.root={tmp_path / 'c' / 'img_align_celeba'}"]).data)
    make_fairface(tmp_path / "f" / "fairface")
    with pytest.raises(FileNotFoundError, match=f"it is in {tmp_path / 'f' / 'fairface'}: data.root="):
        build(compose_cfg("train", ["experiment=fairface_age_race", f"data.root={tmp_path / 'f'}"]).data)
    (tmp_path / "c" / "list_attr_celeba.txt").write_text("")
    with pytest.raises(ValueError, match="list_attr_celeba.txt cannot be read .empty or damaged.: download or unpack"):
        build(compose_cfg("train", ["data=celeba", f"data.root={tmp_path / 'c'}"]).data)
    (tmp_path / "f" / "fairface" / "fairface_label_val.csv").write_text("")
    with pytest.raises(ValueError, match="FairFace val labels .*fairface_label_val.csv is empty: download or unpack"):
        build(compose_cfg("train", ["experiment=fairface_age_race", f"data.root={tmp_path / 'f' / 'fairface'}"]).data)
    (tmp_path / "f" / "fairface" / "fairface_label_val.csv").write_text("a,b\n1,2\n")
    (tmp_path / "f" / "fairface" / "fairface_label_train.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="unknown column 'file'; valid names: a, b"):
        build(compose_cfg("train", ["experiment=fairface_age_race", f"data.root={tmp_path / 'f' / 'fairface'}"]).data)


def test_unreadable_images_and_unlabelled_rows_are_left_out_and_counted(tmp_path, caplog, capsys):
    """A file that is not an image and a row without a label are skipped with a warning (counted
    against data.max_missing), not met at the first batch; a body that does not decode names its file."""
    from briarpatch.config import report_user_error
    from briarpatch.datasets import UnreadableImage, _unreadable

    path = make_manifest(tmp_path, split=True)
    (tmp_path / "imgs" / "3.jpg").write_bytes(b"not an image")
    frame = pd.read_csv(path)
    frame.loc[5, "label"] = None
    frame.to_csv(path, index=False)
    over = ["data=manifest", f"data.manifest={path}", "data.target=label", "data.sensitive=group",
            "data.split_column=split"]
    with pytest.raises(ValueError, match=r"1 of 59 listed images cannot be read \(e.g. .*3.jpg: cannot identify"):
        build(compose_cfg("train", over).data)
    dm = build(compose_cfg("train", [*over, "data.max_missing=0.05"]).data)
    assert sum(len(dm.split(s)) for s in ("train", "val", "test")) == N - 2
    assert "1 of 60 rows have no 'label' or 'group' value" in caplog.text and "cannot be read" in caplog.text

    # A download cut short (its end marker missing) is found when the list is read, and left out;
    # a JPEG with bytes after its end (some cameras append data) is not.
    for name, cut in (("9.jpg", True), ("10.jpg", False)):
        whole = (tmp_path / "imgs" / name).read_bytes()
        (tmp_path / "imgs" / name).write_bytes(whole[:len(whole) // 2] if cut else whole + b"TRAILER" * 20)
    caplog.clear()
    dm = build(compose_cfg("train", [*over, "data.max_missing=0.05"]).data)
    assert sum(len(dm.split(s)) for s in ("train", "val", "test")) == N - 3
    assert "2 of 59 listed images cannot be read" in caplog.text
    cut, kept = tmp_path / "imgs" / "9.jpg", tmp_path / "imgs" / "10.jpg"
    assert "truncated" in _unreadable([cut])[cut] and not _unreadable([kept])
    # A body that stops decoding after the list was read (the file replaced or damaged since): named.
    dataset = dm.split("train")
    at = [str(p) for p in dataset.paths].index(str(tmp_path / "imgs" / "7.jpg"))
    whole = (tmp_path / "imgs" / "7.jpg").read_bytes()
    (tmp_path / "imgs" / "7.jpg").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(UnreadableImage, match=r"7.jpg cannot be decoded \(image file is truncated"):
        dataset[at]
    with pytest.MonkeyPatch.context() as mp:  # more than twice PIL's bound: refused before decoding
        mp.setattr(Image, "MAX_IMAGE_PIXELS", 100)
        with pytest.raises(UnreadableImage, match=r"8.jpg is refused as a possible decompression bomb"):
            dataset[[str(p) for p in dataset.paths].index(str(tmp_path / "imgs" / "8.jpg"))]
    # Raised in a DataLoader worker, it is still one line naming the file.
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, [at]), num_workers=1)
    with pytest.raises(UnreadableImage) as caught:
        next(iter(loader))
    assert report_user_error("briarpatch train", caught.value) == 2
    err = capsys.readouterr().err
    assert err.startswith("briarpatch train: ") and "7.jpg cannot be decoded" in err and len(err.splitlines()) == 1


def test_cached_embeddings_are_not_served_for_replaced_photos(tmp_path):
    """The embedding cache is keyed by describe(): a photo replaced in place, or a list that names
    other files, gets a new key; the same files keep theirs."""
    from briarpatch.evaluation import _cache_key

    path = make_manifest(tmp_path, split=True)
    over = ["data=manifest", f"data.manifest={path}", "data.target=label", "data.sensitive=group",
            "data.split_column=split", "data.image_size=32"]
    class Encoder:  # only its description enters the key; the data's is what this test is about
        def describe(self):
            return {"name": "efficientnet_lite0"}

    encoder = Encoder()
    key = lambda: _cache_key(encoder, build(compose_cfg("train", over).data), "test", None)  # noqa: E731
    before = key()
    assert key() == before
    _jpeg(tmp_path / "imgs" / "50.jpg", 12345)  # a test-split photo replaced by another
    assert key() != before
    replaced = key()
    frame = pd.read_csv(path)
    frame.loc[frame["path"] == "imgs/51.jpg", "path"] = "imgs/1.jpg"  # the list now names another file
    frame.to_csv(path, index=False)
    assert key() not in (before, replaced)


def test_deep_images_are_read_at_their_own_range(tmp_path):
    # 16-bit PNGs (common for medical and scientific images) and float TIFFs: PIL's own conversion
    # to RGB clips them to white and black.
    from briarpatch.datasets import TableDataset

    grey = np.random.default_rng(0).integers(0, 256, (32, 32)).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "eight.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    Image.fromarray(grey.astype(np.float32) / 255, "F").save(tmp_path / "unit.tif")
    Image.fromarray(grey.astype(np.float32), "F").save(tmp_path / "float255.tif")
    names = ["eight.png", "sixteen.png", "unit.tif", "float255.tif"]
    ds = TableDataset([tmp_path / n for n in names], np.zeros(4), np.zeros(4), image_size=32)
    ref = ds[0]["image"]
    assert ref.shape == (3, 32, 32) and ref.float().std() > 50
    for i in range(1, 4):
        assert (ds[i]["image"].int() - ref.int()).abs().max() <= 1, names[i]


def test_manifests_as_users_write_them(tmp_path, caplog):
    """Semicolon and tab separated lists read as commas do; the mistakes a list can hold are named
    with their fix, before any image is embedded."""
    from briarpatch.evaluation import EvalSettings, check_evaluable

    path = make_manifest(tmp_path, split=False)
    frame = pd.read_csv(path)

    def load(name, text=None, **over):
        target = tmp_path / name
        if text is not None:
            target.write_bytes(text if isinstance(text, bytes) else text.encode())
        args = {"target": "label", "sensitive": "group", **over}
        return build(compose_cfg("train", ["data=manifest", f"data.manifest={target}",
                                           *[f"data.{k}={v}" for k, v in args.items()]]).data)

    for name, sep in (("semi.csv", ";"), ("tabs.tsv", "\t")):
        frame.to_csv(tmp_path / name, sep=sep, index=False)
        dm = load(name)
        assert dm.group_names == ["a", "b"] and sum(len(dm.split(s)) for s in ("train", "val", "test")) == N
    blank = frame.copy()
    blank.loc[4, "path"] = None
    blank.to_csv(tmp_path / "blank.csv", index=False)
    assert sum(len(load("blank.csv").split(s)) for s in ("train", "val", "test")) == N - 1
    assert "1 of 60 rows have no 'path' value; skipping them" in caplog.text

    with pytest.raises(ValueError, match="data.target and data.sensitive are the same column"):
        load("manifest.csv", target="group")
    # A column named otherwise: the setting to change, and its value (the path column found by what it holds).
    with pytest.raises(ValueError, match=r"unknown column 'Labels' \(data.target\); did you mean data.target=label\?"):
        load("manifest.csv", target="Labels")
    frame.rename(columns={"path": "filename"}).to_csv(tmp_path / "named.csv", index=False)
    with pytest.raises(ValueError, match=r"unknown path column 'path' \(data.path_column\); did you mean "
                                         r"data.path_column=filename\? valid names: filename, label, group"):
        load("named.csv")
    numeric = frame.assign(age=np.arange(N) + 18)
    numeric.to_csv(tmp_path / "ages.csv", index=False)
    with pytest.raises(ValueError, match=r"leaves the (val|test) split empty: 'age' and 'group' make 60 .* "
                                         r"data.target_threshold \(its median: 47.5\)"):
        load("ages.csv", target="age")
    with pytest.raises(ValueError, match=r"data.sensitive='age' has 60 distinct numbers: a patch hides a group "
                                         r"attribute; make two groups with data.sensitive_threshold=T \(age >= T; "
                                         r"its median: 47.5\), or give a column of groups"):
        load("ages.csv", sensitive="age")
    dm = load("ages.csv", sensitive="age", sensitive_threshold=40)  # age as the sensitive attribute, in two groups
    assert dm.group_names == ["<40", ">=40"] and dm.describe()["sensitive_threshold"] == 40
    assert sum(int(dm.split(part).s.sum()) for part in ("train", "val", "test")) == int((numeric["age"] >= 40).sum())
    with pytest.raises(ValueError, match=r"sensitive 'group' has values that are not numbers \(e.g. 'a'\), so "
                                         r"data.sensitive_threshold=40 cannot binarise it: "
                                         "data.sensitive_threshold=null keeps its groups"):
        load("ages.csv", sensitive_threshold=40)
    frame.head(3).to_csv(tmp_path / "three_rows.csv", index=False)
    with pytest.raises(ValueError, match="cells for 3 images; list more images, or give a split column"):
        load("three_rows.csv")
    with pytest.raises(ValueError, match="is not text .*save it as CSV"):
        load("book.xlsx", b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xb5U0#\xf4\x00\x00\x00L\x02")
    with pytest.raises(ValueError, match="manifest.* is empty: it needs a header row"):
        load("empty.csv", "")
    with pytest.raises(ValueError, match="lists no images"):
        load("header.csv", "path,label,group\n")
    with pytest.raises(ValueError, match="is a folder; give the CSV or Parquet file"):
        load("imgs")
    frame.to_csv(tmp_path / "list.parquet", index=False)  # read as Parquet by its name
    with pytest.MonkeyPatch.context() as mp:  # pandas without pyarrow or fastparquet
        mp.setattr(pd, "read_parquet", lambda *a, **k: (_ for _ in ()).throw(ImportError("Unable to find a usable engine")))
        with pytest.raises(ValueError, match="a Parquet manifest needs pyarrow: pip install pyarrow"):
            load("list.parquet")

    # Three classes train (the adversary's cells), but demographic parity needs a yes/no prediction.
    frame.assign(label=np.arange(N) % 3).to_csv(tmp_path / "three.csv", index=False)
    with pytest.raises(ValueError, match=r"the target has 3 classes \(0, 1, 2\) and the evaluation's fairness "
                                         "metrics need two: binarise it"):
        check_evaluable(load("three.csv"), EvalSettings())
    check_evaluable(load("manifest.csv"), EvalSettings())

    # Labels typed by hand: "b " and "B" were groups of their own, of one image each, which the
    # probes' group sizes then refused as "too few images per group".
    stray = frame.assign(group=frame["group"].astype(object))
    stray.loc[1, "group"], stray.loc[3, "group"] = "b ", "B"
    stray.to_csv(tmp_path / "stray.csv", index=False)
    dm = load("stray.csv")
    assert dm.group_names == ["a", "b"]
    assert sum(int((dm.split(part).s == 1).sum()) for part in ("train", "val", "test")) == N // 2
    assert "sensitive 'group' has values that differ only in case; counting 'B' (1 row) as 'b'" in caplog.text
    check_evaluable(dm, EvalSettings())
    typo = frame.assign(group=frame["group"].astype(object))
    typo.loc[1, "group"] = "bb"
    typo.to_csv(tmp_path / "typo.csv", index=False)
    with pytest.raises(ValueError, match=r"too few images per group in the training split .*\(bb: 1; at least 10 "
                                         r"each\): list more images, or check data.sensitive's values"):
        check_evaluable(load("typo.csv"), EvalSettings())


def test_a_list_sorted_by_class_is_served_in_a_seeded_order(tmp_path):
    """The robustness channels take each split's first eval.robustness_size photos: in the list's
    order, a list sorted by class gave them one class (and a biased share of the groups)."""
    path = make_manifest(tmp_path, split=False)
    frame = pd.read_csv(path).sort_values(["label", "group"])
    frame.to_csv(tmp_path / "sorted.csv", index=False)
    over = ["data=manifest", f"data.manifest={tmp_path / 'sorted.csv'}", "data.target=label", "data.sensitive=group"]
    dm = build(compose_cfg("train", over).data)
    train_split = dm.split("train")
    first = train_split.y[:len(train_split) // 3]
    assert 0 < first.float().mean() < 1 and 0 < train_split.s[:len(train_split) // 3].float().mean() < 1
    again = build(compose_cfg("train", over).data).split("train")
    assert again.paths == train_split.paths  # the same order every time (seeded by data.seed)


def test_one_class_of_a_target_against_the_rest(tmp_path):
    """A target of several classes (a species, a race) becomes yes/no with data.target_positive: one
    class or a list, named as the data spell it (case aside); the mistakes are named with their fix."""
    from briarpatch.report import _y_and_s

    path = make_manifest(tmp_path, split=False)
    frame = pd.read_csv(path)
    kinds = np.array(["cat", "Dog", "bird"])[np.arange(N) % 3]
    frame.assign(kind=kinds, score=(np.arange(N) % 4) * 1.0).to_csv(tmp_path / "kinds.csv", index=False)

    def load(*over):
        return build(compose_cfg("train", ["data=manifest", f"data.manifest={tmp_path / 'kinds.csv'}",
                                           "data.sensitive=group", "data.target=kind", *over]).data)

    def labels(dm):
        return np.concatenate([dm.split(part).y.numpy() for part in ("train", "val", "test")]), \
            np.concatenate([dm.split(part).s.numpy() for part in ("train", "val", "test")])

    dm = load("data.target_positive=dog")
    assert dm.target_names == ["not Dog", "Dog"]
    y, _ = labels(dm)
    assert len(y) == N and y.sum() == N // 3
    assert dm.describe()["target_positive"] == "Dog"
    y, _ = labels(load("data.target_positive=[Dog,bird]"))
    assert y.sum() == 2 * N // 3
    # A numeric column that pandas read as floats: 3 names the class 3.0.
    y, _ = labels(load("data.target=score", "data.target_positive=3"))
    assert y.sum() == N // 4
    assert "target_positive" not in load("data.target=label").describe()  # unset: the cache keys stay as they were
    assert _y_and_s({"data": dm.describe()}) == (" (kind: Dog or not)", " (group)")  # the report's words

    with pytest.raises(ValueError, match=r"data.target_positive=dgo is not a value of target 'kind' "
                                         r"\(bird, cat, Dog\)"):
        load("data.target_positive=dgo")
    with pytest.raises(ValueError, match="data.target_threshold=40 and data.target_positive=Dog both make the target "
                                         "yes/no: set data.target_threshold=null"):
        load("data.target_positive=Dog", "data.target_threshold=40")
    with pytest.raises(ValueError, match=r"target 'kind' has values that are not numbers \(e.g. 'cat'\), so "
                                         r"data.target_threshold=40 cannot binarise it: data.target_threshold=null "
                                         "keeps its classes, data.target_positive=VALUE"):
        load("data.target_threshold=40")
    with pytest.raises(ValueError, match="data.target_threshold must be a number \\(e.g. 40\\) or null, got 'forty'"):
        load("data.target=score", "data.target_threshold=forty")  # it read "Invalid comparison between ..."


def test_a_list_written_on_windows_is_read_and_missing_paths_say_where_they_are_looked_for(tmp_path):
    path = make_manifest(tmp_path / "m")
    frame = pd.read_csv(path)
    data = ["data=manifest", "data.target=label", "data.sensitive=group", "data.split_column=split"]
    windows = tmp_path / "m" / "windows.csv"
    frame.assign(path=frame["path"].str.replace("/", "\\")).to_csv(windows, index=False)
    dm = build(compose_cfg("train", [*data, f"data.manifest={windows}"]).data)
    assert sum(len(dm.split(s)) for s in ("train", "val", "test")) == N
    moved = tmp_path / "m" / "moved.csv"
    frame.assign(path="elsewhere/" + frame["path"]).to_csv(moved, index=False)
    with pytest.raises(FileNotFoundError, match="paths are read relative to the list's folder"):
        build(compose_cfg("train", [*data, f"data.manifest={moved}"]).data)
    frame.assign(path="elsewhere\\" + frame["path"]).to_csv(moved, index=False)
    with pytest.raises(FileNotFoundError, match=r"its paths hold \\ \(a list written on Windows\): write them with /"):
        build(compose_cfg("train", [*data, f"data.manifest={moved}"]).data)
    # Paths written from the folder the user works in, as most tools read them: that is said.
    frame.assign(path="m/" + frame["path"]).to_csv(moved, index=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        with pytest.raises(FileNotFoundError, match=r"and these are found from the current folder \(e.g. "
                                                    r"m/imgs/0.jpg\): write them relative to .*/m/, or absolute"):
            build(compose_cfg("train", [*data, f"data.manifest={moved}"]).data)


def test_split_columns_as_datasets_ship_them(tmp_path, caplog):
    """Train and test only (many datasets): validation is a seeded tenth of train; it was "the val
    split is empty". Spelled out (Validation, training) is read; a missing test split is named."""
    path = make_manifest(tmp_path)
    frame = pd.read_csv(path)
    settings = ["data=manifest", f"data.manifest={path}", "data.target=label", "data.sensitive=group",
                "data.split_column=split"]
    frame["split"] = ["train" if i < 48 else "test" for i in range(N)]
    frame.to_csv(path, index=False)
    with caplog.at_level("WARNING"):
        dm = build(compose_cfg("train", settings).data)
    assert "has no 'val' rows: a seeded 10 % of the 'train' rows validate" in caplog.text
    sizes = {s: len(dm.split(s)) for s in ("train", "val", "test")}
    assert sizes["test"] == 12 and sizes["train"] + sizes["val"] == 48 and 1 <= sizes["val"] <= 12
    again = build(compose_cfg("train", settings).data)
    assert again.split("val").paths == dm.split("val").paths  # seeded
    frame["split"] = [" Training", "Validation", "TEST"] * (N // 3)
    frame.to_csv(path, index=False)
    assert len(build(compose_cfg("train", settings).data).split("val")) == N // 3
    frame["split"] = "train"
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match="split column 'split' has no 'test' rows; mark some, or leave"):
        build(compose_cfg("train", settings).data)
    # Test rows of one group: the evaluation after training cannot measure parity. Found before
    # the training now, where it was found after it.
    frame["split"] = ["train" if i < 48 or i % 2 == 0 else "test" for i in range(N)]
    frame.to_csv(path, index=False)
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=r"a single group \(b\) in the test split"):
        train(compose_cfg("train", [*settings, *SMALL], run_dir=run))
    assert not (run / "patch.safetensors").exists() and not (run / "checkpoints").exists()


def test_a_list_of_file_uris_is_read_and_web_addresses_are_named(tmp_path):
    """file:///data/a%20b.jpg (as some tools export lists) was "80 of 80 listed images are missing";
    an https:// list was the same, where nothing is downloaded."""
    path = make_manifest(tmp_path)
    frame = pd.read_csv(path)
    settings = ["data=manifest", f"data.manifest={path}", "data.target=label", "data.sensitive=group",
                "data.split_column=split"]
    (tmp_path / "imgs" / "0.jpg").rename(tmp_path / "imgs" / "zero one.jpg")
    frame.loc[0, "path"] = "imgs/zero one.jpg"
    frame["path"] = [(tmp_path / p).as_uri() for p in frame["path"]]
    frame.to_csv(path, index=False)
    assert "%20" in frame["path"][0]
    dm = build(compose_cfg("train", settings).data)
    assert str(tmp_path / "imgs" / "zero one.jpg") in map(str, dm.split("train").paths)
    frame["path"] = "https://example.com/" + frame["path"].str.rsplit("/", n=1).str[-1]
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"lists web addresses \(https://example.com/.*\); briarpatch never downloads"):
        build(compose_cfg("train", settings).data)


def test_phone_photos_in_heic_are_training_images(tmp_path, monkeypatch):
    """A list of iPhone photos: HEIC files were left out as "not images" (every row, here)."""
    import pillow_heif

    monkeypatch.setattr(Image, "ID", [kind for kind in Image.ID if kind != "HEIF"])  # as no other test opened one

    path = make_manifest(tmp_path)
    frame = pd.read_csv(path)
    for i, rel in enumerate(frame["path"]):
        with Image.open(tmp_path / rel) as img:
            pillow_heif.from_pillow(img.convert("RGB")).save(tmp_path / rel.replace(".jpg", ".heic"), quality=90)
        (tmp_path / rel).unlink()
    frame["path"] = frame["path"].str.replace(".jpg", ".heic")
    frame.to_csv(path, index=False)
    dm = build(compose_cfg("train", ["data=manifest", f"data.manifest={path}", "data.target=label",
                                     "data.sensitive=group", "data.split_column=split", "data.image_size=32"]).data)
    assert sum(len(dm.split(s)) for s in ("train", "val", "test")) == N
    image = dm.split("train")[0]["image"]
    assert image.shape == (3, 32, 32) and float(image.float().std()) > 10  # decoded: not a flat fill
