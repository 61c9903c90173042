"""convert/int8_ov.py: which photos calibrate a role (folders, tar archives, never a test split)."""

from __future__ import annotations

import io
import tarfile

import pytest

from convert import int8_ov


def _archive(path, names):
    with tarfile.open(path, "w:gz") as tar:
        for n in names:
            data = n.encode()
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_an_archive_gives_its_training_images_evenly_spaced(tmp_path):
    names = [f"train/cat/{i:03d}.jpg" for i in range(10)] + [f"test/cat/{i:03d}.jpg" for i in range(10)]
    arc = _archive(tmp_path / "set.tar.gz", [*names, "train/readme.txt"])
    got = int8_ov.photos([arc], 5)
    assert [body.decode() for _, body in got] == [f"train/cat/{i:03d}.jpg" for i in (0, 2, 4, 6, 8)]
    assert all(name.startswith("set.tar.gz:train/") for name, _ in got)


def test_folders_and_archives_share_the_limit(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i}.png").write_bytes(b"p%d" % i)
    (folder / "notes.txt").write_text("not an image")
    arc = _archive(tmp_path / "thumbs.tar.gz", [f"{i}.jpg" for i in range(8)])  # no train/: all of it
    got = int8_ov.photos([folder, arc], 5)
    assert [n for n, _ in got][:3] == ["0.png", "2.png", "4.png"] and len(got) == 5
    assert {n.split(":")[0] for n, _ in got[3:]} == {"thumbs.tar.gz"}


def test_no_photos_is_one_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no photos"):
        int8_ov.photos([tmp_path / "empty"], 3)


def test_each_role_has_its_own_default_calibration_data():
    assert set(int8_ov.DEFAULT_DATA) == {"standard", "hd"}
    assert all("voc07_val" not in str(p) for ps in int8_ov.DEFAULT_DATA.values() for p in ps)
    assert int8_ov.DEFAULT_DATA["standard"][0].name == "cifar10-jpg.tar.gz"
