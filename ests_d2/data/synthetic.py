"""Deterministic synthetic scene-text data, so that training and evaluation run with nothing downloaded.

Words from a built-in list are rendered with OpenCV Hershey fonts onto varied backgrounds as straight,
rotated or curved lines. Labels are exact by construction: a word is drawn on a flat strip of size
(L, H) and the strip is mapped onto the image by

    P(u, v) = c + R(theta) @ (x(u), y_top(u) + v * H),   u = x_strip / L, v = y_strip / H,

where (x(u), y_top(u)) is a cubic Bezier whose control points have x = -L/2 + k L/3 (so x(u) is linear
in u and the map can be inverted in closed form for ``cv2.remap``). The strip's top edge is therefore
exactly the top Bezier and its bottom edge the same curve shifted by H: the rendered pixels fill
exactly the region bounded by the two labelled curves.

Output under ``<root>`` (default ``$DETECTRON2_DATASETS/synthetic_text``, a git-ignored cache):
``{train,test}.json`` (COCO-text), ``images/{train,test}/*.jpg``, ``gt_synthetic_text_{train,test}.zip``
(official eval GT format) and ``lexicons/{lexicon.txt,pair_list.txt}``. The json ``info`` records the
generator version and parameters; a cache that does not match is regenerated.

``language="vi"`` renders Vietnamese words instead (a second, smaller set under ``synthetic_text_vi``): the
strips are drawn with PIL ``ImageFont`` and matplotlib's DejaVu fonts (Hershey fonts are ASCII only), the
``rec`` ids use the official VinText vocabulary (letters as base letter + mark symbols, 107 classes) and the
GT zip keeps the composed Unicode words.
"""
import json
import os
import shutil
import tempfile
from typing import Dict, List, Tuple

import cv2
import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from shapely.geometry import Polygon

from ests_d2.evaluation.gt_zip import DONT_CARE, write_gt_zip
from ests_d2.structures import bezier_to_polygon, load_vocabulary

SYNTHETIC_DIRNAME = "synthetic_text"
GENERATOR_VERSION = 4
SPLITS = {"train": (400, 0), "test": (40, 1)}  # split -> (number of images, seed)
MAX_TEXT_LEN = 25
# Small images, words 14-34 px high: large text relative to the image, so the demo's small model sees
# readable glyphs at its coarse feature strides while every image stays cheap to train on (docs/DEMO.md).
IMAGE_SHORT_SIDE = (192, 240)  # inclusive range, px
WORD_HEIGHT = (14, 34)  # px, care words
# P(upper case), P(capitalised); the rest lower case. Scoring ignores case, so each case is extra glyphs to learn.
CASE_PROBS = (0.4, 0.3)

WORDS = tuple(
    """
    the open road city park street hotel coffee bank shop market station exit entry stop taxi bus
    train metro north south east west central garden river bridge tower museum library school
    office police hospital pharmacy bakery pizza burger noodle sushi tea juice water fresh sale
    discount free today menu dinner lunch breakfast welcome thanks please push pull parking
    airport gate ticket platform danger caution warning keep clear quiet private public closed
    open daily service center mall plaza avenue lane drive square hall studio cinema theatre
    music dance book store fashion beauty salon hair nails spa fitness sport club game world
    global energy power light green blue red yellow orange black white silver golden star moon sun
    sky ocean island mountain valley forest lake spring summer autumn winter happy smile love
    home house family friend kitchen table chair window door floor room level block unit phone
    mobile digital smart online email news paper print photo camera video radio express super
    best great grand royal new old big little first last ticket price only limited special
    """.split()
)
_NUMBER_WORDS = ("24", "100", "2023", "365", "50%", "7/11", "$19", "no.5", "A1", "B52")
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)

