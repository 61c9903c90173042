"""Without TensorFlow: safe unpickling, readers, alignment, cache, data report, training metrics."""

from __future__ import annotations

import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from training.data.cache import load_split, source_cache_dir
from training.data.datasets import (
    CIFAR10_CLASSES,
    CifarPickleSource,
    CsvSource,
    FolderSource,
    open_source,
    read_labels_csv,
)
from training.data.labels import (
    align_classes,
    align_labels,
    check_classes,
    parse_classes,
    select,
    split_train_val,
    stratified_order,
)
from training.data.report import build_report
from training.data.safe_pickle import UnsafePickleError, read_cifar_batch, safe_load
from training.data.synthetic import write_cifar_pickle, write_image_folder, write_labels_csv
from training.errors import DataError
from training.eval.metrics import bce, binary_accuracy, macro_auc, score, top1_accuracy


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


# --- safe unpickling -------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batch_roundtrip_planes_to_hwc(protocol: int) -> None:
    data = np.zeros((2, 3072), np.uint8)
    data[:, :1024], data[:, 1024:2048], data[:, 2048:] = 10, 20, 30  # R, G, B planes
    blob = pickle.dumps({b"data": data, b"labels": [3, 7], b"filenames": [b"a.png", b"b.png"]},
                        protocol=protocol)
    images, labels, names = read_cifar_batch(blob)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    assert images[0, 5, 7].tolist() == [10, 20, 30]
    assert labels == [3, 7] and names == ["a.png", "b.png"]


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafePickleError, match="posix.system|os.system|nt.system"):
        safe_load(pickle.dumps(_Evil(marker)))
    assert not marker.exists()
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        safe_load(b"cbuiltins\neval\n(S'1+1'\ntR.")  # eval('1+1'), protocol 0


def test_malicious_batch_in_a_cifar_folder_is_refused(tmp_path: Path) -> None:
    d = write_cifar_pickle(tmp_path, n_per_batch=4)
    marker = tmp_path / "pwned"
    (d / "data_batch_2").write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    src = open_source(d, tmp_path / "cache")
    with pytest.raises(DataError, match="refused to unpickle"):
        load_split(src, "train", tmp_path / "cache", progress=False)
    assert not marker.exists()


def test_plain_containers_load() -> None:
    obj = {b"a": [1, 2, b"x"], "b": ("s", 3)}
    assert safe_load(pickle.dumps(obj, protocol=2)) == obj


# --- readers ----------------------------------------------------------------

@pytest.mark.parametrize("archive", [False, True])
def test_cifar_pickle_source(tmp_path: Path, archive: bool) -> None:
    p = write_cifar_pickle(tmp_path, n_per_batch=6, archive=archive)
    src = open_source(p, tmp_path / "cache")
    assert isinstance(src, CifarPickleSource)
    assert src.classes == list(CIFAR10_CLASSES) and src.splits == ["train", "test"]
    train = load_split(src, "train", tmp_path / "cache", progress=False)
    test = load_split(src, "test", tmp_path / "cache", progress=False)
    assert len(train) == 30 and len(test) == 6
    assert train.uniform_shape == (32, 32) and train.labels.sum(axis=1).tolist() == [1] * 30
    assert isinstance(train.pixels, np.memmap)


def test_folder_source_and_tar(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "wrap" / "set", n_per_class=3)
    src = open_source(root)
    assert isinstance(src, FolderSource)
    assert src.classes == ["cat", "dog", "ship"] and src.splits == ["train", "test"]
    arc = tmp_path / "set.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        tf.add(tmp_path / "wrap", arcname="wrap")
    s1 = open_source(arc, tmp_path / "cache")
    s2 = open_source(arc, tmp_path / "cache")
    assert isinstance(s1, FolderSource) and s1.path == s2.path
    assert (tmp_path / "cache" / "extracted") in s1.path.parents
    assert len(load_split(s1, "train", tmp_path / "cache", progress=False)) == 9


def test_missing_path_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        open_source(tmp_path / "nope")


