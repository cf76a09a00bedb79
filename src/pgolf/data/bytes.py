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

Every eval mode divides by one per-position tensor, `target_bytes` (same length as the val token tensor; entry i =
the bytes credited when token i is scored as a target; entry 0 is never a target and is 0). It comes from the LUT
(`target_bytes_from_lut`) or, for a dataset with a byte sidecar, from the sidecar (`target_bytes_from_sidecar`):
R0427 sums `val_bytes[raw_start + 1 : raw_end]` for the targets tokens[raw_start + 1 : raw_end], so sidecar entry i
belongs to token i. `validation_bytes` picks one and refuses a CaseOps tokenizer without a sidecar: its operator
pieces would be counted as 3 bytes each and val_bpb would come out ~9 % too low (issue 11).

    tb, accounting = validation_bytes(dataset, sp, val_tokens, lut)     # accounting: "sidecar" or "lut"
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import sentencepiece as spm
import torch

SPACE_PIECE = "\u2581"  # "▁", SentencePiece's visible space
BYTES_SIDECAR, BYTES_LUT = "sidecar", "lut"  # the two byte accountings (run.json "bytes", artifact manifest)


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


def target_bytes_from_lut(lut: ByteLUT, tokens: torch.Tensor) -> torch.Tensor:
    """Per-position target bytes from the LUT: entry 0 = 0, entry i = token_bytes(lut, tokens[i-1], tokens[i])."""
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
    out = torch.zeros(tokens.numel(), dtype=torch.int64, device=tokens.device)
    if tokens.numel() > 1:
        out[1:] = token_bytes(lut, tokens[:-1], tokens[1:])
    return out


def target_bytes_from_sidecar(sidecar: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-position target bytes from a byte sidecar aligned token for token with `tokens` (R0427); entry 0 = 0."""
    if sidecar.shape != tokens.shape or tokens.dim() != 1:
        raise ValueError(f"byte sidecar has shape {tuple(sidecar.shape)} but the val tokens {tuple(tokens.shape)}; "
                         "expected one sidecar entry per val token")
    out = sidecar.to(torch.int64).clone()
    out[:1] = 0
    return out


def validation_bytes(dataset, sp: spm.SentencePieceProcessor, val_tokens: torch.Tensor,
                     lut: ByteLUT | None) -> tuple[torch.Tensor, str]:
    """(target_bytes, accounting) for `val_tokens` (a prefix of the dataset's val stream, as load_validation_tokens
    returns it): the sidecar when the dataset has one, else the LUT; a CaseOps tokenizer without a sidecar raises."""
    from pgolf.data.loader import load_validation_sidecar

    if byte_accounting(dataset, sp) == BYTES_SIDECAR:
        sidecar = load_validation_sidecar(dataset.val_bytes_files, val_tokens.numel())
        return target_bytes_from_sidecar(sidecar, val_tokens), BYTES_SIDECAR
    if lut is None:
        raise ValueError("no byte sidecar and no LUT given")
    return target_bytes_from_lut(lut, val_tokens), BYTES_LUT


def byte_accounting(dataset, sp: spm.SentencePieceProcessor) -> str:
    """"sidecar" if the dataset has val byte sidecars, else "lut"; a CaseOps tokenizer without them raises."""
    from pgolf.data.caseops import is_caseops_tokenizer

    if dataset.val_bytes_files:
        return BYTES_SIDECAR
    if is_caseops_tokenizer(sp):
        raise ValueError(
            f"{dataset.tokenizer_path} is a CaseOps tokenizer (it reserves the case operators U+E001..U+E004) but "
            f"{dataset.data_dir} has no byte sidecar (fineweb_val_bytes_NNNNNN.bin beside each "
            "fineweb_val_NNNNNN.bin): "
            "its val_bpb would count the operators' bytes. Prepare the data with `pgolf data prepare --caseops` or "
            "download it with `pgolf data fineweb --variant caseops`")
    return BYTES_LUT
