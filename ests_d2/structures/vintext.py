"""The VinText label encoding: Vietnamese letters as base letters plus mark symbols (torch-free).

The official VinText model (ESTS ``ESTS_5scale_vintext_finetune``, following dict-guided / ABCNet) does not
classify the 134 accented Vietnamese letters. It predicts

- a *base letter* for every vowel, with the shape modifiers written as a second symbol right after it
  (``ă`` = ``a`` + ``ˇ``, ``â`` = ``a`` + ``ˆ``, ``ơ`` = ``o`` + ``˒``, ``ư`` = ``u`` + ``˒``, ``đ`` = ``d`` + ``‑``
  (U+2011), ``Đ`` = ``D`` + ASCII ``-``), and
- the word's single *tone mark* (grave, acute, dot below, hook above, tilde) as one symbol at the end of the
  text: ``Việt`` -> ``Vieˆt﹒``.

Decoding recomposes the letters, then puts the tone back on the vowel the official rule picks (the last
vowel, or the one before it when the word ends in a vowel, except after ``qu`` / ``gi``). Quirks of the official
decoder kept on purpose because the official scores depend on them: the tone is applied to *every*
occurrence of the chosen base vowel, and any ``D-`` in a prediction becomes ``Đ``.
"""
import unicodedata
from typing import Dict, List, Tuple

# The tone symbols in the order of the combining marks below (index 0 = no tone).
TONE_SYMBOLS = ("\u02cb", "\u02ca", "\ufe52", "\u02c0", "\u02dc")  # ˋ ˊ ﹒ ˀ ˜
_TONE_COMBINING = ("\u0300", "\u0301", "\u0323", "\u0309", "\u0303")  # grave, acute, dot below, hook, tilde
# Base vowels (with their shape modifiers) that carry tones.
_TONE_CARRIERS = "aâăAĂÂeêEÊoôơOÔƠiIuưƯUyY"
# Letter -> its two-symbol form. The order is the official decoder's replacement order.
MODIFIED_LETTERS: Tuple[Tuple[str, str], ...] = (
    ("ă", "a\u02c7"), ("â", "a\u02c6"), ("Ă", "A\u02c7"), ("Â", "A\u02c6"), ("ê", "e\u02c6"), ("Ê", "E\u02c6"),
    ("ô", "o\u02c6"), ("ơ", "o\u02d2"), ("Ô", "O\u02c6"), ("Ơ", "O\u02d2"), ("ư", "u\u02d2"), ("Ư", "U\u02d2"),
    ("Đ", "D-"), ("đ", "d\u2011"),
)
# The 9 symbols the VinText vocabulary adds to the 95 printable ASCII characters (official id order 95..103).
VINTEXT_SYMBOLS = TONE_SYMBOLS + ("\u02c7", "\u02c6", "\u02d2", "\u2011")
_TONE_RESETTING_PAIRS = ("qu", "Qu", "qU", "QU", "gi", "Gi", "gI", "GI")


def _toned_forms() -> Dict[str, List[str]]:
    """Base vowel -> its 6 forms [untoned, grave, acute, dot below, hook above, tilde] (NFC)."""
    return {b: [b] + [unicodedata.normalize("NFC", b + m) for m in _TONE_COMBINING] for b in _TONE_CARRIERS}


_FORMS = _toned_forms()
# Every toned or untoned vowel -> (base vowel, tone index 0..5).
_VOWEL_OF = {form: (base, k) for base, forms in _FORMS.items() for k, form in enumerate(forms)}
_PAIR_OF = dict(MODIFIED_LETTERS)


def vintext_encode(text: str) -> str:
    """``text`` in the symbol form the VinText model predicts (one tone mark per text, moved to the end).

    Raises:
        ValueError: the text has two tone marks (the encoding has a single tone slot; VinText labels are
            single syllables).
    """
    out, tone = [], 0
    for ch in unicodedata.normalize("NFC", text):
        base, k = _VOWEL_OF.get(ch, (ch, 0))
        if k:
            if tone:
                raise ValueError(f"{text!r} has more than one tone mark; the VinText encoding holds one per text")
            tone = k
        out.append(_PAIR_OF.get(base, base))
    return "".join(out) + (TONE_SYMBOLS[tone - 1] if tone else "")


def _tone_carrier(body: str) -> str:
    """The base vowel of ``body`` that receives the tone (official rule); "" when there is no vowel."""
    last, before_last = "", ""
    for ch in body:
        if ch in _VOWEL_OF:
            before_last, last = last, _VOWEL_OF[ch][0]
    if body[-1] == last and before_last:
        if before_last in "uUiI" and any(p in body for p in _TONE_RESETTING_PAIRS):
            return last  # "qu" / "gi" + vowel: the u / i is part of the consonant
        return before_last
    return last


def vintext_decode(symbols: str) -> str:
    """Recompose the letters of a predicted symbol string (the official ``vintext_decoder``)."""
    for letter, pair in MODIFIED_LETTERS:
        symbols = symbols.replace(pair, letter)
    if len(symbols) < 2 or symbols[-1] not in TONE_SYMBOLS:
        return symbols
    body, tone = symbols[:-1], TONE_SYMBOLS.index(symbols[-1]) + 1
    carrier = _tone_carrier(body)
    if carrier:
        body = body.replace(carrier, _FORMS[carrier][tone])
    return body