# Single syllables with at most one tone mark each (the VinText encoding holds one per word).
VIETNAMESE_WORDS = tuple(dict.fromkeys(
    """
    việt nam hà nội phở cà phê bánh mì chợ đường phố nhà hàng quán cơm trà sữa bún bò gà cá rau nước mắm giá
    mở cửa đóng bán mua tiệm thuốc sách báo xe buýt ga tàu bến cảng công viên trường học bệnh viện khách sạn
    ngân siêu thị điện thoại giày dép áo quần vàng bạc đồng hồ kính mắt tóc đẹp mới cũ lớn nhỏ số một hai ba
    bốn năm sáu bảy tám chín mười khuyến mãi giảm tặng miễn phí đặc biệt ngon rẻ tươi sống chay nướng lẩu kem
    bia rượu trái cây quả giữa người
    """.split()
))
_TRUETYPE_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")
VIETNAMESE_SPLITS = {"train": (60, 10), "test": (12, 11)}
# language -> (folder name under $DETECTRON2_DATASETS, vocabulary kind)
LANGUAGES = {"en": (SYNTHETIC_DIRNAME, "en"), "vi": (SYNTHETIC_DIRNAME + "_vi", "vintext")}


def _splits(language: str) -> Dict[str, Tuple[int, int]]:
    """split -> (number of images, seed) of ``language``."""
    return SPLITS if language == "en" else VIETNAMESE_SPLITS


def synthetic_paths(root: str, split: str) -> Dict[str, str]:
    """Where the generator writes ``split`` (these also serve as the datasets' metadata)."""
    return {
        "json_file": os.path.join(root, f"{split}.json"),
        "image_root": os.path.join(root, "images", split),
        "eval_gt_zip": os.path.join(root, f"gt_synthetic_text_{split}.zip"),
        "lexicon_root": os.path.join(root, "lexicons"),
    }


def _generator_info(split: str, language: str = "en") -> Dict:
    num_images, seed = _splits(language)[split]
    info = {"generator": "ests_d2.data.synthetic", "version": GENERATOR_VERSION, "num_images": num_images,
            "seed": seed}
    return info if language == "en" else {**info, "language": language}


def _cache_is_current(root: str, language: str = "en") -> bool:
    for split in _splits(language):
        paths = synthetic_paths(root, split)
        if not all(os.path.exists(p) for p in paths.values()):
            return False
        try:
            with open(paths["json_file"], encoding="utf-8") as f:
                if json.load(f).get("info") != _generator_info(split, language):
                    return False
        except (OSError, ValueError):
            return False
    return True


