"""The recognition vocabulary: characters <-> class ids.

Recognition targets are ``max_text_len`` class ids per instance. For the EN vocabulary (V = 97) ids 0..94 are
the printable ASCII characters (id = ord(ch) - 32), 95 is "unknown" and 96 is padding.
"""
from typing import List, Sequence

UNKNOWN_GLYPH = "\u53e3"  # '口': how the official decoder prints the unknown class
EN_CHARACTERS = [chr(c) for c in range(32, 127)]


class CharVocabulary:
    """Maps characters to recognition class ids: the characters, then ``unknown``, then ``padding``."""

    def __init__(self, characters: Sequence[str]):
        if len(set(characters)) != len(characters):
            raise ValueError("the character list contains duplicates")
        self.characters = list(characters)
        self._index = {c: i for i, c in enumerate(self.characters)}

    @classmethod
    def from_config(cls, voc_size: int, custom_dict: str = "") -> "CharVocabulary":
        """The EN vocabulary for ``voc_size == 97``; otherwise one character per line of ``custom_dict``."""
        if custom_dict:
            with open(custom_dict, encoding="utf-8") as f:
                chars = [line.rstrip("\n") for line in f if line.rstrip("\n")]
            vocab = cls(chars)
        else:
            vocab = cls(EN_CHARACTERS)
        if vocab.num_classes != voc_size:
            src = custom_dict or "the built-in EN character list"
            raise ValueError(
                f"MODEL.ESTS.VOC_SIZE is {voc_size} but {src} gives {len(vocab.characters)} characters "
                f"+ unknown + padding = {vocab.num_classes} classes"
            )
        return vocab

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
