"""The native-format readers: each format's quirks on small files written here, and malformed files named."""
import json

import numpy as np
import pytest

from ests_d2.data.preparation.readers import (FORMATS, NativeFormatError, read_csv, read_ctw1500_xml,
                                              read_icdar2013, read_icdar_quads, read_jsonl, read_labelme,
                                              read_point_list, read_totaltext_polygons)

BOM = "\ufeff"


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _one_image(images):
    assert len(images) == 1
    return images[0].instances


def test_icdar2015_bom_commas_in_text_and_dont_care(tmp_path):
    path = _write(tmp_path, "gt_img_1.txt", BOM + "1,2,30,2,30,20,1,20,Hello, world\n\n5,5,9,5,9,9,5,9,###\r\n")
    first, second = _one_image(read_icdar_quads(path))
    np.testing.assert_array_equal(first.points, [[1, 2], [30, 2], [30, 20], [1, 20]])
    assert (first.text, first.dont_care, first.where) == ("Hello, world", False, f"{path}:1")
    assert (second.text, second.dont_care, second.where) == ("###", True, f"{path}:3")


def test_vintext_utf8_text_is_kept(tmp_path):
    path = _write(tmp_path, "gt_1.txt", "1,2,30,2,30,20,1,20,PHỞ,BÒ\n")
    assert _one_image(FORMATS["vintext"].read(path))[0].text == "PHỞ,BÒ"


def test_mlt_script_field_is_dropped(tmp_path):
    path = _write(tmp_path, "gt_img_1.txt", BOM + "1,2,30,2,30,20,1,20,Latin,a,b\n1,2,30,2,30,20,1,20,None,###\n")
    first, second = _one_image(FORMATS["mlt"].read(path))
    assert (first.text, second.text, second.dont_care) == ("a,b", "###", True)


def test_icdar2013_train_and_test_layouts(tmp_path):
    path = _write(tmp_path, "gt_100.txt", '38 43 920 215 "Tiredness"\n10, 20, 30, 40, "say \\"hi\\""\n')
    first, second = _one_image(read_icdar2013(path))
    np.testing.assert_array_equal(first.points, [[38, 43], [920, 43], [920, 215], [38, 215]])
    assert (first.text, second.text) == ("Tiredness", 'say "hi"')


def test_point_list_any_length_and_dont_care(tmp_path):
    path = _write(tmp_path, "0000001.txt", "1,1,9,1,9,5,5,6,1,5,####a,b ####c\n1,1,9,1,9,5,1,5,#######\n")
    first, second = _one_image(read_point_list(path))
    assert first.points.shape == (5, 2) and first.text == "a,b ####c"
    assert second.text == "###" and second.dont_care


def test_point_list_names_the_detection_only_ctw1500_format(tmp_path):
    path = _write(tmp_path, "0001.txt", ",".join(["1"] * 32) + "\n")
    with pytest.raises(NativeFormatError, match=r"0001.txt:1: .*text_label_curve"):
        read_point_list(path)


def test_totaltext_polygon_txt_with_wrapped_lines_quotes_and_dont_care(tmp_path):
    text = ("x: [[115 503 494 115]], y: [[322 346 426 404]], ornt: [u'm'], transcriptions: [u'nauGHTY']\n"
            "x: [[ 10  20  30  40  50  60\n   70  80]], y: [[1 2 3 4 5 6\n   7 8]], ornt: [u'c'], "
            "transcriptions: [u\"don't\"]\n"
            "x: [[1 5 5 1]], y: [[1 1 5 5]], ornt: [u'#'], transcriptions: [u'#']\n")
    path = _write(tmp_path, "poly_gt_img11.txt", text)
    first, second, third = _one_image(read_totaltext_polygons(path))
    np.testing.assert_array_equal(first.points, [[115, 322], [503, 346], [494, 426], [115, 404]])
    assert second.points.shape == (8, 2) and second.text == "don't" and second.where.endswith(":2")
    assert third.dont_care and third.text == "###"


def test_ctw1500_xml(tmp_path):
    segs = ",".join(str(v) for v in range(28))
    xml = (f'<Annotations><image file="0200.jpg"><box height="1" left="1" top="1" width="1"><label>OLATHE</label>'
           f'<segs>{segs}</segs><pts x="1" y="2" /></box><box><label>###</label><segs>{segs}</segs></box>'
           f'</image></Annotations>')
    (image,) = read_ctw1500_xml(_write(tmp_path, "0200.xml", xml))
    assert image.image == "0200.jpg" and [i.text for i in image.instances] == ["OLATHE", "###"]
    assert image.instances[0].points.shape == (14, 2) and image.instances[1].dont_care