# --- labels CSV and class alignment ----------------------------------------

def _voc_like(tmp_path: Path) -> Path:
    rows = [("images/a.jpg", ["dog"]), ("images/b.jpg", ["cat", "dog"]),
            ("images/c.jpg", []), ("images/d.jpg", ["airplane"])]
    return write_labels_csv(tmp_path / "voc", rows, ["airplane", "cat", "dog"])


def test_labels_csv_alignment(tmp_path: Path) -> None:
    csv_path = _voc_like(tmp_path)
    assert read_labels_csv(csv_path)[1] == ("images/b.jpg", ("cat", "dog"))
    src = open_source(csv_path.parent)
    assert isinstance(src, CsvSource) and src.classes == ["airplane", "cat", "dog"]
    sp = load_split(src, "all", tmp_path / "cache", progress=False)
    assert sp.uniform_shape is None and sp.image(2).ndim == 3
    targets, known = align_labels(sp.labels, list(CIFAR10_CLASSES), sp.classes)
    # model order is CIFAR's; VOC-like sets do not label truck/deer/frog etc.: unknown
    assert known.tolist() == [c in ("airplane", "cat", "dog") for c in CIFAR10_CLASSES]
    cat, dog = CIFAR10_CLASSES.index("cat"), CIFAR10_CLASSES.index("dog")
    assert targets[1, [cat, dog]].tolist() == [1, 1] and targets[1].sum() == 2
    assert targets[2].sum() == 0


def test_align_classes_by_name() -> None:
    index, known = align_classes(["dog", "Truck", "bird"], ["bird", "cat", "dog"])
    assert index.tolist() == [2, -1, 0] and known.tolist() == [True, False, True]


def test_select_negatives_and_subset() -> None:
    labels = np.eye(4, dtype=np.uint8)[[0, 1, 2, 3, 0, 1]]
    classes = ["a", "b", "c", "d"]
    with_neg = select(labels, classes, ["c", "a"], negatives=True)
    without = select(labels, classes, ["c", "a"], negatives=False)
    assert len(with_neg) == 6 and len(without) == 3
    assert without.targets.tolist() == [[0, 1], [1, 0], [0, 1]]
    assert (with_neg.targets.sum(axis=1) == 0).sum() == 3


def test_parse_and_check_classes() -> None:
    assert parse_classes("Dog, automobile,bird") == ["dog", "automobile", "bird"]
    assert parse_classes(None) is None
    with pytest.raises(DataError, match="twice"):
        parse_classes("dog,dog")
    with pytest.raises(DataError, match="unicorn"):
        check_classes(["dog", "unicorn"], CIFAR10_CLASSES)


