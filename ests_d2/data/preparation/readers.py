"""Readers of the native annotation formats of public text datasets and of common generic formats.

Every reader takes one annotation file and returns ``NativeImage`` records in the file's own point order; the
``FORMATS`` table says how each format's rings start and split (see ``bezier_fit``). A malformed file raises
``NativeFormatError`` naming the file and the line (or element). Files are UTF-8; a leading BOM is dropped
(ICDAR2015 training files, MLT, Windows tools).
"""
import csv
import json
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

DONT_CARE = "###"


class NativeFormatError(ValueError):
    """A malformed native annotation file; the message starts with ``file:line``."""


@dataclass
class NativeText:
    """One annotated text instance: vertices (n, 2) in the file's order, transcription, don't-care flag."""

    points: np.ndarray
    text: str
    dont_care: bool
    where: str  # "file:line" for messages


@dataclass
class NativeImage:
    """The instances of one image. ``image`` is the image file named by the annotation itself (LabelMe,
    CTW1500 xml, CSV, JSONL), or None when it is found from the annotation file's name."""

    annotation_file: str
    instances: List[NativeText] = field(default_factory=list)
    image: Optional[str] = None
    image_id: Optional[int] = None


def _read_lines(path: str) -> List[str]:
    try:
        with open(path, encoding="utf-8-sig") as f:  # utf-8-sig drops one leading BOM
            return f.read().splitlines()
    except UnicodeDecodeError as e:
        raise NativeFormatError(f"{path}: not UTF-8 text ({e})") from e


def _numbers(values: List[str], where: str, what: str) -> np.ndarray:
    try:
        nums = np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        raise NativeFormatError(f"{where}: {what} must be numbers, got {values!r}") from None
    if not np.isfinite(nums).all():
        raise NativeFormatError(f"{where}: {what} contain NaN or infinity")
    return nums


def _instance(coords: np.ndarray, text: str, where: str, dont_care: Optional[bool] = None) -> NativeText:
    if coords.size % 2 or coords.size < 8:
        raise NativeFormatError(f"{where}: needs an even number >= 8 of coordinates (4+ points), got {coords.size}")
    if dont_care is None:
        dont_care = text == DONT_CARE
    return NativeText(coords.reshape(-1, 2), text, bool(dont_care), where)


def read_icdar_quads(path: str, script_field: bool = False) -> List[NativeImage]:
    """ICDAR2015 / VinText ``x1,y1,...,x4,y4,text`` and MLT17/19 ``x1,...,y4,script,text``.

    The transcription is everything after the 8th (MLT: 9th) comma, so it may hold commas; ``###`` = don't care.
    """
    fields = 10 if script_field else 9
    image = NativeImage(path)
    for k, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{k}"
        parts = line.split(",", fields - 1)
        if len(parts) < fields:
            layout = "x1,y1,...,x4,y4,script,text" if script_field else "x1,y1,...,x4,y4,text"
            raise NativeFormatError(f"{where}: expected {layout}, got {line!r}")
        image.instances.append(_instance(_numbers(parts[:8], where, "coordinates"), parts[-1], where))
    return [image]


_IC13_LINE = re.compile(r"^\s*([-\d.]+)[,\s]\s*([-\d.]+)[,\s]\s*([-\d.]+)[,\s]\s*([-\d.]+)[,\s]\s*(.*?)\s*$")


def read_icdar2013(path: str) -> List[NativeImage]:
    """ICDAR2013 (RRC challenge 2) boxes ``xmin ymin xmax ymax "text"`` (train) or ``xmin, ymin, xmax, ymax,
    "text"`` (test); the quotes are removed and the box becomes a clockwise quadrilateral."""
    image = NativeImage(path)
    for k, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{k}"
        m = _IC13_LINE.match(line)
        if m is None:
            raise NativeFormatError(f"{where}: expected 'xmin ymin xmax ymax \"text\"', got {line!r}")
        x0, y0, x1, y1 = _numbers(list(m.groups()[:4]), where, "box coordinates")
        text = m.group(5)
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        image.instances.append(_instance(np.array([x0, y0, x1, y0, x1, y1, x0, y1]), text, where))
    return [image]


def read_point_list(path: str) -> List[NativeImage]:
    """``x1,y1,...,xn,yn,####text``: the official eval zips' members (Total-Text, CTW1500) and the CTW1500
    14-point text labels. ``###`` = don't care."""
    image = NativeImage(path)
    for k, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{k}"
        if ",####" not in line:
            hint = (" (32 numbers: the detection-only CTW1500 text_label_curve format, which has no transcriptions;"
                    " use the xml labels or the '####text' files)") if line.count(",") == 31 else ""
            raise NativeFormatError(f"{where}: no ',####' before the transcription{hint}")
        coords, text = line.split(",####", 1)
        image.instances.append(_instance(_numbers(coords.split(","), where, "coordinates"), text, where))
    return [image]


