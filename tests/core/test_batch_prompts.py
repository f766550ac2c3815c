"""Prompt files of ``seglab batch sam``: the CSV and JSON forms and every refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_seglab.batch.prompts import check_prompts, match_names, read_prompts

HEADER = "image,object,kind,plane,row,col,row1,col1,label\n"


def write(tmp_path, text, name="prompts.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_groups_lines_into_objects_in_order_of_first_mention(tmp_path):
    path = write(
        tmp_path,
        HEADER
        + "cells,1,positive,,12,30.5,,,\n"
        + "cells,2,box,,5,5,20,25,7\n"
        + "cells,1,negative,,14,33,,,\n"
        + "\n"
        + "stack,a,positive,3,40,41,,,5\n"
        + "stack,a,box,3,30,30,50,50,5\n",
    )
    prompts = read_prompts(path)
    assert list(prompts.images) == ["cells", "stack"]
    first, second = prompts.images["cells"]
    assert first.key == "1"
    np.testing.assert_array_equal(first.points, [[12, 30.5], [14, 33]])
    np.testing.assert_array_equal(first.positive, [True, False])
    assert first.box is None
    assert first.plane is None
    assert first.label is None
    assert first.point_where == (f"{path} line 2", f"{path} line 4")
    np.testing.assert_array_equal(second.box, [5, 5, 20, 25])
    assert second.label == 7
    (obj,) = prompts.images["stack"]
    assert obj.plane == 3
    assert obj.label == 5
    np.testing.assert_array_equal(obj.points, [[40, 41]])
    assert prompts.digest.startswith("sha256:")


def test_csv_columns_in_any_order_and_optional_columns_left_out(tmp_path):
    path = write(tmp_path, "kind,col,row,object,image\npositive,4,3,o,img\n")
    (obj,) = read_prompts(path).images["img"]
    np.testing.assert_array_equal(obj.points, [[3, 4]])
    assert obj.plane is None


def test_json_form_matches_the_csv_form(tmp_path):
    document = {
        "images": {
            "cells": [
                {"positive": [[12, 30.5]], "negative": [[14, 33]]},
                {"box": [5, 5, 20, 25], "label": 7},
            ],
            "stack": [{"positive": [[3, 40, 41]], "box": [3, 30, 30, 50, 50], "label": 5}],
        }
    }
    from_json = read_prompts(write(tmp_path, json.dumps(document), "p.json"))
    from_csv = read_prompts(
        write(
            tmp_path,
            HEADER
            + "cells,0,positive,,12,30.5,,,\ncells,0,negative,,14,33,,,\n"
            + "cells,1,box,,5,5,20,25,7\n"
            + "stack,0,positive,3,40,41,,,5\nstack,0,box,3,30,30,50,50,5\n",
        )
    )
    for name in ("cells", "stack"):
        assert from_json.digest_for(name) == from_csv.digest_for(name)
    assert from_json.images["cells"][1].where.endswith("images['cells'][1]")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("cells,1,positive,,nan,3,,,\n", "line 2: row must be a finite number, got 'nan'"),
        ("cells,1,positive,,4,inf,,,\n", "line 2: col must be a finite number, got 'inf'"),
        ("cells,1,positive,,-1,3,,,\n", "line 2: row must not be negative, got '-1'"),
        ("cells,1,positive,,x,3,,,\n", "line 2: row must be a number, got 'x'"),
        ("cells,1,positive,1.5,4,3,,,\n", "line 2: plane must be an integer, got '1.5'"),
        ("cells,1,positive,-2,4,3,,,\n", "line 2: plane must be an integer >= 0, got '-2'"),
        ("cells,1,positive,,4,3,,,0\n", "line 2: label must be an integer >= 1, got '0'"),
        ("cells,1,click,,4,3,,,\n", "line 2: kind must be one of positive, negative, box"),
        (",1,positive,,4,3,,,\n", "line 2: the image name is empty"),
        ("cells,,positive,,4,3,,,\n", "line 2: the object name is empty"),
        ("cells,1,box,,4,3,9,,\n", "line 2: a box needs row1 and col1"),
        ("cells,1,positive,,4,3,9,9,\n", "line 2: row1/col1 are for boxes only"),
        ("cells,1,positive,,4,3,,\n", "line 2: expected 9 values"),
        ("cells,1,negative,,4,3,,,\n", "line 2: object '1' of image 'cells' has no positive"),
        (
            "cells,1,box,,4,3,9,9,\ncells,1,box,,1,1,5,5,\n",
            "line 3: object '1' of image 'cells' already has a box",
        ),
        (
            "st,1,positive,2,4,3,,,\nst,1,positive,3,5,3,,,\n",
            "line 3: object '1' of image 'st' is prompted on plane 2",
        ),
        (
            "st,1,positive,2,4,3,,,\nst,1,positive,,5,3,,,\n",
            "line 3: object '1' of image 'st' is prompted on plane 2",
        ),
        (
            "cells,1,positive,,4,3,,,2\ncells,1,positive,,5,3,,,3\n",
            "line 3: object '1' of image 'cells' has label 3 here and 2",
        ),
    ],
)
def test_csv_refusals_name_the_file_line_and_value(tmp_path, body, expected):
    path = write(tmp_path, HEADER + body)
    with pytest.raises(ValueError, match=r"prompts\.csv") as info:
        read_prompts(path)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("image,object,kind,row,colum\n", "unknown column(s) ['colum']"),
        ("image,object,row,col\n", "lacks the column(s) ['kind']"),
        ("image,object,kind,row,col,row\n", "column(s) ['row'] appear twice"),
        ("image,object,kind,row,col\n", "holds no prompts"),
    ],
)
def test_csv_header_refusals(tmp_path, text, expected):
    with pytest.raises(ValueError, match=r"prompts\.csv") as info:
        read_prompts(write(tmp_path, text))
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ('{"images": {"a": [{"positive": [[1, 2]]}]', "line 1: not valid JSON"),
        ('{"a": []}', 'expected an object {"images"'),
        ('{"images": []}', '"images" must map image names'),
        ('{"images": {"a": []}}', "images['a']: the image has no objects"),
        ('{"images": {"a": [], "a": []}}', "the key(s) ['a'] appear twice"),
        ('{"images": {"a": [{"positive": [[1, 2]], "class": 2}]}}', "unknown key(s) ['class']"),
        ('{"images": {"a": [{"positive": [[1]]}]}}', "images['a'][0]['positive'][0]: expected"),
        ('{"images": {"a": [{"positive": [[1, NaN]]}]}}', "must be a finite number"),
        ('{"images": {"a": [{"positive": [[1, -3]]}]}}', "must not be negative"),
        ('{"images": {"a": [{"positive": [[1, "3"]]}]}}', "of numbers, got [1, '3']"),
        ('{"images": {"a": [{"positive": [[1.5, 1, 3]]}]}}', "the plane must be an integer"),
        ('{"images": {"a": [{"box": [1, 2, 3]}]}}', "images['a'][0]['box']: expected"),
        ('{"images": {"a": [{"negative": [[1, 2]]}]}}', "has no positive point and no box"),
        ('{"images": {"a": [{"positive": [[1, 2]], "label": true}]}}', "label must be an int"),
        (
            '{"images": {"a": [{"positive": [[0, 1, 2]], "box": [1, 0, 0, 4, 4]}]}}',
            "is prompted on plane 0",
        ),
        (
            '{"images": {"a": [{"positive": [[1, 2], [0, 1, 2]]}]}}',
            "is prompted on plane (none)",
        ),
    ],
)
def test_json_refusals_name_the_file_and_location(tmp_path, document, expected):
    with pytest.raises(ValueError, match=r"p\.json") as info:
        read_prompts(write(tmp_path, document, "p.json"))
    assert expected in str(info.value)


def test_missing_file_and_other_suffixes_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothere\.csv"):
        read_prompts(tmp_path / "nothere.csv")
    with pytest.raises(ValueError, match=r"expected a \.csv or \.json file, got '\.txt'"):
        read_prompts(write(tmp_path, HEADER, "p.txt"))


def objects_of(tmp_path, body):
    return read_prompts(write(tmp_path, HEADER + body)).images["img"]


@pytest.mark.parametrize(
    ("body", "n_planes", "expected"),
    [
        ("img,1,positive,,20,3,,,\n", None, "line 2: point (row 20, col 3) lies outside"),
        ("img,1,positive,,3,19.5,,,\n", None, "line 2: point (row 3, col 19.5) lies outside"),
        ("img,1,box,,0,0,5,30,\n", None, "line 2: box corner (row 5, col 30) lies outside"),
        ("img,1,positive,2,3,3,,,\n", None, "plane 2 given for object '1', but the image 'img'"),
        ("img,1,positive,,3,3,,,\n", 4, "object '1' names no plane, but the image 'img'"),
        ("img,1,positive,4,3,3,,,\n", 4, "plane 4 of object '1' is outside the image 'img'"),
    ],
)
def test_prompts_outside_the_image_are_refused(tmp_path, body, n_planes, expected):
    objects = objects_of(tmp_path, body)
    with pytest.raises(ValueError, match=r"prompts\.csv line 2") as info:
        check_prompts(objects, (10, 20), n_planes, image="img")
    assert expected in str(info.value)
    assert "of shape" in str(info.value)


def test_prompts_on_the_edge_pixels_are_accepted(tmp_path):
    objects = objects_of(tmp_path, "img,1,positive,3,9,19,,,\nimg,1,box,3,0,0,9,19,\n")
    check_prompts(objects, (10, 20), 4, image="img")


def test_names_without_prompts_and_prompts_without_inputs_are_told(tmp_path):
    prompts = read_prompts(
        write(tmp_path, HEADER + "cells_01,1,positive,,1,1,,,\nother,1,positive,,1,1,,,\n")
    )
    match = match_names(prompts, ["cells_1", "other", "extra"])
    assert match.unknown == ["cells_01"]
    assert match.unprompted == ["cells_1", "extra"]
    text = match.describe(prompts.path, ["cells_1", "other", "extra"])
    assert "'cells_01' (did you mean 'cells_1'?)" in text
    assert "2 input(s) have no prompts" in text
    with pytest.raises(ValueError, match=r"No prompts for the image .extra. in .*prompts\.csv"):
        prompts.objects_for("extra")
