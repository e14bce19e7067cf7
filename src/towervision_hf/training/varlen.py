"""A pure-torch reference of FlashAttention's varlen kernel, to run `towervision train`'s flattened-row path (packed
rows flattened into one row when the attention is a FlashAttention one) where no FlashAttention kernel installs.

`flash_attn_varlen_func` receives the tokens of all samples concatenated, `(total_tokens, heads, head_dim)`, and
`cu_seqlens`, the cumulative sample lengths `[0, L1, L1 + L2, ..., total_tokens]`: each sample attends causally over
itself only (and over its last `sliding_window` keys on sliding layers), nothing crosses a boundary.
[`reference_varlen_attention_forward`] takes the boundaries from the `cu_seq_lens_q` / `cu_seq_lens_k` a caller
passes, or derives them from `position_ids` exactly as transformers does before calling the kernel
(`prepare_fa_kwargs_from_position_ids`: a new sample wherever the position restarts), and runs each sample's causal
attention in float32 with Gemma2's softcap. It is registered under [`REFERENCE_FLASH_VARLEN`] for attention, and for
masks with transformers' FlashAttention mask (no mask unless there is padding), so a model set to it takes every
FlashAttention branch of `towervision train` (its name contains "flash"):

    model.set_attn_implementation({"text_config": REFERENCE_FLASH_VARLEN})

Tests and CPU checks only: it is as slow as eager attention.
"""

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask
from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

from .attention import causal_mask


REFERENCE_FLASH_VARLEN = "towervision_reference_flash_varlen"


def reference_varlen_attention_forward(
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
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Varlen attention of `(batch, heads, seq, head_dim)` queries over `(batch, kv_heads, seq, head_dim)` keys and
    values, returned as `(batch, seq, heads, head_dim)`.

    As transformers feeds FlashAttention: with a padding mask (`(batch, seq)`, FlashAttention's mask), each row's
    unpadded tokens are one sample and padded positions come out as zeros; without one, the rows are concatenated
    and cut into samples at `cu_seq_lens_q` or wherever `position_ids` restart (a packed row holds several).
    """
    batch, heads, length, _ = query.shape
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    # the kernel's layout: (batch, heads, seq, head_dim) -> (batch * seq, heads, head_dim), keys/values per query head
    query, key, value = (tensor.transpose(1, 2).flatten(0, 1) for tensor in (query, key, value))
    key = key.repeat_interleave(heads // key.shape[1], dim=1)
    value = value.repeat_interleave(heads // value.shape[1], dim=1)
    if attention_mask is not None:
        kept = attention_mask.bool().flatten().nonzero().squeeze(1)
        cu_seq_lens_q = nn.functional.pad(attention_mask.bool().sum(dim=1).cumsum(0), (1, 0))
        query, key, value = query[kept], key[kept], value[kept]
    elif cu_seq_lens_q is None:
        if position_ids is None:
            position_ids = torch.arange(length, device=query.device).expand(batch, length)
        (cu_seq_lens_q, cu_seq_lens_k), _ = prepare_fa_kwargs_from_position_ids(position_ids)
    if cu_seq_lens_k is not None and not torch.equal(cu_seq_lens_q, cu_seq_lens_k):
        raise ValueError("the reference varlen attention runs self-attention: cu_seq_lens_q must equal cu_seq_lens_k")
    outputs = []
    for start, end in zip(cu_seq_lens_q[:-1].tolist(), cu_seq_lens_q[1:].tolist()):
        scores = torch.einsum("qhd,khd->hqk", query[start:end], key[start:end]).float() * scaling
        if softcap is not None:
            scores = softcap * torch.tanh(scores / softcap)
        # the causal / sliding-window rule of one sample, as eager applies it: `(1, L, L)` over the heads
        scores = scores + causal_mask(end - start, sliding_window, scores.dtype, query.device)[0]
        probs = scores.softmax(dim=-1).to(value.dtype)
        probs = nn.functional.dropout(probs, p=dropout, training=module.training)
        outputs.append(torch.einsum("hqk,khd->qhd", probs, value[start:end]))
    output = torch.cat(outputs)
    if attention_mask is not None:  # back to the padded layout
        output = output.new_zeros(batch * length, *output.shape[1:]).index_copy(0, kept, output)
    return output.unflatten(0, (batch, length)), None


AttentionInterface.register(REFERENCE_FLASH_VARLEN, reference_varlen_attention_forward)
AttentionMaskInterface.register(REFERENCE_FLASH_VARLEN, flash_attention_mask)
