"""`towervision init`: compose the stage-0 TowerVision checkpoint from a SigLIP(2) and a Tower+ (Gemma2) checkpoint.

    towervision init --vision google/siglip2-so400m-patch14-384 --text Unbabel/Tower-Plus-2B out/stage0
    towervision init --tiny out/tiny

The vision tower keeps every encoder layer but the last one and no pooling head (features are read from the last
kept layer, as in the released models); the projector and the image newline are randomly initialised; `<image>`
and `<video>` are added to the tokenizer and the embedding matrix grows to match. The output folder is a complete
trust_remote_code checkpoint: weights, config, tokenizer, chat template, image and video processors.
"""

import logging
import re
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, GenerationConfig, SiglipVisionConfig

from ..model.configuration_towervision import TowerVisionConfig
from ..model.modeling_towervision import TowerVisionForConditionalGeneration
from ..model.processing_towervision import TowerVisionProcessor
from .convert import meta_model, save_streamed, stream_renamed
from .output import check_model_folder, staged_output
from .tiny import build_tiny_processor, build_tiny_tokenizer, tiny_config
from .weights import DTYPE_CODES, DTYPES, DTYPES_BY_CODE, EMBED_KEY, HEAD_KEY, PlannedTensor, WeightReader, read_json


logger = logging.getLogger(__name__)
# `--vision` folders: a full SigLIP / SigLIP2 (fixed resolution) checkpoint, or its vision tower alone
SIGLIP_MODEL_TYPES = ("siglip", "siglip_vision_model")


def generation_config_for(tokenizer) -> GenerationConfig:
    """Greedy by default; stops at `<end_of_turn>` (Tower+ chat turns) or `<eos>`."""
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    eos = [
        token
        for token in (end_of_turn, tokenizer.eos_token_id)
        if token is not None and token != tokenizer.unk_token_id
    ]
    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)


def build_tiny(seed: int = 0) -> tuple[TowerVisionForConditionalGeneration, TowerVisionProcessor]:
    """A random tiny TowerVision and its processor (offline; for tests, the demo and quick experiments)."""
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    model = TowerVisionForConditionalGeneration(tiny_config(tokenizer))
    model.generation_config = generation_config_for(tokenizer)
    return model, build_tiny_processor(tokenizer)


