"""Tiny, fully offline TowerVision building blocks: a byte-fallback Gemma tokenizer and a tiny config.

Used by the test suite, the embedded demo and `towervision init --tiny`. Nothing here touches the network.
The tiny model keeps every structural property of the real one (SigLIP tower without head, Gemma2 with both
softcaps and alternating sliding/global layers, tiles of an odd number of patches per side) at toy sizes.
"""

import string

from transformers import Gemma2Config, GemmaTokenizer, SiglipVisionConfig

from ..model.configuration_towervision import TowerVisionConfig


TINY_MODEL = "tiny"  # the model name that stands for the tiny model built from a seed (train, merge, demo)
SPECIAL_TOKENS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<image>",
    "<video>",
]
TINY_TILE_SIZE = 56  # 7×7 patches of 8 px: odd, like so400m's 27×27
TINY_PATCH_SIZE = 8


def build_tiny_tokenizer() -> GemmaTokenizer:
    """A Gemma-style tokenizer over special tokens, `▁`, printable ASCII and the 256 byte-fallback tokens.

    Ids: `<pad>`=0, `<eos>`=1, `<bos>`=2, `<unk>`=3; any UTF-8 text round-trips through the byte tokens.
    """
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for piece in ["▁", *string.ascii_letters, *string.digits, *string.punctuation]:
        vocab.setdefault(piece, len(vocab))
    tokenizer = GemmaTokenizer(
        vocab=vocab,
        merges=[],
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    return tokenizer


def tiny_config(tokenizer: GemmaTokenizer | None = None, **overrides) -> TowerVisionConfig:
    """A TowerVisionConfig with a 2-layer SigLIP tower and a 2-layer Gemma2 LM sized for `tokenizer`."""
    tokenizer = tokenizer or build_tiny_tokenizer()
    vision_config = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=TINY_TILE_SIZE,
        patch_size=TINY_PATCH_SIZE,
        vision_use_head=False,
    )
    text_config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=64,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,  # the tokenizer's; generation also stops at <end_of_turn>
    )
    kwargs = {
        "vision_config": vision_config,
        "text_config": text_config,
        "image_token_id": tokenizer.convert_tokens_to_ids("<image>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<video>"),
        "num_frames": 4,
        **overrides,
    }
    return TowerVisionConfig(**kwargs)


def build_tiny_processor(tokenizer: GemmaTokenizer | None = None):
    """A TowerVisionProcessor matching `tiny_config`: 56 px tiles of 8 px patches, at most 6 tiles, 4 video frames."""
    from ..model.processing_towervision import TowerVisionProcessor

    tokenizer = tokenizer or build_tiny_tokenizer()
    return TowerVisionProcessor.from_model_config(tiny_config(tokenizer), tokenizer)