def ensure_synthetic_text(root: str, language: str = "en") -> str:
    """Generate the synthetic dataset under ``root`` unless an up-to-date copy is there; returns ``root``.

    Generation goes to a temporary sibling folder that is renamed into place, so concurrent processes
    (e.g. DDP ranks) never see a half-written cache.
    """
    if _cache_is_current(root, language):
        return root
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.", dir=parent)
    try:
        for split, (num_images, seed) in _splits(language).items():
            write_synthetic_split(tmp, split, num_images, seed, language)
        write_lexicon(os.path.join(tmp, "lexicons"), language)
        if not _cache_is_current(root, language):
            shutil.rmtree(root, ignore_errors=True)
            try:
                os.rename(tmp, root)
            except OSError:  # another process renamed its copy first
                if not _cache_is_current(root, language):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def write_lexicon(folder: str, language: str = "en") -> None:
    """``lexicon.txt`` (upper-case words) and ``pair_list.txt`` (``UPPER original``) for the generic protocol."""
    os.makedirs(folder, exist_ok=True)
    words = list(dict.fromkeys(WORDS + _NUMBER_WORDS if language == "en" else VIETNAMESE_WORDS))
    with open(os.path.join(folder, "lexicon.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.writelines(w.upper() + "\n" for w in words)
    with open(os.path.join(folder, "pair_list.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{w.upper()} {w}\n" for w in words)


def write_synthetic_split(root: str, split: str, num_images: int, seed: int, language: str = "en") -> None:
    """Render ``num_images`` images and write the json, the images and the eval GT zip of ``split``."""
    paths = synthetic_paths(root, split)
    os.makedirs(paths["image_root"], exist_ok=True)
    vocab = load_vocabulary(LANGUAGES[language][1])
    images, annotations, gt_by_image = [], [], {}
    for index in range(num_images):
        image_id = index + 1
        image, instances = render_synthetic_image(np.random.default_rng([seed, index]), language=language)
        file_name = f"{split}_{image_id:05d}.jpg"
        cv2.imwrite(os.path.join(paths["image_root"], file_name), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append({"id": image_id, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]})
        gt_by_image[image_id] = []
        for inst in instances:
            polys = np.asarray(_round(bezier_to_polygon(inst["beziers"])))  # json and GT zip share the values
            crowd = inst["text"] == DONT_CARE
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": 1,
                "iscrowd": int(crowd),
                "bbox": _round(inst["bbox_xywh"]),
                "area": round(float(Polygon(polys.reshape(-1, 2)).area), 2),
                "segmentation": [polys.tolist()],
                "bezier_pts": _round(inst["beziers"]),
                "polys": _round(polys),
                "rec": vocab.encode(inst["text"], MAX_TEXT_LEN),
                "text": inst["text"],
            })
            gt_by_image[image_id].append((polys, inst["text"]))
    coco = {"info": _generator_info(split, language), "categories": [{"id": 1, "name": "text"}], "images": images,
            "annotations": annotations}
    with open(paths["json_file"], "w", encoding="utf-8") as f:
        json.dump(coco, f)
    write_gt_zip(paths["eval_gt_zip"], gt_by_image)


def _round(values) -> List[float]:
    return [round(float(v), 2) for v in np.asarray(values).reshape(-1)]


def render_synthetic_image(rng: np.random.Generator, return_masks: bool = False, language: str = "en"):
    """Render one image (words of ``language``: "en" or "vi").

    Returns:
        image: (H, W, 3) uint8 RGB with short side in ``IMAGE_SHORT_SIDE``.
        instances: list of dicts with ``text`` (``"###"`` for don't care), ``beziers`` (16 floats,
            clockwise: top curve left->right, bottom right->left) and ``bbox_xywh`` (tight box of the
            true curved region).
        masks (only if ``return_masks``): per instance (H, W) uint8 coverage of the drawn glyphs.
    """
    short = int(rng.integers(IMAGE_SHORT_SIDE[0], IMAGE_SHORT_SIDE[1] + 1))
    long_side = int(short * rng.uniform(1.0, 1.5))
    h, w = (short, long_side) if rng.random() < 0.7 else (long_side, short)
    image = _background(rng, h, w)
    occupied = np.zeros((h, w), np.uint8)
    instances, masks = [], []
    num_words = int(rng.integers(1, 5))
    num_dont_care = int(rng.random() < 0.25)
    for k in range(num_words + num_dont_care):
        dont_care = k >= num_words
        placed = _place_word(rng, image, occupied, dont_care, language)
        if placed is None:
            continue
        text, beziers, coverage = placed
        instances.append({"text": DONT_CARE if dont_care else text, "beziers": beziers,
                          "bbox_xywh": _tight_box(beziers)})
        masks.append(coverage)
    if rng.random() < 0.3:  # mild blur and sensor noise, as in photos
        image = cv2.GaussianBlur(image, (3, 3), 0)
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(0, 6))
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return (image, instances, masks) if return_masks else (image, instances)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Flat colour, gradient, stripes or random shapes, in RGB."""
    base = rng.integers(0, 256, 3)
    kind = int(rng.integers(0, 4))
    if kind == 0:
        image = np.broadcast_to(base, (h, w, 3)).astype(np.float64)
    elif kind == 1:
        other = rng.integers(0, 256, 3)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        t = (np.cos(angle) * xx + np.sin(angle) * yy).astype(np.float64)
        t = (t - t.min()) / max(np.ptp(t), 1.0)
        image = base * (1 - t[..., None]) + other * t[..., None]
    elif kind == 2:
        other = rng.integers(0, 256, 3)
        period = int(rng.integers(12, 60))
        yy, xx = np.mgrid[0:h, 0:w]
        stripes = (((xx + yy * rng.uniform(-1, 1)) // period) % 2).astype(np.float64)
        image = base * (1 - stripes[..., None]) + other * stripes[..., None]
    else:
        image = np.broadcast_to(base, (h, w, 3)).astype(np.float64).copy()
        for _ in range(int(rng.integers(3, 9))):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            if rng.random() < 0.5:
                cv2.circle(image, centre, int(rng.integers(10, 80)), colour, -1)
            else:
                corner = (centre[0] + int(rng.integers(-80, 80)), centre[1] + int(rng.integers(-80, 80)))
                cv2.rectangle(image, centre, corner, colour, -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def _pick_word(rng: np.random.Generator, language: str = "en") -> str:
    if language == "en":
        word = str(rng.choice(_NUMBER_WORDS)) if rng.random() < 0.1 else str(rng.choice(WORDS))
    else:
        word = str(rng.choice(VIETNAMESE_WORDS))
    case = rng.random()
    return word.upper() if case < CASE_PROBS[0] else word.capitalize() if case < sum(CASE_PROBS) else word


def _hershey_strip(rng, text: str, dont_care: bool) -> np.ndarray:
    """The word drawn white on black with an OpenCV Hershey font (ASCII only), tight with a small margin."""
    font = int(rng.choice(_FONTS)) | (cv2.FONT_ITALIC if rng.random() < 0.2 else 0)
    thickness = int(rng.integers(1, 3))
    target_height = rng.uniform(7, 10) if dont_care else rng.uniform(*WORD_HEIGHT)
    scale = target_height / cv2.getTextSize("Hg", font, 1.0, thickness)[0][1]
    (tw, th), baseline = cv2.getTextSize(text, font, scale, thickness)
    pad = thickness + 2  # keeps antialiased glyph edges strictly inside the labelled region
    strip = np.zeros((th + baseline + 2 * pad, tw + 2 * pad), np.uint8)
    cv2.putText(strip, text, (pad, pad + th), font, scale, 255, thickness, cv2.LINE_AA)
    return strip


def _truetype_strip(rng, text: str, dont_care: bool) -> np.ndarray:
    """The word drawn with one of matplotlib's DejaVu fonts (PIL), tight around its ink incl. diacritics."""
    font_file = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", str(rng.choice(_TRUETYPE_FONTS)))
    target_height = rng.uniform(7, 10) if dont_care else rng.uniform(*WORD_HEIGHT)
    font = ImageFont.truetype(font_file, max(6, int(round(target_height * 1.3))))
    left, top, right, bottom = font.getbbox(text)
    pad = 3  # keeps antialiased glyph edges strictly inside the labelled region
    strip = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(strip).text((pad - left, pad - top), text, font=font, fill=255)
    return np.asarray(strip)


