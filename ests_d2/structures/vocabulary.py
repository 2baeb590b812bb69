"""The recognition vocabulary: characters <-> class ids, one object built once from the config.

Recognition targets are ``max_text_len`` class ids per instance. Every vocabulary is a list of characters
followed by an *unknown* class (decoded as '口', as the official decoder prints it) and a *padding* class
(skipped when decoding, not a terminator). Kinds (``MODEL.ESTS.VOCABULARY``):

- ``"en"``: the official EN vocabulary (V = 97): ids 0..94 = printable ASCII (id = ord(ch) - 32), 95 unknown,
  96 padding.
- ``"char_file"``: ``MODEL.ESTS.CUSTOM_DICT`` is a UTF-8 text file with one character per line (empty lines
  ignored); V = characters + 2.
- ``"code_point_pickle"``: ``CUSTOM_DICT`` is the official ReCTS / MLT format (``chn_cls_list.txt``): a pickled
  list of Unicode code points. It is read with an unpickler that cannot build any object (no imports, no
  calls), so a hostile file cannot run code; anything but a list of ints / one-character strings is refused.
  V = characters + 2 (official ReCTS 5463, MLT 4268).
- ``"vintext"``: the official VinText vocabulary (V = 107): the 95 ASCII characters and the 9 mark symbols
  of ``vintext.VINTEXT_SYMBOLS`` (ids 95..103), then the classes the official VinText head has beyond them:
  104 (unused, decodes to nothing), 105 padding (skipped by the official decoder), 106 unknown (decoded
  '口' by the official evaluator). Texts are encoded / decoded with the VinText letter encoding (``vintext``).

This module imports no torch: the evaluation tool decodes predictions without it.
"""
import collections
import functools
import os
import pickle
from typing import Dict, List, Sequence

from .vintext import VINTEXT_SYMBOLS, vintext_decode, vintext_encode

UNKNOWN_GLYPH = "\u53e3"  # '口': how the official decoder prints the unknown class
EN_CHARACTERS = [chr(c) for c in range(32, 127)]
VOCABULARY_KINDS = ("en", "char_file", "code_point_pickle", "vintext")


class CharVocabulary:
    """Maps characters to recognition class ids: the characters, then ``unknown``, then ``padding``."""

    kind = "chars"  # the MODEL.ESTS.VOCABULARY kind it was built as

    def __init__(self, characters: Sequence[str], source: str = "the character list"):
        duplicates = sorted(c for c, n in collections.Counter(characters).items() if n > 1)
        if duplicates:
            raise ValueError(f"{source}: the character list contains duplicates: {duplicates[:10]}")
        self.characters = list(characters)
        self.source = source
        self._index = {c: i for i, c in enumerate(self.characters)}

    @classmethod
    def from_config(cls, voc_size: int, custom_dict: str = "") -> "CharVocabulary":
        """The EN vocabulary, or one character per line of ``custom_dict``; its size must be ``voc_size``."""
        return load_vocabulary("char_file" if custom_dict else "en", custom_dict, voc_size)

    @property
    def unknown_id(self) -> int:
        return len(self.characters)

    @property
    def pad_id(self) -> int:
        return len(self.characters) + 1

    @property
    def num_classes(self) -> int:
        return len(self.characters) + 2

    def encode(self, text: str, max_len: int) -> List[int]:
        """Class ids of ``text``, truncated to ``max_len`` and padded with ``pad_id``."""
        ids = [self._index.get(c, self.unknown_id) for c in text[:max_len]]
        return ids + [self.pad_id] * (max_len - len(ids))

    def decode(self, ids: Sequence[int]) -> str:
        """Official decoding: padding is skipped (not a terminator), unknown prints as '口'."""
        out = []
        for i in ids:
            i = int(i)
            if 0 <= i < len(self.characters):
                out.append(self.characters[i])
            elif i == self.unknown_id:
                out.append(UNKNOWN_GLYPH)
        return "".join(out)

    def char_index(self) -> Dict[str, int]:
        """Character -> ``rec_prob`` column (the characters, then the unknown glyph at ``unknown_id``)."""
        index = dict(self._index)
        index[UNKNOWN_GLYPH] = self.unknown_id
        return index

    def describe(self) -> str:
        return (f"{self.kind} vocabulary from {self.source}: {len(self.characters)} characters, "
                f"{self.num_classes} classes")


class VinTextVocabulary(CharVocabulary):
    """The official VinText classes (see the module docstring); texts go through the VinText encoding."""

    kind = "vintext"
    NUM_CLASSES = 107

    def __init__(self):
        super().__init__(EN_CHARACTERS + list(VINTEXT_SYMBOLS), "the built-in VinText list")

    @property
    def pad_id(self) -> int:
        return 105

    @property
    def unknown_id(self) -> int:
        return 106

    @property
    def num_classes(self) -> int:
        return self.NUM_CLASSES

    def encode(self, text: str, max_len: int) -> List[int]:
        return super().encode(vintext_encode(text), max_len)

    def decode(self, ids: Sequence[int]) -> str:
        return vintext_decode(super().decode(ids))