def resolve_folder(name_or_path: str, revision: str | None = None) -> Path:
    """A local checkpoint folder, or the Hub snapshot of a model id at `revision` (config, tokenizer and safetensors
    files)."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    check_model_folder(name_or_path, "a local checkpoint folder or a Hub model id")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.jinja"]
    try:
        return Path(snapshot_download(name_or_path, revision=revision, allow_patterns=patterns))
    except OSError as error:  # offline, unknown or gated repo, network failure
        raise OSError(f"{name_or_path} is not a local folder and cannot be fetched from the Hub: {error}") from None


def grown_rows(reader: WeightReader, name: str, num_rows: int, dtype: torch.dtype, block_rows: int = 16384):
    """`parts` of `name` grown to `num_rows` rows: the stored rows, then copies of their mean (float32 sum over
    row blocks, cast to `dtype`) for the new ones.

    That is transformers' mean-resizing (`resize_token_embeddings`) without its sampling noise of covariance
    1e-9 * the rows' covariance, which is below bfloat16 resolution and would need the full covariance matrix.
    """

    def parts():
        rows = reader.get(name).to(dtype)
        total = torch.zeros(rows.shape[1], dtype=torch.float32)
        for start in range(0, rows.shape[0], block_rows):
            total += rows[start : start + block_rows].to(torch.float32).sum(0)
        mean = (total / rows.shape[0]).to(dtype)
        yield rows
        del rows
        yield mean.expand(num_rows - reader.entries[name].shape[0], -1)

    return parts


def new_tensors(model, seed: int) -> dict[str, torch.Tensor]:
    """The projector and image newline of a stage-0 model, drawn as `_init_weights` draws them from a seeded generator.

    Projector weights ~ N(0, text initializer_range), biases 0, image newline ~ N(0, 1/sqrt(text hidden size));
    drawn in float32 in this order, then cast to the model's dtype.
    """
    generator = torch.Generator().manual_seed(seed)
    text_config = model.config.text_config
    tensors = {}
    for name, tensor in model.model.multi_modal_projector.named_parameters(prefix="model.multi_modal_projector"):
        value = torch.zeros(tensor.shape)
        if name.endswith("weight"):
            value.normal_(0.0, text_config.initializer_range, generator=generator)
        tensors[name] = value
    if model.model.image_newline is not None:
        newline = torch.zeros(text_config.hidden_size)
        tensors["model.image_newline"] = newline.normal_(0.0, text_config.hidden_size**-0.5, generator=generator)
    return {name: value.to(model.dtype) for name, value in tensors.items()}


def compose_checkpoint(
    vision: str,
    text: str,
    output: str | Path,
    max_tiles: int = 6,
    num_frames: int = 32,
    dtype: str | None = None,
    seed: int = 0,
    log=print,
) -> TowerVisionConfig:
    """Write a stage-0 TowerVision checkpoint composed of a SigLIP checkpoint (full SigLIP or vision-only) and a
    Gemma2 causal LM checkpoint, tensor by tensor (peak memory about the largest tensor, never the whole model).

    Args:
        vision, text: Hub ids or local folders with safetensors weights.
        output: folder to write.
        max_tiles, num_frames: image tiling limit and video frames of the processor and config.
        dtype: `"float32"`, `"bfloat16"` or `"float16"`; `None` keeps the text checkpoint's dtype (the vision
            tower is cast to it).
        seed: seed of the projector and image newline (`new_tensors`).
        log: receives one line per decision taken.
    """
    vision_dir, text_dir, output = resolve_folder(vision), resolve_folder(text), Path(output)
    vision_type = read_json(vision_dir / "config.json").get("model_type")
    if vision_type not in SIGLIP_MODEL_TYPES:
        raise ValueError(
            f"--vision {vision} is a {vision_type!r} model, not a SigLIP / SigLIP2 checkpoint "
            f"({vision_dir / 'config.json'})"
        )
    vision_config = SiglipVisionConfig.from_pretrained(vision_dir)
    text_config = AutoConfig.from_pretrained(text_dir)
    if text_config.model_type != "gemma2":
        logger.warning(
            "text model is %r, not gemma2: TowerVision was designed for Tower+ (Gemma2)", text_config.model_type
        )
    if vision_config.num_hidden_layers < 2:
        raise ValueError(
            f"--vision {vision} has {vision_config.num_hidden_layers} encoder layer(s); at least 2 are needed"
        )
    vision_reader, text_reader = WeightReader(vision_dir), WeightReader(text_dir)
    embed_name = "model.embed_tokens.weight"
    if embed_name not in text_reader.entries:
        raise ValueError(f"--text {text} holds no {embed_name}: not a Gemma2 causal LM checkpoint")
    torch_dtype = DTYPES[dtype] if dtype is not None else DTYPES_BY_CODE[text_reader.entries[embed_name].dtype]
    log(f"dtype: {str(torch_dtype).removeprefix('torch.')}" + (" (the text checkpoint's)" if dtype is None else ""))

    tokenizer = AutoTokenizer.from_pretrained(text_dir)
    tokenizer.add_special_tokens({"extra_special_tokens": ["<image>", "<video>"]}, replace_extra_special_tokens=False)
    stored_vocab = text_config.vocab_size
    text_config.vocab_size = max(stored_vocab, len(tokenizer))
    vision_dict = vision_config.to_dict()
    vision_dict.update(num_hidden_layers=vision_config.num_hidden_layers - 1, vision_use_head=False)
    vision_dict.update(dtype=torch_dtype, _name_or_path=vision)
    text_dict = {**text_config.to_dict(), "dtype": torch_dtype, "_name_or_path": text}
    config = TowerVisionConfig(
        vision_config=vision_dict,
        text_config=text_dict,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        max_tiles=max_tiles,
        num_frames=num_frames,
        tie_word_embeddings=text_config.tie_word_embeddings,
    )
    model = meta_model(TowerVisionForConditionalGeneration, config, torch_dtype)
    model.generation_config = generation_config_for(tokenizer)

    # The vision tower minus its last encoder layer and pooling head. Full SigLIP checkpoints (and vision-only ones
    # saved by transformers 4) store it under `vision_model.`, next to the text tower left out here.
    prefix = "vision_model." if any(name.startswith("vision_model.") for name in vision_reader.entries) else ""
    dropped = ("head.", f"encoder.layers.{vision_config.num_hidden_layers - 1}.")
    vision_names = {
        f"model.vision_tower.{name.removeprefix(prefix)}": name
        for name in vision_reader.entries
        if name.startswith(prefix) and not name.removeprefix(prefix).startswith(dropped)
    }
    text_names = {
        re.sub(r"^model\.", "model.language_model.", name): name
        for name in text_reader.entries
        if not (config.tie_word_embeddings and name == HEAD_KEY)
    }
    planned = stream_renamed(vision_reader, vision_names, torch_dtype) + stream_renamed(
        text_reader, text_names, torch_dtype
    )
    if text_config.vocab_size > stored_vocab:
        log(
            f"vocabulary: {stored_vocab} -> {text_config.vocab_size} (<image>, <video>); new rows = mean of the others"
        )
        grown = {EMBED_KEY: embed_name} if config.tie_word_embeddings else {EMBED_KEY: embed_name, HEAD_KEY: HEAD_KEY}
        planned = [
            PlannedTensor(tensor.name, tensor.dtype, (text_config.vocab_size, *tensor.shape[1:]),
                          grown_rows(text_reader, grown[tensor.name], text_config.vocab_size, torch_dtype))
            if tensor.name in grown else tensor
            for tensor in planned
        ]  # fmt: skip
    for name, value in new_tensors(model, seed).items():
        planned.append(PlannedTensor(name, DTYPE_CODES[value.dtype], tuple(value.shape), lambda value=value: [value]))
    with staged_output(output, [vision_dir, text_dir]) as staging:
        save_streamed(model, staging, planned)
        TowerVisionProcessor.from_model_config(config, tokenizer).save_pretrained(staging)
    return config