def test_labelme_polygon_and_rectangle(tmp_path):
    data = {"imagePath": "../images/a.jpg", "imageHeight": 10, "imageWidth": 10, "shapes": [
        {"label": "HI", "points": [[1, 1], [9, 1], [9, 5], [1, 5]], "shape_type": "polygon"},
        {"label": "###", "points": [[8, 9], [2, 6]], "shape_type": "rectangle"}]}
    (image,) = read_labelme(_write(tmp_path, "a.json", json.dumps(data)))
    assert image.image == "../images/a.jpg"
    np.testing.assert_array_equal(image.instances[1].points, [[2, 6], [8, 6], [8, 9], [2, 9]])
    assert image.instances[1].dont_care


def test_csv_and_jsonl(tmp_path):
    csv_path = _write(tmp_path, "labels.csv", 'image,polygon,text,dont_care\na.jpg,1 1 9 1 9 5 1 5,"x, y",0\n'
                                              'a.jpg,"[[1,1],[9,1],[9,5],[1,5]]",z,1\nb.jpg,,,\n')
    images = read_csv(csv_path)
    assert [im.image for im in images] == ["a.jpg", "b.jpg"] and images[1].instances == []
    assert [i.text for i in images[0].instances] == ["x, y", "z"] and images[0].instances[1].dont_care
    jsonl_path = _write(tmp_path, "labels.jsonl",
                        '{"image": "a.jpg", "polygon": [1,1,9,1,9,5,1,5], "text": "x", "image_id": 7}\n'
                        '{"image": "b.jpg", "instances": [{"polygon": [[1,1],[9,1],[9,5],[1,5]], "text": "###"}]}\n')
    a, b = read_jsonl(jsonl_path)
    assert a.image_id == 7 and a.instances[0].text == "x" and b.instances[0].dont_care


@pytest.mark.parametrize("fmt, name, text, message", [
    ("icdar2015", "gt_img_1.txt", "1,2,3,4,5,6,7,8,ok\n1,2,3,4,5,6,7,x,bad\n",
     r"gt_img_1.txt:2: coordinates must be numbers"),
    ("icdar2015", "gt_img_1.txt", "1,2,3,4,5,6,7,8,ok\n\n1,2,3,4,5\n", r"gt_img_1.txt:3: expected x1,y1"),
    ("mlt", "gt_img_1.txt", "1,2,3,4,5,6,7,8,Latin\n", r"gt_img_1.txt:1: expected x1,y1,...,x4,y4,script,text"),
    ("icdar2013", "gt_1.txt", 'ab cd ef gh "x"\n', r"gt_1.txt:1: expected 'xmin ymin"),
    ("totaltext-points", "0000001.txt", "1,2,3,4,5,6,7,####odd\n", r"0000001.txt:1: needs an even number"),
    ("totaltext-points", "0000001.txt", "1,2,3,4,5,6,####tri\n", r"0000001.txt:1: needs an even number >= 8"),
    ("totaltext", "poly_gt_1.txt", "x: [[1 2 3 4]], y: [[1 2 3]], ornt: [u'm'], transcriptions: [u'a']\n",
     r"poly_gt_1.txt:1: 4 x values but 3 y values"),
    ("totaltext", "poly_gt_1.txt", "garbage\n", r"poly_gt_1.txt:1: expected an entry"),
    ("ctw1500-xml", "0001.xml", "<Annotations><image file='a.jpg'><box>", r"0001.xml:1: not well-formed xml"),
    ("labelme", "a.json", '{"imagePath": "a.jpg", "shapes": [{"points": [[1, 1]], "shape_type": "circle"}]}',
     r"a.json: shape 1: shape_type 'circle'"),
    ("jsonl", "l.jsonl", '{"image": "a.jpg", "polygon": [1,1,2,2,3,3,4,4], "text": "a"}\n{"image": \n',
     r"l.jsonl:2: not valid json"),
    ("csv", "l.csv", "image,text\na.jpg,x\n", r"l.csv:1: header lacks column\(s\) \['polygon'\]"),
])
def test_malformed_files_name_the_file_and_line(tmp_path, fmt, name, text, message):
    path = _write(tmp_path, name, text)
    with pytest.raises(NativeFormatError, match=message):
        FORMATS[fmt].read(path)


def test_non_utf8_file_is_named(tmp_path):
    path = tmp_path / "gt_img_1.txt"
    path.write_bytes(b"1,2,3,4,5,6,7,8,\xff\xfe\n")
    with pytest.raises(NativeFormatError, match="gt_img_1.txt: not UTF-8"):
        read_icdar_quads(str(path))
