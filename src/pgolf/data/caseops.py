"""CaseOps: the lossless case transform of the SOTA's tokenizer, and the per-token byte sidecar it needs.

R0427 (PR #1855, val_bpb 1.06108) and PR #1962 train and score on text rewritten by `lossless_caps_caseops_v1`
(PR #1729; the record's `lossless_caps.py`, `encode_lossless_caps_v2`), tokenized by a SentencePiece model that
reserves the four operator characters as user-defined pieces (ids 4–7 of
`fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model`). Over each maximal run of ASCII letters:

    lowercase word            unchanged                          "the"    → "the"
    ALLCAPS word (≥ 2 letters) ALLCAPS + lowercase                "NASA"   → "\\ue002nasa"
    Titlecase word            TITLE + lowercase                  "Launch" → "\\ue001launch"
    any other mixed case      [TITLE if the first letter is upper] + each later upper letter preceded by CAPNEXT
                                                       "iPhone" → "i\\ue003phone", "McD" → "\\ue001mc\\ue003d"
    an operator char in the input   ESC + that char              "\\ue001" → "\\ue004\\ue001"

Everything else (digits, punctuation, whitespace, non-ASCII letters of any case) is left alone, so `decode(encode(t))
== t` for every string t. The transformed text is longer than the original, so a per-piece byte table over-counts
the bytes val_bpb divides by; the record instead writes a *byte sidecar* (`fineweb_val_bytes_%06d.bin`, the shard
format, one uint16 per validation token): the UTF-8 bytes of the ORIGINAL text each token accounts for. Operators
count 0, an escaped operator counts its own 3 bytes, BOS counts 0, and each piece is credited with the bytes of its
*surface* (the span of the input text SentencePiece assigned to it, so whitespace the normalizer folds into a piece
is counted there, and whitespace it drops at a document's end is not counted at all, exactly as in the record).

    t = encode("The NASA Launch")        # '\\ue001the \\ue002nasa \\ue001launch'
    decode(t)                            # 'The NASA Launch'
    ids, nbytes = encode_with_bytes(sp, ["The NASA Launch"])[0]   # token ids and their sidecar bytes (no BOS)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import sentencepiece as spm

TITLE, ALLCAPS, CAPNEXT, ESC = "\ue001", "\ue002", "\ue003", "\ue004"
OPERATORS = (TITLE, ALLCAPS, CAPNEXT, ESC)
TRANSFORM = "lossless_caps_caseops_v1"  # the record's name; the same transform as its lossless_caps_v2
OPERATOR_BYTES = 3  # each operator is a BMP private-use character: 3 UTF-8 bytes

_WORD_OR_OPERATOR = re.compile(r"[A-Za-z]+|[\ue001-\ue004]")


class CaseOpsError(ValueError):
    """A string is not a valid CaseOps encoding (a dangling or misplaced operator)."""


def _encode_match(m: re.Match) -> str:
    word = m.group(0)
    if word in OPERATORS:
        return ESC + word
    lower = word.lower()
    if word == lower:
        return word
    if len(word) >= 2 and word.isupper():
        return ALLCAPS + lower
    first_upper = "A" <= word[0] <= "Z"
    if first_upper and len(word) >= 2 and word[1:].islower():
        return TITLE + lower
    # mixed case (and a single capital letter, which the record also spells TITLE + letter)
    parts = [TITLE + lower[0] if first_upper else lower[0]]
    parts.extend(CAPNEXT + c.lower() if "A" <= c <= "Z" else c for c in word[1:])
    return "".join(parts)


def encode(text: str) -> str:
    """The CaseOps text of `text` (the record's `encode_lossless_caps_v2`, same output for every input)."""
    return _WORD_OR_OPERATOR.sub(_encode_match, text)


def _is_ascii_letter(ch: str) -> bool:
    return "a" <= ch <= "z" or "A" <= ch <= "Z"


def decode(text: str) -> str:
    """The original text of a CaseOps string; raises CaseOpsError (naming the position) if it is malformed."""
    if not any(op in text for op in OPERATORS):
        return text
    out: list[str] = []
    escape = False
    word_mark: str | None = None  # TITLE or ALLCAPS seen, waiting for the word's first letter
    cap_next = False  # CAPNEXT seen, waiting for its letter
    in_word = all_caps = False
    for i, ch in enumerate(text):
        if escape:
            out.append(ch)
            escape = False
            in_word = all_caps = False  # only operators are escaped, and they are not letters
            continue
        if ch == ESC:
            if word_mark is not None or cap_next:
                raise CaseOpsError(f"position {i}: escape inside a pending capitalization marker")
            escape = True
        elif ch == TITLE or ch == ALLCAPS:
            if word_mark is not None or in_word or cap_next:
                raise CaseOpsError(f"position {i}: word marker {ch!r} not at the start of a word")
            word_mark = ch
        elif ch == CAPNEXT:
            if cap_next:
                raise CaseOpsError(f"position {i}: two CAPNEXT markers in a row")
            cap_next = True
        elif _is_ascii_letter(ch):
            if not in_word:
                upper = word_mark is not None or cap_next
                all_caps, in_word, word_mark = word_mark == ALLCAPS, True, None
            else:
                upper = all_caps or cap_next
            cap_next = False
            out.append(ch.upper() if upper else ch)
        else:
            if word_mark is not None or cap_next:
                raise CaseOpsError(f"position {i}: capitalization marker not followed by an ASCII letter")
            out.append(ch)
            in_word = all_caps = False
    if escape or word_mark is not None or cap_next:
        raise CaseOpsError("dangling CaseOps marker at the end of the text")
    return "".join(out)


def original_byte_counts(surfaces: Iterable[str]) -> list[int]:
    """UTF-8 bytes of the original text behind each piece surface, in order (the record's
    `surface_piece_original_byte_counts` for caseops_v1): operators count 0 except after ESC."""
    counts: list[int] = []
    escape = False
    for surface in surfaces:
        n = len(surface.encode("utf-8"))
        if escape or any(op in surface for op in OPERATORS):
            for ch in surface:
                if escape:
                    escape = False  # the escaped operator is original text: its 3 bytes stay counted
                elif ch in OPERATORS:
                    n -= OPERATOR_BYTES
                    escape = ch == ESC
        counts.append(n)
    if escape:
        raise CaseOpsError("dangling ESC after the last piece")
    return counts


def is_caseops_tokenizer(sp: spm.SentencePieceProcessor) -> bool:
    """True if all four CaseOps operators are pieces of `sp` (the `..._caseops_v1_reserved` tokenizers)."""
    unk = sp.unk_id()
    return all(sp.piece_to_id(op) != unk for op in OPERATORS)


def encode_with_bytes(sp: spm.SentencePieceProcessor, texts: Sequence[str],
                      num_threads: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each original text: (token ids of its CaseOps text, original UTF-8 bytes per token), both uint16-safe
    int arrays, no BOS. The byte counts come from each piece's surface, as the record's prepare_caseops_data.py."""
    transformed = [encode(t) for t in texts]
    if not transformed:
        return []
    # offset_mapping = the proto's begin/end converted to str indices: the piece surfaces, without protobuf.
    encoded = sp.encode(transformed, out_type="offset_mapping", num_threads=num_threads)
    out = []
    for text, enc in zip(transformed, encoded):
        ids = np.asarray(enc["ids"], dtype=np.int64)
        counts = original_byte_counts(text[a:b] for a, b in enc["offsets"])
        out.append((ids, np.asarray(counts, dtype=np.int64)))
    return out