def _place_word(rng, image, occupied, dont_care: bool, language: str = "en"):
    """Draw one word where it fits (inside the image, apart from other words); None if it never fits.

    Returns (text, 16 Bezier numbers, (H, W) coverage).
    """
    h, w = image.shape[:2]
    text = _pick_word(rng, language)
    strip = _hershey_strip(rng, text, dont_care) if language == "en" else _truetype_strip(rng, text, dont_care)
    strip_h, strip_w = strip.shape
    length = strip_w * rng.uniform(0.9, 1.25)  # mild horizontal stretch

    style = rng.random()
    if style < 0.4:  # straight, nearly horizontal
        theta, bend = rng.uniform(-5, 5), 0.0
    elif style < 0.7:  # rotated
        theta, bend = rng.choice([-1, 1]) * rng.uniform(10, 45), 0.0
    else:  # curved (arc up or down)
        theta, bend = rng.uniform(-15, 15), rng.choice([-1, 1]) * rng.uniform(0.12, 0.3) * length
    top = np.stack([-length / 2 + length * np.arange(4) / 3, -strip_h / 2 - np.array([0, bend, bend, 0])], 1)
    bottom = top + [0, strip_h]
    rot = cv2.getRotationMatrix2D((0, 0), float(theta), 1.0)[:, :2]  # counter-clockwise on screen

    for _ in range(40):
        centre = rng.uniform([0, 0], [w, h])
        ctrl = np.concatenate([top, bottom[::-1]]) @ rot.T + centre
        beziers = ctrl.reshape(-1)
        region = np.rint(bezier_to_polygon(beziers, 16).reshape(-1, 2)).astype(np.int32)
        if region.min() < 2 or (region[:, 0] > w - 3).any() or (region[:, 1] > h - 3).any():
            continue
        footprint = np.zeros((h, w), np.uint8)
        cv2.fillPoly(footprint, [region], 1)
        if (footprint & cv2.dilate(occupied, np.ones((7, 7), np.uint8))).any():
            continue
        # Only the region's bounding box (plus a margin) can receive glyph pixels.
        x0, y0 = np.maximum(region.min(axis=0) - 2, 0)
        x1, y1 = np.minimum(region.max(axis=0) + 3, [w, h])
        coverage = np.zeros((h, w), np.uint8)
        coverage[y0:y1, x0:x1] = _warp_strip(strip, length, top[:, 1], rot, centre - [x0, y0], (y1 - y0, x1 - x0))
        _composite(rng, image[y0:y1, x0:x1], coverage[y0:y1, x0:x1], dont_care)
        occupied |= footprint
        return text, beziers.tolist(), coverage
    return None


