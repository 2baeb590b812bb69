"""The official per-image text files (``x1,y1,...,xn,yn,####text``) and their zips.

Reading follows the official RRC helpers used by ``text_eval_script.py`` (docs/EVALUATION.md step 5):
members are keyed by the digit group of ``re.match('([0-9]+).txt', name)`` as a *string*, contents are
UTF-8 (undecodable bytes replaced, one leading BOM dropped), lines split on ``\\n`` with ``\\r`` removed,
and each line is cut at ``,####`` with a double-quoted transcription unwrapped.
"""
import codecs
import os
import re
import zipfile
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence

import numpy as np

MEMBER_PATTERN = re.compile(r"([0-9]+).txt")  # the official regex: '.' is any character, anchored at start
_QUOTED = re.compile(r'^\s*"(.*)"\s*$')
TEXT_SEPARATOR = ",####"
DONT_CARE = "###"
_FIXED_ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # member timestamp of the zips written here


class RRCFormatError(ValueError):
    """A GT or prediction file that the official evaluation would reject."""


@dataclass
class TextLine:
    """One parsed line: ``points`` (k, 2) float32 as the official ``polygon_from_points``, and its text."""

    points: np.ndarray
    text: str


def member_name(image_id: int) -> str:
    """Official per-image file name: ``{image_id:07d}.txt``."""
    return "{:07d}.txt".format(int(image_id))


def member_key(name: str):
    """The official sample key of a member name (the digit string), or None if the name does not match."""
    m = MEMBER_PATTERN.match(name)
    return None if m is None else m.group(1)


def decode_contents(raw: bytes) -> str:
    text = codecs.decode(raw, "utf-8", "replace")
    return text[1:] if text.startswith("\ufeff") else text


def parse_line(line: str, where: str) -> TextLine:
    """Parse one ``x1,y1,...,####text`` line; ``where`` names the file and line for errors."""
    parts = line.strip().split(TEXT_SEPARATOR)
    if len(parts) < 2:
        raise RRCFormatError(f"{where}: no ',####' separator before the transcription in {line!r}")
    coords = parts[0].split(",")
    if len(coords) % 2:
        raise RRCFormatError(f"{where}: odd number of coordinates ({len(coords)}) in {line!r}")
    try:
        values = [float(c) for c in coords]
    except ValueError as e:
        raise RRCFormatError(f"{where}: coordinate is not a number in {line!r} ({e})") from None
    text = parts[1].strip()
    quoted = _QUOTED.match(text)
    if quoted is not None:
        text = quoted.group(1).replace("\\\\", "\\").replace('\\"', '"')
    return TextLine(np.asarray(values, dtype=np.float32).reshape(-1, 2), text)


def parse_contents(contents: str, where: str) -> List[TextLine]:
    lines = []
    for i, line in enumerate(contents.split("\n")):
        line = line.replace("\r", "")
        if line != "":
            lines.append(parse_line(line, f"{where} line {i + 1}"))
    return lines


def read_zip(path: str, strict: bool) -> Dict[str, List[TextLine]]:
    """Parsed members of an official zip, keyed by the member's digit string, in archive order.

    Args:
        strict: a member name that does not match the official regex is an error (the official check
            for prediction zips); otherwise it is skipped (as for GT zips).
    """
    try:
        archive = zipfile.ZipFile(path, mode="r", allowZip64=True)
    except (OSError, zipfile.BadZipFile) as e:
        raise RRCFormatError(f"{path}: cannot open as a zip archive ({e})") from None
    out = {}
    with archive:
        for name in archive.namelist():
            key = member_key(name)
            if key is None:
                if strict:
                    raise RRCFormatError(f"{path}: member {name!r} does not match '([0-9]+).txt'")
                continue
            out[key] = parse_contents(decode_contents(archive.read(name)), f"{path}:{name}")
    return out


def read_folder(path: str) -> Dict[str, List[TextLine]]:
    """Parsed per-image txt files of a folder (the unzipped form of a prediction zip)."""
    out = {}
    for name in sorted(os.listdir(path)):
        key = member_key(name)
        if key is None:
            raise RRCFormatError(f"{path}: file {name!r} does not match '([0-9]+).txt'")
        with open(os.path.join(path, name), "rb") as f:
            out[key] = parse_contents(decode_contents(f.read()), os.path.join(path, name))
    return out


def read_predictions_files(path: str) -> Dict[str, List[TextLine]]:
    """A prediction zip or folder of official per-image txt files."""
    return read_folder(path) if os.path.isdir(path) else read_zip(path, strict=True)


def format_line(points: Sequence[Sequence], text: str) -> str:
    """``x1,y1,...,xn,yn,####text`` with the coordinates printed as given (ints stay ints)."""
    return ",".join(f"{x},{y}" for x, y in points) + TEXT_SEPARATOR + text


def write_zip(path: str, files: Mapping[str, Sequence[str]]) -> None:
    """Write ``{member name: lines}`` as a flat zip, one line per entry, LF endings.

    Members are sorted and carry a constant timestamp, so the same lines always give a byte-identical zip.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, "".join(line + "\n" for line in files[name]))