class EnglishVocabulary(CharVocabulary):
    kind = "en"

    def __init__(self):
        super().__init__(EN_CHARACTERS, "the built-in EN list")


def read_character_file(path: str) -> List[str]:
    """One character per line (UTF-8, LF or CRLF); empty lines are ignored."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        lines = raw.decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e}); is it the pickled official list? "
                         "then set MODEL.ESTS.VOCABULARY code_point_pickle") from e
    chars = []
    for number, line in enumerate(lines, 1):
        line = line[:-1] if line.endswith("\r") else line
        if not line:
            continue
        if len(line) != 1:
            raise ValueError(f"{path} line {number}: {line[:20]!r} is {len(line)} characters; the file needs "
                             "one character per line")
        chars.append(line)
    return chars


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data only: every global lookup (the door to constructors and calls) is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only a list of code points is accepted")


def read_code_point_pickle(path: str) -> List[str]:
    """The characters of an official pickled code-point list (``chn_cls_list.txt``), read without code execution."""
    with open(path, "rb") as f:
        try:
            data = _DataOnlyUnpickler(f).load()
        except Exception as e:  # noqa: BLE001 - any failure means "not the official format"; say which file
            raise ValueError(f"{path}: not a pickled list of code points ({e})") from e
    if not isinstance(data, list):
        raise ValueError(f"{path}: the pickle holds a {type(data).__name__}, expected a list of code points")
    chars = []
    for k, item in enumerate(data):
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 0x10FFFF:
            chars.append(chr(item))
        elif isinstance(item, str) and len(item) == 1:
            chars.append(item)
        else:
            raise ValueError(f"{path}: entry {k} is {item!r}, expected a code point (int) or one character")
    return chars


@functools.lru_cache(maxsize=8)
def _cached_vocabulary(kind: str, path: str, mtime: float) -> CharVocabulary:
    if kind == "en":
        return EnglishVocabulary()
    if kind == "vintext":
        return VinTextVocabulary()
    if not path:
        raise ValueError(f"MODEL.ESTS.VOCABULARY {kind} needs MODEL.ESTS.CUSTOM_DICT (the character file)")
    reader = read_character_file if kind == "char_file" else read_code_point_pickle
    vocab = CharVocabulary(reader(path), source=path)
    vocab.kind = kind
    return vocab


def load_vocabulary(kind: str, custom_dict: str = "", voc_size: int = None) -> CharVocabulary:
    """The vocabulary of ``kind`` (``VOCABULARY_KINDS``), checked against ``voc_size`` when given.

    Built once per (kind, file, file modification time): every component asking for it shares one object.
    """
    if kind not in VOCABULARY_KINDS:
        raise ValueError(f"MODEL.ESTS.VOCABULARY is {kind!r}; expected one of {VOCABULARY_KINDS}")
    if custom_dict and kind in ("en", "vintext"):
        raise ValueError(f"MODEL.ESTS.CUSTOM_DICT is set ({custom_dict}) but MODEL.ESTS.VOCABULARY is {kind!r}, "
                         "which is built in; use char_file or code_point_pickle for a file")
    if custom_dict and not os.path.isfile(custom_dict):
        raise FileNotFoundError(f"MODEL.ESTS.CUSTOM_DICT: vocabulary file not found: {custom_dict}")
    mtime = os.path.getmtime(custom_dict) if custom_dict else 0.0
    vocab = _cached_vocabulary(kind, custom_dict, mtime)
    if voc_size is not None and vocab.num_classes != int(voc_size):
        raise ValueError(
            f"MODEL.ESTS.VOC_SIZE is {voc_size} but {vocab.source} gives {len(vocab.characters)} characters "
            f"+ unknown + padding = {vocab.num_classes} classes ({kind} vocabulary)"
        )
    return vocab


def build_vocabulary(cfg) -> CharVocabulary:
    """The recognition vocabulary of a config (``MODEL.ESTS.VOCABULARY`` / ``CUSTOM_DICT`` / ``VOC_SIZE``).

    An empty ``VOCABULARY`` keeps the older rule: EN without ``CUSTOM_DICT``, a character file with it.
    """
    e = cfg.MODEL.ESTS
    kind = e.get("VOCABULARY", "") or ("char_file" if e.CUSTOM_DICT else "en")
    return load_vocabulary(kind, e.CUSTOM_DICT, e.VOC_SIZE)
