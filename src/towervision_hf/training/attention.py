"""Sample-wise eager attention for packed rows: each sample of a row attends over itself only, at a cost of
sum(L_i^2) instead of the row's (sum L_i)^2.

Eager attention is TowerVision's default because Gemma2 softcaps its attention scores, which SDPA cannot. On a packed
row, transformers' eager path builds the row's full `(row, row)` score matrix and masks what crosses sample
boundaries: most of its work (and of its memory) is thrown away. [`sample_eager_attention_forward`] calls the
model's own eager attention (`eager_attention_forward` of its modeling file: scaling, softcap, float32 softmax,
dropout, grouped keys/values) on each sample's diagonal block, with that block's causal (and sliding-window) mask.
It is registered under [`SAMPLE_EAGER`] for attention and for masks: the mask function builds no mask where the
batch has no padding mask and no cache (packed training rows, whose samples are found in `position_ids` as
transformers does: a new sample wherever the position does not follow on by one), and eager's mask everywhere else
(padded batches, generation), where the attention falls back to eager on that mask.

    model.set_attn_implementation({"text_config": SAMPLE_EAGER})  # or `towervision train --packing true`

Training code only: checkpoints saved from such a model load with the default (eager) attention.
"""

import sys

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask


SAMPLE_EAGER = "towervision_sample_eager"


_last_boundaries: list = [None, None]  # (position_ids, boundaries): every layer of a forward gets the same tensor


def sample_boundaries(position_ids: torch.Tensor) -> list[list[int]]:
    """Start offsets of the samples of each row, plus the row's end: `(rows, length)` -> `[[0, s1, ..., length]]`.
    Computed once per forward (one device-to-host copy), not once per layer."""
    if _last_boundaries[0] is position_ids:
        return _last_boundaries[1]
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    length = position_ids.shape[1]
    boundaries = [row.nonzero().flatten().tolist() + [length] for row in starts.cpu()]
    _last_boundaries[:] = position_ids, boundaries
    return boundaries


def causal_mask(length: int, sliding_window: int | None, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Eager's additive `(1, 1, length, length)` mask of one sample: the dtype's minimum where a query may not see a
    key (the future, and keys `sliding_window` or more positions back), 0 elsewhere."""
    query = torch.arange(length, device=device)[:, None]
    key = torch.arange(length, device=device)[None, :]
    blocked = key > query
    if sliding_window is not None:
        blocked |= key <= query - sliding_window
    mask = torch.zeros(length, length, dtype=dtype, device=device).masked_fill(blocked, torch.finfo(dtype).min)
    return mask[None, None]


def model_eager_attention(module: nn.Module):
    """`eager_attention_forward` of the modeling file that defines `module` (transformers' Gemma2 one for TowerVision):
    each block runs exactly the arithmetic of the model's own eager path (softcap included)."""
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise ValueError(f"{type(module).__name__} has no eager_attention_forward: sample-wise eager cannot run it")
    return eager


def sample_eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    softcap: float | None = None,
    sliding_window: int | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention of `(batch, heads, seq, head_dim)` queries over keys/values of `(batch, kv_heads, kv_seq,
    head_dim)`, returned as `(batch, seq, heads, head_dim)`. Without a mask, each sample of a row (found in
    `position_ids`) attends causally over itself; with one, the mask decides (the model's eager attention)."""
    eager = model_eager_attention(module)
    options = {"dropout": dropout, "scaling": scaling, "softcap": softcap}
    if attention_mask is not None:
        return eager(module, query, key, value, attention_mask, **options)[0], None
    if position_ids is None:
        boundaries = [[0, query.shape[-2]]] * query.shape[0]
    else:
        boundaries = sample_boundaries(position_ids)
        boundaries = boundaries * query.shape[0] if len(boundaries) == 1 else boundaries  # unexpanded `(1, seq)`
    masks = {}
    rows = []
    # split, not indexing: the backward of a split is one concatenation, that of each slice a zero-filled full tensor
    row_tensors = zip(query.split(1), key.split(1), value.split(1))
    for bounds, (row_query, row_key, row_value) in zip(boundaries, row_tensors):
        lengths = [end - start for start, end in zip(bounds[:-1], bounds[1:])]
        samples = []
        for length, sample_query, sample_key, sample_value in zip(
            lengths, row_query.split(lengths, dim=2), row_key.split(lengths, dim=2), row_value.split(lengths, dim=2)
        ):
            if length not in masks:
                masks[length] = causal_mask(length, sliding_window, query.dtype, query.device)
            samples.append(eager(module, sample_query, sample_key, sample_value, masks[length], **options)[0])
        rows.append(torch.cat(samples, dim=1))
    return torch.cat(rows, dim=0), None


def sample_eager_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor | None:
    """No mask for a batch without padding mask or cache (the attention finds the samples itself), else eager's."""
    if attention_mask is None and q_offset == 0 and kv_offset == 0 and q_length == kv_length:
        return None
    return eager_mask(
        batch_size,
        q_length,
        kv_length,
        q_offset=q_offset,
        kv_offset=kv_offset,
        attention_mask=attention_mask,
        **kwargs,
    )


AttentionInterface.register(SAMPLE_EAGER, sample_eager_attention_forward)
AttentionMaskInterface.register(SAMPLE_EAGER, sample_eager_mask)
