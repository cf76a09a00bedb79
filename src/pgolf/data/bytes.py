"""How many UTF-8 bytes each scored token stands for: the denominator of val_bpb, exactly as the challenge counts.

The challenge (`build_sentencepiece_luts` + `eval_val` in every train_gpt.py) builds three lookup tables from the
SentencePiece model and counts, for a target token `tgt` following input token `prev`:

    bytes(tgt) = base_bytes[tgt] + (has_leading_space[tgt] and not is_boundary[prev])

* control / unknown / unused pieces (pad, bos, eos, unk): 0 bytes, and they are boundaries;
* byte-fallback pieces `<0xNN>`: 1 byte each (not len("<0xNN>"), not len("\\ufffd") = 3; see PR #1289);
* any other piece: its UTF-8 length without a leading "▁", which instead counts as one space byte unless the
  previous token is a boundary (the first word of a document has no space before it).

Bytes are counted on the tokenizer's *normalized* text (nmt_nfkc, whitespace collapsed), the same for everyone
using a given tokenizer. A tokenizer without a standalone "▁" piece spells a lone space with byte-fallback
pieces and silently changes the count (issue #897), so `build_byte_lut` refuses such tokenizers.

    lut = build_byte_lut(sp, vocab_size=1024)
    n_bytes = token_bytes(lut, x, y).sum()   # x = inputs (prev), y = targets; any shape, any device
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import sentencepiece as spm
import torch

SPACE_PIECE = "\u2581"  # "▁", SentencePiece's visible space


@dataclass(frozen=True)
class ByteLUT:
    """Per-piece byte tables (length = vocab size), kept on CPU; `token_bytes` moves them to the ids' device."""

    base_bytes: torch.Tensor  # (V,) int16: UTF-8 bytes of the piece without its leading "▁"
    has_leading_space: torch.Tensor  # (V,) bool: piece starts with "▁"
    is_boundary: torch.Tensor  # (V,) bool: control/unknown/unused piece; a following "▁" is not counted

    def to(self, device: torch.device | str) -> ByteLUT:
        """A copy on `device` (move once before an eval loop; `token_bytes` then skips the transfer)."""
        return ByteLUT(self.base_bytes.to(device), self.has_leading_space.to(device), self.is_boundary.to(device))


def build_byte_lut(sp: spm.SentencePieceProcessor, vocab_size: int, *, name: str | os.PathLike = "") -> ByteLUT:
    """Tables for `sp`; raises if the tokenizer's size differs from the model's `vocab_size` or it lacks "▁".

    `name` (e.g. the .model path) only makes error messages say which tokenizer is wrong.
    """
    n = sp.vocab_size()
    if n != vocab_size:
        raise ValueError(
            f"tokenizer {_describe(sp, name)} has {n} pieces but the model expects {vocab_size} "
            f"(model.vocab_size must equal the tokenizer's piece count, or val_bpb would count bytes wrongly)"
        )
    if sp.piece_to_id(SPACE_PIECE) == sp.unk_id():
        raise ValueError(
            f"tokenizer {_describe(sp, name)} has no standalone '{SPACE_PIECE}' piece, so a lone space is encoded as "
            f"byte-fallback or unknown pieces and val_bpb would count bytes wrongly (parameter-golf issue #897)"
        )
    base = torch.zeros(n, dtype=torch.int16)
    space = torch.zeros(n, dtype=torch.bool)
    boundary = torch.zeros(n, dtype=torch.bool)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            boundary[i] = True
        elif sp.is_byte(i):
            base[i] = 1
        else:
            piece = sp.id_to_piece(i)
            if piece.startswith(SPACE_PIECE):
                space[i] = True
                piece = piece[1:]
            base[i] = len(piece.encode("utf-8"))
    return ByteLUT(base_bytes=base, has_leading_space=space, is_boundary=boundary)


def token_bytes(lut: ByteLUT, prev_ids: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
    """UTF-8 bytes of each target token given its predecessor; int64, same shape and device as `tgt_ids`."""
    if prev_ids.shape != tgt_ids.shape:
        raise ValueError(f"prev_ids {tuple(prev_ids.shape)} and tgt_ids {tuple(tgt_ids.shape)} must have one shape")
    device = tgt_ids.device
    prev, tgt = prev_ids.long(), tgt_ids.long()
    base = lut.base_bytes.to(device)[tgt].long()
    space = lut.has_leading_space.to(device)[tgt] & ~lut.is_boundary.to(device)[prev]
    return base + space.long()


def _describe(sp: spm.SentencePieceProcessor, name: str | os.PathLike) -> str:
    return str(name) if str(name) else f"<SentencePiece model, bos={sp.bos_id()} unk={sp.unk_id()}>"
