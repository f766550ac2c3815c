"""Batch inputs: files, folders, globs and list files become named items; pairing by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_seglab.batch.inputs import collect_items, item_name, pair_items
from napari_seglab.batch.pipeline import BatchItem


def _touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _dicom_folder(folder: Path) -> Path:
    """A folder with one file that has the DICOM preamble and magic."""
    return _touch(folder / "IM0001", b"\0" * 128 + b"DICM" + b"\0" * 16).parent


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ct_001.nii.gz", "ct_001"),
        ("ct_001.NII.GZ", "ct_001"),
        ("scan.nii", "scan"),
        ("cells.ome.tif", "cells"),
        ("cells.ome.tiff", "cells"),
        ("cells.ome.zarr", "cells"),
        ("volume.zarr", "volume"),
        ("a.b.tif", "a.b"),
        ("image.png", "image"),
        ("series_12", "series_12"),
    ],
)
def test_item_name_drops_the_format_suffix(name, expected):
    assert item_name(Path("/data") / name) == expected


def test_folder_expands_to_supported_files_stores_and_dicom_series(tmp_path):
    folder = tmp_path / "in"
    _touch(folder / "b.tif")
    _touch(folder / "a.nii.gz")
    _touch(folder / "notes.csv")  # not an image: skipped
    _touch(folder / ".hidden.tif")  # hidden: skipped
    _touch(folder / "list.txt")  # list files inside folders are not read
    (folder / "c.ome.zarr").mkdir()
    _dicom_folder(folder / "patient_7")
    (folder / "empty_sub").mkdir()  # a plain sub-folder is not entered
    items = collect_items([folder])
    assert [item.name for item in items] == ["a", "b", "c", "patient_7"]
    assert items[3].path == folder / "patient_7"
    assert all(item.extra == {} for item in items)


def test_a_dicom_folder_given_directly_is_one_item(tmp_path):
    series = _dicom_folder(tmp_path / "ct_series")
    _touch(series / "IM0002", b"\0" * 128 + b"DICM")
    [item] = collect_items([series])
    assert item == BatchItem("ct_series", series)


def test_globs_and_list_files(tmp_path):
    for name in ("x1.npy", "x2.npy", "y.tif"):
        _touch(tmp_path / "d" / name)
    items = collect_items([str(tmp_path / "d" / "x*.npy")])
    assert [i.name for i in items] == ["x1", "x2"]
    listing = tmp_path / "inputs.txt"
    listing.write_text("# my batch\nd/y.tif\n\n  d/x2.npy  \n")
    items = collect_items([listing])
    assert [i.path for i in items] == [tmp_path / "d" / "y.tif", tmp_path / "d" / "x2.npy"]


def test_same_path_twice_is_one_item_and_order_is_kept(tmp_path):
    a = _touch(tmp_path / "a.tif")
    b = _touch(tmp_path / "b.tif")
    items = collect_items([b, a, str(tmp_path / "*.tif")])
    assert [i.name for i in items] == ["b", "a"]


def test_duplicate_names_are_refused_naming_both_paths(tmp_path):
    first = _touch(tmp_path / "one" / "scan.nii.gz")
    second = _touch(tmp_path / "two" / "scan.tif")
    with pytest.raises(ValueError, match="same name 'scan'") as info:
        collect_items([first, second])
    assert str(first) in str(info.value)
    assert str(second) in str(info.value)


def test_missing_and_unsupported_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        collect_items([tmp_path / "nope.tif"])
    with pytest.raises(FileNotFoundError, match="matches"):
        collect_items([str(tmp_path / "*.nii.gz")])
    bad = _touch(tmp_path / "table.csv")
    with pytest.raises(ValueError, match="unsupported"):
        collect_items([bad])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no input"):
        collect_items([tmp_path / "empty"])
    with pytest.raises(ValueError, match="at least one"):
        collect_items([])
    listing = tmp_path / "l.txt"
    listing.write_text("missing.tif\n")
    with pytest.raises(FileNotFoundError, match="listed in"):
        collect_items([listing])


def test_report_figure_of_a_batch_output_folder_is_not_an_input(tmp_path):
    out = tmp_path / "out"
    np.save(_touch(out / "a_labels.npy").with_suffix(".npy"), np.zeros((2, 2)))
    _touch(out / "report.png")
    _touch(out / "manifest.json", b"{}")
    assert [i.name for i in collect_items([out])] == ["a_labels"]


def test_pair_items_matches_by_name_then_by_stripped_endings(tmp_path):
    preds = [
        BatchItem("ct_1_labels", tmp_path / "p" / "ct_1_labels.tif"),
        BatchItem("ct_2", tmp_path / "p" / "ct_2.tif"),
        BatchItem("ct_3_labels", tmp_path / "p" / "ct_3_labels.tif"),
    ]
    truths = [
        BatchItem("ct_1", tmp_path / "t" / "ct_1.nii.gz"),
        BatchItem("ct_2_gt", tmp_path / "t" / "ct_2_gt.tif"),
        BatchItem("ct_3_labels", tmp_path / "t" / "ct_3_labels.tif"),
        BatchItem("ct_9", tmp_path / "t" / "ct_9.tif"),  # no prediction: unused
    ]
    paired = pair_items(preds, truths)
    assert [p.name for p in paired] == ["ct_1_labels", "ct_2", "ct_3_labels"]
    assert paired[0].extra == {"truth": tmp_path / "t" / "ct_1.nii.gz"}
    assert paired[1].extra == {"truth": tmp_path / "t" / "ct_2_gt.tif"}
    assert paired[2].extra == {"truth": tmp_path / "t" / "ct_3_labels.tif"}  # exact name wins


def test_pair_items_unmatched_and_ambiguous(tmp_path):
    preds = [BatchItem("a", tmp_path / "a.tif"), BatchItem("b", tmp_path / "b.tif")]
    paired = pair_items(preds, [BatchItem("a", tmp_path / "t" / "a.tif")])
    assert paired[1].extra == {}  # its item fails with an error naming what was looked for
    with pytest.raises(ValueError, match="no prediction matches"):
        pair_items(preds, [BatchItem("zzz", tmp_path / "zzz.tif")])
    ambiguous = [BatchItem("a_gt", tmp_path / "a_gt.tif"), BatchItem("a_mask", tmp_path / "m.tif")]
    with pytest.raises(ValueError, match="two ground-truth files"):
        pair_items(preds, ambiguous)