_TT_ENTRY = re.compile(
    r"x:\s*\[\[(?P<x>[^\]]*)\]\],\s*y:\s*\[\[(?P<y>[^\]]*)\]\],\s*ornt:\s*\[u?(?P<oq>['\"])(?P<ornt>.*?)(?P=oq)\],"
    r"\s*transcriptions:\s*\[u?(?P<tq>['\"])(?P<text>.*)(?P=tq)\]\s*$", re.S)


def read_totaltext_polygons(path: str) -> List[NativeImage]:
    """Total-Text ``poly_gt_*.txt``: ``x: [[...]], y: [[...]], ornt: [u'c'], transcriptions: [u'TEXT']``.

    Long coordinate lists wrap onto continuation lines (numpy printing), so an entry runs until the next line
    that starts with ``x:``. ``ornt`` ``#`` or transcription ``#`` = don't care."""
    entries = []  # (first line number, text of the entry)
    for k, line in enumerate(_read_lines(path), 1):
        if line.lstrip().startswith("x:"):
            entries.append((k, line))
        elif line.strip():
            if not entries:
                raise NativeFormatError(f"{path}:{k}: expected an entry starting with 'x: [[', got {line!r}")
            entries[-1] = (entries[-1][0], entries[-1][1] + " " + line)
    image = NativeImage(path)
    for k, entry in entries:
        where = f"{path}:{k}"
        m = _TT_ENTRY.match(entry.strip())
        if m is None:
            raise NativeFormatError(f"{where}: expected 'x: [[...]], y: [[...]], ornt: [...], transcriptions: [...]'")
        xs = _numbers(m.group("x").split(), where, "x values")
        ys = _numbers(m.group("y").split(), where, "y values")
        if len(xs) != len(ys):
            raise NativeFormatError(f"{where}: {len(xs)} x values but {len(ys)} y values")
        text = m.group("text")
        dont_care = m.group("ornt") == "#" or text in ("#", DONT_CARE)
        image.instances.append(_instance(np.stack([xs, ys], 1).reshape(-1), DONT_CARE if dont_care else text,
                                         where, dont_care))
    return [image]


def read_ctw1500_xml(path: str) -> List[NativeImage]:
    """SCUT-CTW1500 training labels (xml): ``<image file=...><box ...><label>TEXT</label><segs>x1,y1,...,
    x14,y14</segs>``; the 14 points run clockwise from the top-left corner (7 on each long side)."""
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as e:
        raise NativeFormatError(f"{path}:{e.position[0]}: not well-formed xml ({e})") from None
    images = []
    for i, img in enumerate(root.iter("image"), 1):
        file_name = img.get("file")
        if not file_name:
            raise NativeFormatError(f"{path}: <image> number {i} has no 'file' attribute")
        image = NativeImage(path, image=file_name)
        for j, box in enumerate(img.iter("box"), 1):
            where = f"{path}: image '{file_name}' box {j}"
            segs, label = box.findtext("segs"), box.findtext("label")
            if segs is None or label is None:
                raise NativeFormatError(f"{where}: needs <segs> and <label>")
            image.instances.append(_instance(_numbers(segs.split(","), where, "<segs>"), label, where))
        images.append(image)
    if not images:
        raise NativeFormatError(f"{path}: no <image> element")
    return images


def read_labelme(path: str) -> List[NativeImage]:
    """LabelMe json: ``imagePath`` and ``shapes`` (``polygon`` or ``rectangle``); the label is the transcription
    (``###`` = don't care). Other shape types (points, lines, circles) are refused."""
    data = _load_json(path)
    if "shapes" not in data or "imagePath" not in data:
        raise NativeFormatError(f"{path}: not a LabelMe file (needs 'imagePath' and 'shapes')")
    image = NativeImage(path, image=data["imagePath"])
    for j, shape in enumerate(data["shapes"], 1):
        where = f"{path}: shape {j}"
        kind = shape.get("shape_type", "polygon")
        points = _numbers([v for p in shape.get("points", []) for v in p], where, "points")
        if kind == "rectangle" and points.size == 4:
            x0, y0, x1, y1 = points
            points = np.array([min(x0, x1), min(y0, y1), max(x0, x1), min(y0, y1),
                               max(x0, x1), max(y0, y1), min(x0, x1), max(y0, y1)])
        elif kind != "polygon":
            raise NativeFormatError(f"{where}: shape_type '{kind}' is not a text region (use polygon or rectangle)")
        image.instances.append(_instance(points, str(shape.get("label", "")), where))
    return [image]


def _load_json(path: str):
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise NativeFormatError(f"{path}:{e.lineno}: not valid json ({e.msg})") from None