def _warp_strip(strip, length, top_y, rot, centre, shape) -> np.ndarray:
    """Inverse-map every pixel of a ``shape`` window into the strip (closed form, see the module docstring).

    ``centre`` is the word centre in window coordinates.
    """
    strip_h, strip_w = strip.shape
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64) + 0.5  # pixel centres
    local = np.stack([xx - centre[0], yy - centre[1]], -1) @ rot  # R^T (p - c), rot is orthonormal
    u = local[..., 0] / length + 0.5
    uu = np.clip(u, 0, 1)
    y_top = ((1 - uu) ** 3) * top_y[0] + 3 * uu * (1 - uu) ** 2 * top_y[1] + 3 * uu**2 * (1 - uu) * top_y[2] \
        + uu**3 * top_y[3]
    map_x = (u * strip_w - 0.5).astype(np.float32)  # back to array indices: strip pixel i covers [i, i+1)
    map_y = (local[..., 1] - y_top - 0.5).astype(np.float32)
    return cv2.remap(strip, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _composite(rng, image, coverage, dont_care: bool) -> None:
    """Alpha-blend a text colour that contrasts with the background under the word."""
    alpha = coverage.astype(np.float64)[..., None] / 255.0
    under = image[coverage > 0].mean(axis=0) if (coverage > 0).any() else np.zeros(3)
    luminance = under @ [0.299, 0.587, 0.114]
    contrast = rng.uniform(25, 50) if dont_care else rng.uniform(90, 200)
    target = luminance - contrast if luminance > 127 else luminance + contrast
    colour = np.clip(rng.integers(0, 256, 3) * 0.3 + target * 0.7, 0, 255)
    image[:] = np.clip(image * (1 - alpha) + colour * alpha, 0, 255).astype(np.uint8)


def _tight_box(beziers) -> List[float]:
    """XYWH box of the true region: both curves sampled densely (the 16-point polygon cuts chords)."""
    pts = bezier_to_polygon(np.asarray(beziers, dtype=np.float64), num_points=65).reshape(-1, 2)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return [x0, y0, x1 - x0, y1 - y0]