def test_csv_with_unknown_label_in_vocab(tmp_path: Path) -> None:
    csv_path = _voc_like(tmp_path)
    (csv_path.parent / "classes.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match="airplane"):
        open_source(csv_path)


def test_stratified_split_is_balanced() -> None:
    labels = np.eye(3, dtype=np.float32)[np.repeat([0, 1, 2], [60, 30, 10])]
    order = stratified_order(labels, seed=1)
    assert sorted(order.tolist()) == list(range(100))
    assert np.bincount(labels[order[:10]].argmax(1), minlength=3).tolist() == [6, 3, 1]
    sel = select(labels, ["a", "b", "c"], ["a", "b", "c"])
    tr, va = split_train_val(sel, 0.2, seed=0)
    assert len(tr) == 80 and len(va) == 20 and not set(tr.indices) & set(va.indices)
    assert va.targets.sum(axis=0).tolist() == [12, 6, 2]


# --- cache ------------------------------------------------------------------

def test_cache_reused_then_invalidated(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "set", n_per_class=2)
    cache = tmp_path / "cache"
    sp1 = load_split(open_source(root), "train", cache, progress=False)
    stamp = (sp1.directory / "train.pixels.npy").stat().st_mtime_ns
    sp2 = load_split(open_source(root), "train", cache, progress=False)
    assert sp2.directory == sp1.directory
    assert (sp2.directory / "train.pixels.npy").stat().st_mtime_ns == stamp  # not rebuilt
    # change the source: one more image, of another size
    write_image_folder(tmp_path / "extra", classes=("dog",), n_per_class=1, size=(40, 36),
                       splits=("train",))
    shutil.copy(tmp_path / "extra/train/dog/0000.png", root / "train/dog/9999.png")
    src = open_source(root)
    assert source_cache_dir(src, cache) != sp1.directory
    sp3 = load_split(src, "train", cache, progress=False)
    assert len(sp3) == len(sp1) + 1 and sp3.uniform_shape is None
    assert sp3.image(len(sp3) - 1).shape in ((40, 36, 3), (32, 32, 3))
    assert not sp1.directory.exists()  # stale cache removed
    # same file count, changed content (size) also invalidates
    (root / "train/cat/0000.png").write_bytes((root / "train/dog/9999.png").read_bytes())
    assert source_cache_dir(open_source(root), cache) != sp3.directory


def test_report_drops_bad_files_and_finds_duplicates(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "set", n_per_class=3)
    (root / "train/cat/empty.jpg").write_bytes(b"")
    (root / "train/dog/broken.jpg").write_bytes(b"not an image at all")
    shutil.copy(root / "train/cat/0001.png", root / "test/ship/leak.png")  # cross-split dup
    rep = build_report(open_source(root), tmp_path / "cache", progress=False)
    dropped = {d["id"]: d["reason"] for d in rep.dropped["train"]}
    assert dropped == {"train/cat/empty.jpg": "empty file", "train/dog/broken.jpg": "undecodable"}
    assert rep.totals == {"train": 9, "test": 10}
    assert len(rep.duplicates) == 1 and rep.duplicates[0]["cross_split"]
    assert rep.duplicates[0]["conflicting_labels"]
    md = rep.markdown("data_report.png")
    assert "empty.jpg" in md and "leak.png" in md and "| cat | 3 | 3 |" in md


def test_data_report_cli(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from training.commands.data import data

    root = write_image_folder(tmp_path / "set", n_per_class=2)
    res = CliRunner().invoke(data, ["report", str(root), "--out", str(tmp_path / "rep"),
                                    "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rep/data_report.md").read_text().startswith("# Data report")
    assert (tmp_path / "rep/data_report.png").stat().st_size > 1000
    res = CliRunner().invoke(data, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 1 and res.output.strip().count("\n") == 0
    assert "data not found" in res.output


# --- metrics (pure) -----------------------------------------------------------

def test_metrics() -> None:
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0]], np.float32)
    p = np.array([[0.9, 0.2, 0.1], [0.6, 0.7, 0.1], [0.1, 0.2, 0.3], [0.8, 0.9, 0.1]])
    assert top1_accuracy(y, p) == 1.0  # rows with exactly one label only
    assert top1_accuracy(y, np.array([[0.1, 0.9, 0], [0.9, 0.1, 0], [0, 0, 0], [0, 0, 0]])) == 0.0
    assert macro_auc(y, p) == 1.0  # class 3 has no positives: skipped
    assert binary_accuracy(y, p) == pytest.approx(11 / 12)
    known = np.array([True, True, False])
    assert bce(y, p, known) == pytest.approx(
        float(np.mean(-(y[:, :2] * np.log(p[:, :2]) + (1 - y[:, :2]) * np.log(1 - p[:, :2])))))
    s = score(y, p)
    assert set(s) >= {"top1", "auc", "loss", "binary_accuracy"} and s["n_single_label"] == 2


def test_limit_keeps_a_stratified_subset() -> None:
    labels = np.eye(3, dtype=np.uint8)[np.arange(300) % 3]
    sel = select(labels, ["a", "b", "c"], ["a", "b", "c"], limit=30, seed=4)
    assert len(sel) == 30 and sel.targets.sum(axis=0).tolist() == [10, 10, 10]
    assert np.all(np.diff(sel.indices) > 0)