def _generic_record(row: Dict, where: str, images: Dict[str, NativeImage], path: str) -> None:
    """One CSV row / JSONL object: ``image`` + ``polygon`` + ``text`` [+ ``dont_care``, ``image_id``], or
    ``image`` + ``instances`` (a list of such objects) for a whole image."""
    name = row.get("image")
    if not name:
        raise NativeFormatError(f"{where}: missing 'image'")
    image = images.setdefault(name, NativeImage(path, image=name))
    if row.get("image_id") not in (None, ""):
        image.image_id = int(row["image_id"])
    instances = row["instances"] if "instances" in row else ([row] if row.get("polygon") not in (None, "") else [])
    for j, inst in enumerate(instances, 1):
        here = where if "instances" not in row else f"{where} instance {j}"
        polygon = inst.get("polygon")
        if isinstance(polygon, str):  # CSV: "x1 y1 x2 y2 ..." (spaces, commas or a json list)
            polygon = re.split(r"[\s,;\[\]]+", polygon.strip(" []"))
        if not isinstance(polygon, list) or "text" not in inst:
            raise NativeFormatError(f"{here}: needs 'polygon' (x1 y1 x2 y2 ...) and 'text'")
        flat = [v for p in polygon for v in (p if isinstance(p, (list, tuple)) else [p])]
        text = str(inst["text"])
        flag = inst.get("dont_care")
        dont_care = None if flag in (None, "") else str(flag).lower() in ("1", "true", "yes")
        image.instances.append(_instance(_numbers(flat, here, "polygon"), text, here, dont_care))


def read_jsonl(path: str) -> List[NativeImage]:
    """One json object per line (see ``_generic_record``)."""
    images: Dict[str, NativeImage] = {}
    for k, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise NativeFormatError(f"{path}:{k}: not valid json ({e.msg})") from None
        if not isinstance(row, dict):
            raise NativeFormatError(f"{path}:{k}: expected a json object")
        _generic_record(row, f"{path}:{k}", images, path)
    return list(images.values())


def read_csv(path: str) -> List[NativeImage]:
    """CSV with a header row: ``image,polygon,text`` [``,dont_care,image_id``]; ``polygon`` holds the
    coordinates separated by spaces (quote the cell if it uses commas)."""
    images: Dict[str, NativeImage] = {}
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"image", "polygon", "text"} - set(reader.fieldnames or [])
        if missing:
            raise NativeFormatError(f"{path}:1: header lacks column(s) {sorted(missing)}")
        for row in reader:
            _generic_record(row, f"{path}:{reader.line_num}", images, path)
    return list(images.values())


@dataclass(frozen=True)
class FormatSpec:
    """How to read a format: the reader, its annotation files, where its rings start, how they split, and the
    evaluation protocol its test sets use."""

    read: Callable[[str], List[NativeImage]]
    suffix: str
    start: str
    split: str
    protocol: str = "generic"
    doc: str = ""


FORMATS: Dict[str, FormatSpec] = {
    "icdar2015": FormatSpec(read_icdar_quads, ".txt", "first", "half", "icdar2015",
                            "ICDAR2015 gt_img_N.txt: x1,y1,...,x4,y4,text"),
    "vintext": FormatSpec(read_icdar_quads, ".txt", "first", "half", "generic",
                          "VinText gt_N.txt: x1,y1,...,x4,y4,text (UTF-8 Vietnamese)"),
    "mlt": FormatSpec(lambda p: read_icdar_quads(p, script_field=True), ".txt", "first", "half", "generic",
                      "MLT 2017/2019 gt_*.txt: x1,y1,...,x4,y4,script,text"),
    "icdar2013": FormatSpec(read_icdar2013, ".txt", "first", "half", "generic",
                            'ICDAR2013 gt_*.txt: xmin ymin xmax ymax "text"'),
    "totaltext": FormatSpec(read_totaltext_polygons, ".txt", "first", "corners", "totaltext",
                            "Total-Text poly_gt_*.txt: x: [[..]], y: [[..]], ornt: [..], transcriptions: [..]"),
    "totaltext-points": FormatSpec(read_point_list, ".txt", "last", "corners", "totaltext",
                                   "Total-Text eval-zip members: x1,y1,...,xn,yn,####text"),
    "ctw1500": FormatSpec(read_point_list, ".txt", "last", "half", "ctw1500",
                          "CTW1500 14-point labels / eval-zip members: x1,y1,...,x14,y14,####text"),
    "ctw1500-xml": FormatSpec(read_ctw1500_xml, ".xml", "first", "half", "ctw1500",
                              "CTW1500 training labels: <image file><box><label/><segs/></box></image>"),
    "labelme": FormatSpec(read_labelme, ".json", "auto", "corners", "generic",
                          "LabelMe json (one per image): label = transcription"),
    "csv": FormatSpec(read_csv, ".csv", "auto", "corners", "generic", "CSV: image,polygon,text[,dont_care,image_id]"),
    "jsonl": FormatSpec(read_jsonl, ".jsonl", "auto", "corners", "generic",
                        'JSONL: {"image", "polygon", "text"[, "dont_care", "image_id"]} per line'),
}
