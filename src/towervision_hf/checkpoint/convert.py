"""`towervision convert` and `towervision export`: move checkpoints between the released format and TowerVision.

The released TowerVision / TowerVideo checkpoints are native transformers `llava_next` / `llava_onevision`
folders exported with transformers 4.52. Run as they are under transformers >= 5.4, they no longer compute what
was trained (README.md, "What the remote code fixes"): the Gemma2 `sqrt(hidden_size)` normalizer moved into the
embedding layer, so merged image features are no longer scaled, the final-logit softcap is not applied by the Llava
head, and transformers 5 reads the top-level `tie_word_embeddings: false` and leaves the (absent) LM head random.

`convert` turns such a folder into a TowerVision `trust_remote_code` checkpoint that reproduces the trained
behaviour (`scale_image_features=True`, softcap, deliberate tying), with every tensor copied bit for bit.
`export` goes the other way, for tools that only know the native classes (see `NORMALIZER_CAVEAT`).
"""

import json
import math
import re
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoProcessor,
    AutoTokenizer,
    GenerationConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
)

from ..model.configuration_towervision import TowerVisionConfig
from ..model.image_processing_towervision import TowerVisionImageProcessor
from ..model.modeling_towervision import TowerVisionForConditionalGeneration
from ..model.processing_towervision import DEFAULT_CHAT_TEMPLATE, TowerVisionProcessor
from ..model.tiling_towervision import restrict_pinpoints
from ..model.video_processing_towervision import TowerVisionVideoProcessor
from .output import staged_output
from .weights import (
    DEFAULT_MAX_SHARD_SIZE,
    DTYPE_CODES,
    DTYPES,
    DTYPES_BY_CODE,
    EMBED_KEY,
    HEAD_KEY,
    PlannedTensor,
    WeightReader,
    parse_size,
    read_json,
    write_shards,
)


SOURCE_MODEL_TYPES = ("llava_next", "llava_onevision")

# On-disk names of llava checkpoints -> TowerVision (= transformers 5.x LlavaNext) in-memory names. First match
# wins. Covers the layout written by transformers 4.x and by 5.x `save_pretrained` (which reverses its own
# renaming: `language_model.model.*`, `vision_tower.vision_model.*`, ...) and the 5.x in-memory layout itself.
SOURCE_KEY_RULES = [
    (r"^language_model\.lm_head\.", "lm_head."),
    (r"^(?:model\.)?language_model\.model\.", "model.language_model."),
    (r"^(?:model\.)?language_model\.", "model.language_model."),
    (r"^(?:model\.)?vision_tower\.vision_model\.", "model.vision_tower."),
    (r"^(?:model\.)?vision_tower\.", "model.vision_tower."),
    (r"^(?:model\.)?multi_modal_projector\.", "model.multi_modal_projector."),
    (r"^(?:model\.)?image_newline$", "model.image_newline"),
    (r"^lm_head\.", "lm_head."),
]

NORMALIZER_CAVEAT = """\
Caveat: this model was trained with its projected image/video features (image-newline rows included) multiplied
by sqrt(text hidden_size): Gemma2 applied that normalizer to the whole inputs_embeds before transformers 5.4.
transformers >= 5.4 applies it inside the embedding layer, so its native LlavaNext / LlavaOnevision classes merge
the image features {factor:.4g}x too small and answer differently. The export computes the trained features under
transformers < 5.4 (it loads there, e.g. 4.52-4.57) and under serving stacks that apply the normalizer to merged
embeddings as those versions did (check your vLLM version). The native Llava heads never apply Gemma2's
final-logit softcap: log-probs and sampling differ slightly, greedy outputs do not. Under transformers >= 5.4,
load the TowerVision checkpoint instead (AutoModelForImageTextToText.from_pretrained(..., trust_remote_code=True))
or re-convert this folder with `towervision convert`. transformers 5 picks the torchvision image processor by
default, a few 1/255 off the PIL one the model was trained with; for exact pixels use
AutoImageProcessor.from_pretrained(folder, backend="pil")."""


def rename_source_key(key: str) -> str:
    """The TowerVision in-memory name of a llava checkpoint tensor name; `ValueError` for a name it cannot place."""
    for pattern, replacement in SOURCE_KEY_RULES:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    raise ValueError(f"checkpoint tensor {key!r} does not belong to a llava_next / llava_onevision model")


def rename_state_dict(state_dict: dict) -> dict:
    """Rename every key (tensor name) with `rename_source_key`; two source names landing on one target is an error."""
    renamed = {}
    for key, tensor in state_dict.items():
        target = rename_source_key(key)
        if target in renamed:
            raise ValueError(f"checkpoint tensors collide on {target!r} (one of them is {key!r})")
        renamed[target] = tensor
    return renamed


def resolve_lm_head(names, load, text_ties: bool) -> tuple[bool, str]:
    """Decide whether the converted model ties its LM head (then `lm_head.weight`, if stored, is not written).

    `names` are the checkpoint's (renamed) tensor names and `load(name)` reads one tensor: only the head and the
    embeddings are read, and only when a head is stored. Returns `(tie_word_embeddings, message)`. A missing head
    is tied only when the source's `text_config` ties it (what transformers 4.x, which ignores the top-level flag,
    did when it saved the release); a head equal to the embeddings is tied; a different head is kept.
    """
    if EMBED_KEY not in names:
        raise ValueError(f"the checkpoint has no input embeddings ({EMBED_KEY!r} after renaming)")
    if HEAD_KEY not in names:
        if not text_ties:
            raise ValueError(
                "the checkpoint holds no lm_head.weight and its text_config does not tie the head to the input "
                "embeddings: the language-model head is missing"
            )
        return True, (
            "The source holds no lm_head.weight: it was saved tied to the input embeddings through "
            "text_config.tie_word_embeddings=true (transformers 4.x ties through the text config and ignores the "
            "top-level tie_word_embeddings=false, which transformers 5's LlavaNext reads, leaving its head randomly "
            "initialised). Tying lm_head to model.language_model.embed_tokens deliberately: tie_word_embeddings=True."
        )
    head, embeddings = load(HEAD_KEY), load(EMBED_KEY)
    if head.shape == embeddings.shape and torch.equal(head, embeddings):
        return True, "lm_head.weight equals the input embeddings: tied (tie_word_embeddings=True), stored once."
    return (
        False,
        "lm_head.weight differs from the input embeddings: kept as a separate head (tie_word_embeddings=False).",
    )


def max_tiles_of(pinpoints: list[list[int]], tile_size: int) -> int:
    """Largest number of tiles among `[height, width]` pinpoints."""
    return max((height // tile_size) * (width // tile_size) for height, width in pinpoints)


def anyres_max_safe_tiles(vision_aspect_ratio: str) -> int:
    """Most tiles a grid may have before LLaVA-OneVision's `anyres_max_N` downsamples its features.

    OneVision shrinks a tile-grid feature map when `sqrt(height * width / (N * patches_per_side**2)) > 1.1`; a grid
    of `rows * cols` tiles never triggers it when `sqrt(rows * cols / N) <= 1.1`. TowerVision does not downsample,
    so it matches OneVision exactly on grids up to this size.
    """
    if not vision_aspect_ratio.startswith("anyres_max_"):
        raise ValueError(f"unsupported vision_aspect_ratio {vision_aspect_ratio!r} (expected 'anyres_max_N')")
    limit = int(vision_aspect_ratio.removeprefix("anyres_max_"))
    tiles = 1
    while math.sqrt((tiles + 1) / limit) <= 1.1:
        tiles += 1
    return tiles


def towervision_config_from_release(
    source, tie_word_embeddings: bool, video_token_id: int | None, max_tiles: int | None = None
) -> TowerVisionConfig:
    """Map a loaded `LlavaNextConfig` / `LlavaOnevisionConfig` onto a `TowerVisionConfig`.

    Every field that shapes the computation is carried over; `max_tiles` drops the pinpoints with more tiles.
    `scale_image_features` is True for Gemma-family language models (what the release was trained with) unless
    the source records the switch itself, as `towervision export` does.
    """
    if source.model_type not in SOURCE_MODEL_TYPES:
        raise ValueError(f"source model_type {source.model_type!r} is not one of {SOURCE_MODEL_TYPES}")
    vision_config = source.vision_config.to_dict()
    text_config = source.text_config.to_dict()
    # `architectures: ["LlavaGemma2ForCausalLM"]` names the training fork's class; it misleads tools (vLLM).
    for key in ("architectures", "_name_or_path"):
        text_config.pop(key, None)
        vision_config.pop(key, None)
    text_config["tie_word_embeddings"] = tie_word_embeddings
    tile_size = vision_config["image_size"]
    pinpoints = [list(p) for p in source.image_grid_pinpoints]
    if max_tiles is not None:
        pinpoints = restrict_pinpoints(pinpoints, max_tiles, tile_size)
    scale_default = source.text_config.model_type in ("gemma", "gemma2")
    return TowerVisionConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=source.image_token_id,
        video_token_id=video_token_id,
        projector_hidden_act=source.projector_hidden_act,
        multimodal_projector_bias=getattr(source, "multimodal_projector_bias", True),
        vision_feature_layer=source.vision_feature_layer,
        vision_feature_select_strategy=source.vision_feature_select_strategy,
        max_tiles=max_tiles_of(pinpoints, tile_size),
        tile_size=tile_size,
        image_grid_pinpoints=pinpoints,
        use_image_newline=getattr(source, "use_image_newline_parameter", True),
        scale_image_features=getattr(source, "scale_image_features", scale_default),
        tie_word_embeddings=tie_word_embeddings,
    )


def load_release_config(directory: Path):
    """The source folder's config as transformers' own config class (absent keys take the class defaults)."""
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{directory} has no config.json")
    model_type = read_json(config_file).get("model_type")
    if model_type not in SOURCE_MODEL_TYPES:
        raise ValueError(
            f"{config_file} has model_type {model_type!r}; `towervision convert` reads "
            f"{' / '.join(SOURCE_MODEL_TYPES)} "
            "checkpoints (utter-project/TowerVision-*, TowerVideo-*)"
        )
    return AutoConfig.from_pretrained(directory)


def meta_model(model_class, config, dtype: torch.dtype):
    """`model_class(config)` on the meta device, in `dtype`: its tensor names, shapes, config and code, no memory."""
    with torch.device("meta"):
        return model_class(config).to(dtype)


def check_tensor_shapes(model, shapes: dict[str, tuple[int, ...]]) -> None:
    """`ValueError` unless `shapes` names exactly the tensors of `model` (its tied head aside), each with its shape."""
    expected = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        expected.pop(HEAD_KEY, None)
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not match {type(model).__name__}: missing {missing}, unexpected {unexpected}"
        )
    for key, shape in shapes.items():
        if tuple(shape) != expected[key]:
            raise ValueError(f"{key} has shape {tuple(shape)} in the checkpoint, the config needs {expected[key]}")


def save_streamed(model, output: Path, planned: list[PlannedTensor], max_shard_size=DEFAULT_MAX_SHARD_SIZE):
    """What `model.save_pretrained(output)` writes, for a `meta_model`, with the weights streamed from `planned`.

    Config (dtype, architectures, auto_map), generation config and remote code come from `save_pretrained`; the
    weights are written tensor by tensor (`hub.weights.write_shards`), so peak memory is about the largest tensor.
    """
    check_tensor_shapes(model, {tensor.name: tensor.shape for tensor in planned})
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output, state_dict={})  # everything but the weights
    write_shards(planned, output, parse_size(max_shard_size))


def stream_renamed(reader: WeightReader, names: dict[str, str], dtype: torch.dtype | None) -> list[PlannedTensor]:
    """Plan `{target name: stored name}` tensors of `reader`, floating-point ones cast to `dtype` when given."""
    planned = []
    for target, name in names.items():
        entry = reader.entries[name]
        cast = dtype if dtype is not None and DTYPES_BY_CODE[entry.dtype].is_floating_point else None
        code = DTYPE_CODES[cast] if cast is not None else entry.dtype
        planned.append(PlannedTensor(target, code, entry.shape, reader.loader(name, cast)))
    return planned


def sub_processor_config(directory: Path, name: str) -> dict:
    """Saved settings of the source's image (`name="image_processor"`) or video processor, 4.x or 5.x layout."""
    legacy_file = directory / (
        "preprocessor_config.json" if name == "image_processor" else "video_preprocessor_config.json"
    )
    if legacy_file.is_file():
        return json.loads(legacy_file.read_text())
    processor_file = directory / "processor_config.json"
    if processor_file.is_file() and name in (processor := json.loads(processor_file.read_text())):
        return processor[name]
    return {}


def single_tile_size(settings: dict, name: str) -> int:
    """The square tile a llava image/video processor config resizes to; `ValueError` for other geometries."""
    size = settings.get("size") or {}
    side = size.get("shortest_edge") or (size.get("height") if size.get("height") == size.get("width") else None)
    crop = settings.get("crop_size")
    if side is None or (
        settings.get("do_center_crop") and crop and (crop.get("height"), crop.get("width")) != (side, side)
    ):
        raise ValueError(f"{name} resizes to size={size}, crop_size={crop}: only square tiles are supported")
    return side


def chat_template_of(directory: Path) -> str | None:
    """The source's chat template: `chat_template.jinja`, else the one stored in a processor/tokenizer config."""
    if (directory / "chat_template.jinja").is_file():
        return (directory / "chat_template.jinja").read_text()
    for name in ("chat_template.json", "processor_config.json", "tokenizer_config.json"):
        path = directory / name
        if path.is_file() and isinstance(template := json.loads(path.read_text()).get("chat_template"), str):
            return template
    return None


def write_legacy_processor_files(directory: Path, text_model_type: str):
    """Rewrite a processor saved by transformers 5 into the layout transformers 4.x also reads (the release's).

    transformers 5 nests the image/video processor settings in `processor_config.json` and stores named extra
    special tokens as a list; 4.x reads `preprocessor_config.json` / `video_preprocessor_config.json`, a flat
    `processor_config.json` and `additional_special_tokens`. transformers 5 reads both layouts.
    """
    processor_file = directory / "processor_config.json"
    processor = json.loads(processor_file.read_text())
    for name, filename in (
        ("image_processor", "preprocessor_config.json"),
        ("video_processor", "video_preprocessor_config.json"),
    ):
        if name in processor:
            settings = {**processor.pop(name), "processor_class": processor["processor_class"]}
            (directory / filename).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    processor_file.write_text(json.dumps(processor, indent=2, sort_keys=True) + "\n")
    tokenizer_file = directory / "tokenizer_config.json"
    tokenizer = json.loads(tokenizer_file.read_text())
    if isinstance(tokenizer.get("extra_special_tokens"), list):
        tokenizer["additional_special_tokens"] = tokenizer.pop("extra_special_tokens")
    if tokenizer.get("tokenizer_class") == "TokenizersBackend":  # 5.x generic class, unknown to 4.x
        gemma = text_model_type in ("gemma", "gemma2")
        tokenizer["tokenizer_class"] = "GemmaTokenizerFast" if gemma else "PreTrainedTokenizerFast"
    tokenizer_file.write_text(json.dumps(tokenizer, indent=2, sort_keys=True) + "\n")


# Conversations that every chat template is rendered on to decide whether two templates are interchangeable.
TEMPLATE_PROBES = [
    [{"role": "user", "content": "<image>\nDescribe the image."}],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "<image>\nWhat is this?"},
        {"role": "assistant", "content": "A chart."},
        {"role": "user", "content": "  Translate to German:\nGood morning  "},
    ],
    [{"role": "user", "content": "<video>\nWhat happens?"}, {"role": "assistant", "content": "A square moves."}],
]


def renders_like(tokenizer, template: str, reference_template: str) -> bool:
    """Whether `template` renders every probe conversation exactly like `reference_template`."""
    for messages in TEMPLATE_PROBES:
        for add_generation_prompt in (True, False):
            rendered = [
                tokenizer.apply_chat_template(
                    messages, chat_template=t, tokenize=False, add_generation_prompt=add_generation_prompt
                )
                for t in (template, reference_template)
            ]
            if rendered[0] != rendered[1]:
                return False
    return True


def build_towervision_processor(source: Path, config: TowerVisionConfig, tokenizer, log):
    """TowerVisionProcessor with the source's preprocessing (tile, pinpoints, resampling, mean/std, frames).

    Its image path reproduces transformers 4.52's PIL `LlavaNextImageProcessor` exactly, whatever backend the
    source names. The project's chat template is used when it renders the release's conversations identically.
    """
    image_settings = sub_processor_config(source, "image_processor")
    if not image_settings:
        raise ValueError(f"{source} has no image processor config (preprocessor_config.json / processor_config.json)")
    if single_tile_size(image_settings, "the image processor") != config.tile_size:
        raise ValueError(
            f"the image processor's tile {image_settings.get('size')} differs from the vision tower's "
            f"{config.tile_size}"
        )
    if not math.isclose(image_settings.get("rescale_factor", 1 / 255), 1 / 255):
        raise ValueError(f"unsupported rescale_factor {image_settings['rescale_factor']} (expected 1/255)")
    normalisation = {
        key: image_settings[key] for key in ("image_mean", "image_std", "resample") if key in image_settings
    }
    image_processor = TowerVisionImageProcessor(
        tile_size=config.tile_size,
        image_grid_pinpoints=config.image_grid_pinpoints,
        max_tiles=config.max_tiles,
        **normalisation,
    )
    # TowerVideo's frame settings; an image-only source gets the model's defaults (frames of one tile).
    video_settings = sub_processor_config(source, "video_processor")
    size = single_tile_size(video_settings, "the video processor") if video_settings.get("size") else config.tile_size
    if size != config.tile_size:
        raise ValueError(f"the video processor's frame size {size} differs from the vision tower's {config.tile_size}")
    video_processor = TowerVisionVideoProcessor(
        size={"height": size, "width": size},
        num_frames=video_settings.get("num_frames") or config.num_frames,
        **{key: video_settings[key] for key in ("image_mean", "image_std", "resample") if key in video_settings},
    )
    template = chat_template_of(source)
    if template is None or renders_like(tokenizer, DEFAULT_CHAT_TEMPLATE, template):
        chat_template = DEFAULT_CHAT_TEMPLATE
        log(
            "chat template: TowerVision's (renders the release's string-content conversations identically, and "
            "also typed content blocks and assistant-only loss spans)"
            if template
            else "chat template: the source has none, using TowerVision's"
        )
    else:
        chat_template = template
        log("chat template: kept the source's (TowerVision's default renders its conversations differently)")
    return TowerVisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=chat_template,
        patch_size=config.vision_config.patch_size,
        video_pool_size=config.video_pool_size,
        use_image_newline=config.use_image_newline,
    )


def convert_checkpoint(
    source: str | Path, output: str | Path, dtype: str | None = None, max_tiles: int | None = None, log=print
) -> TowerVisionConfig:
    """Convert a released `llava_next` / `llava_onevision` folder into a TowerVision trust_remote_code folder.

    Args:
        source: folder of the released checkpoint (config, safetensors weights, tokenizer, processor).
        output: folder to write, missing or empty (written beside it, renamed into place when complete).
        dtype: `"float32"`, `"bfloat16"` or `"float16"` to cast the floating-point weights; `None` keeps them.
        max_tiles: keep only the pinpoints of at most this many tiles. By default a `llava_onevision` source keeps
            those its `anyres_max_N` never downsamples (TowerVision does not implement that downsampling).
        log: receives one line per decision taken.

    Returns:
        The `TowerVisionConfig` that was saved.
    """
    source, output = Path(source), Path(output)
    release = load_release_config(source)
    log(
        f"source: {source} ({release.model_type}, saved by transformers "
        f"{getattr(release, 'transformers_version', '?')})"
    )
    tokenizer = AutoTokenizer.from_pretrained(source)
    reader = WeightReader(source)
    names = rename_state_dict({name: name for name in reader.entries})  # TowerVision name -> stored name
    log(f"weights: {len(names)} tensors renamed to TowerVision names, copied bit for bit (streamed one at a time)")
    text_ties = getattr(release.text_config, "tie_word_embeddings", True)
    tie, message = resolve_lm_head(names, lambda key: reader.get(names[key]), text_ties=text_ties)
    log(message)
    if tie:
        names.pop(HEAD_KEY, None)
    target_dtype = DTYPES[dtype] if dtype is not None else DTYPES_BY_CODE[reader.entries[names[EMBED_KEY]].dtype]
    if dtype is not None:
        log(f"dtype: floating-point weights cast to {dtype}")

    if release.model_type == "llava_onevision":
        video_token_id = release.video_token_id
        if max_tiles is None:
            max_tiles = anyres_max_safe_tiles(release.vision_aspect_ratio)
            log(
                f"tiling: kept the pinpoints of <= {max_tiles} tiles, where LLaVA-OneVision's "
                f"{release.vision_aspect_ratio} leaves features at full resolution and TowerVision computes the same "
                "(TowerVision's own image training used <= 6 tiles: --max-tiles 6)"
            )
    else:
        video_token_id = tokenizer.convert_tokens_to_ids("<video>") if "<video>" in tokenizer.get_vocab() else None
    config = towervision_config_from_release(release, tie, video_token_id, max_tiles=max_tiles)
    config.dtype = target_dtype
    log(
        f"config: image_token_id={config.image_token_id}, video_token_id={config.video_token_id}, "
        f"{len(config.image_grid_pinpoints)} pinpoints (<= {config.max_tiles} tiles of {config.tile_size} px), "
        f"vision_feature_layer={config.vision_feature_layer}, strategy={config.vision_feature_select_strategy!r}, "
        f"scale_image_features={config.scale_image_features}, dtype={str(config.dtype).removeprefix('torch.')}"
    )
    model = meta_model(TowerVisionForConditionalGeneration, config, target_dtype)
    processor = build_towervision_processor(source, config, tokenizer, log)

    generation_config = (
        GenerationConfig.from_pretrained(source)
        if (source / "generation_config.json").is_file()
        else GenerationConfig()
    )
    generation_config.bos_token_id = tokenizer.bos_token_id
    vocab = tokenizer.get_vocab()
    generation_config.eos_token_id = vocab.get("<end_of_turn>", tokenizer.eos_token_id)
    generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config = generation_config

    with staged_output(output, [source]) as staging:
        save_streamed(model, staging, stream_renamed(reader, names, DTYPES[dtype] if dtype is not None else None))
        processor.save_pretrained(staging)
    log(
        f"saved a trust_remote_code TowerVision checkpoint to {output} "
        f"(generation: bos={generation_config.bos_token_id}, "
        f"eos={generation_config.eos_token_id}); load it with "
        "AutoModelForImageTextToText.from_pretrained(..., trust_remote_code=True)"
    )
    return config


def native_config_from_towervision(config: TowerVisionConfig, native_format: str):
    """`LlavaNextConfig` / `LlavaOnevisionConfig` with the same computation as `config` (scale aside).

    `scale_image_features` is recorded as an extra key so that `convert` restores it.
    """
    if not config.use_image_newline:
        raise ValueError(
            "native llava classes always append image-newline features; use_image_newline=False cannot be exported"
        )
    if config.image_aspect_ratio != "anyres":
        raise ValueError(
            f"image_aspect_ratio={config.image_aspect_ratio!r} (one tile per image, no newline: a stage-1 layout) has "
            "no llava_next / llava_onevision equivalent; export a model trained with anyres (stage 2 or later)"
        )
    text_config = config.text_config.to_dict()
    text_config["tie_word_embeddings"] = config.tie_word_embeddings
    common = {
        "vision_config": config.vision_config.to_dict(),
        "text_config": text_config,
        "image_token_index": config.image_token_id,
        "projector_hidden_act": config.projector_hidden_act,
        "multimodal_projector_bias": config.multimodal_projector_bias,
        "vision_feature_layer": config.vision_feature_layer,
        "vision_feature_select_strategy": config.vision_feature_select_strategy,
        "image_grid_pinpoints": config.image_grid_pinpoints,
        "tie_word_embeddings": config.tie_word_embeddings,
        "scale_image_features": config.scale_image_features,
    }
    if native_format == "llava_next":
        native = LlavaNextConfig(**common, use_image_newline_parameter=True)
    elif native_format == "llava_onevision":
        if config.video_token_id is None:
            raise ValueError("this checkpoint has no <video> token (video_token_id=None): export it as llava_next")
        if config.video_pool_size != 2:
            raise ValueError(
                f"LLaVA-OneVision pools video frames 2x2; video_pool_size={config.video_pool_size} cannot be exported"
            )
        limit = 9
        while anyres_max_safe_tiles(f"anyres_max_{limit}") < config.max_tiles:
            limit += 1
        native = LlavaOnevisionConfig(
            **common, video_token_index=config.video_token_id, vision_aspect_ratio=f"anyres_max_{limit}"
        )
    else:
        raise ValueError(f"unknown export format {native_format!r}; choose llava_next or llava_onevision")
    native.dtype = config.dtype
    return native


def build_native_processor(processor, native_config, native_format: str):
    """transformers' own LlavaNext / LlavaOnevision processor with the TowerVision processor's settings."""
    images = processor.image_processor
    tile = images.tile_size
    normalisation = {"image_mean": images.image_mean, "image_std": images.image_std, "resample": images.resample}
    if native_format == "llava_next":
        image_processor = LlavaNextImageProcessorPil(
            size={"shortest_edge": tile},
            crop_size={"height": tile, "width": tile},
            image_grid_pinpoints=images.image_grid_pinpoints,
            do_pad=True,
            **normalisation,
        )
        return LlavaNextProcessor(
            image_processor=image_processor,
            tokenizer=processor.tokenizer,
            patch_size=processor.patch_size,
            vision_feature_select_strategy=native_config.vision_feature_select_strategy,
            chat_template=processor.chat_template,
        )
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": tile, "width": tile},
        image_grid_pinpoints=images.image_grid_pinpoints,
        do_pad=True,
        **normalisation,
    )
    videos = processor.video_processor
    video_processor = LlavaOnevisionVideoProcessor(
        size=dict(videos.size),
        image_mean=videos.image_mean,
        image_std=videos.image_std,
        resample=videos.resample,
        do_sample_frames=True,
        num_frames=videos.num_frames,
    )
    return LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=processor.tokenizer,
        video_processor=video_processor,
        num_image_tokens=(tile // processor.patch_size) ** 2,
        vision_feature_select_strategy=native_config.vision_feature_select_strategy,
        vision_aspect_ratio=native_config.vision_aspect_ratio,
        chat_template=processor.chat_template,
    )


# TowerVision in-memory names -> the on-disk layout of native llava checkpoints, which transformers 4.x (SigLIP
# with its `vision_model` wrapper) and 5.x (renaming on load) both read; it is what the release ships.
NATIVE_KEY_RULES = [
    (r"^model\.language_model\.", "language_model.model."),
    (r"^model\.vision_tower\.", "vision_tower.vision_model."),
    (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
    (r"^model\.image_newline$", "image_newline"),
    (r"^lm_head\.", "lm_head."),
]
VISION_MODELS_WITH_WRAPPER = ("siglip_vision_model", "clip_vision_model")


def native_key(key: str) -> str:
    """The on-disk name of a TowerVision tensor in a native llava checkpoint."""
    for pattern, replacement in NATIVE_KEY_RULES:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    raise ValueError(f"tensor {key!r} has no place in a native llava checkpoint")


def export_checkpoint(source: str | Path, output: str | Path, native_format: str, log=print):
    """Export a TowerVision checkpoint as a native `llava_next` / `llava_onevision` folder (weights bit-exact).

    The folder loads with transformers' native classes and processor, under transformers 5 and 4.x alike (the
    release's file layout); read `NORMALIZER_CAVEAT` for what those classes compute differently.
    """
    source, output = Path(source), Path(output)
    model_type = read_json(source / "config.json").get("model_type") if (source / "config.json").is_file() else None
    if model_type != TowerVisionConfig.model_type:
        raise ValueError(f"{source} is not a TowerVision checkpoint (config.json model_type {model_type!r})")
    config = TowerVisionConfig.from_pretrained(source)
    if config.vision_config.model_type not in VISION_MODELS_WITH_WRAPPER:
        raise ValueError(f"exporting a {config.vision_config.model_type!r} vision tower is not supported")
    reader = WeightReader(source)
    names = rename_state_dict({name: name for name in reader.entries})  # TowerVision name -> stored name
    config.dtype = DTYPES_BY_CODE[reader.entries[names[EMBED_KEY]].dtype]
    native_config = native_config_from_towervision(config, native_format)
    native_class = (
        LlavaNextForConditionalGeneration if native_format == "llava_next" else LlavaOnevisionForConditionalGeneration
    )
    shapes = {key: reader.entries[name].shape for key, name in names.items()}
    check_tensor_shapes(meta_model(native_class, native_config, config.dtype), shapes)  # each tensor has its place
    processor = build_native_processor(
        AutoProcessor.from_pretrained(source, trust_remote_code=True), native_config, native_format
    )

    planned = stream_renamed(reader, {native_key(key): name for key, name in names.items()}, dtype=None)
    with staged_output(output, [source]) as staging:
        write_shards(planned, staging, parse_size(DEFAULT_MAX_SHARD_SIZE))
        native_config.save_pretrained(staging)
        if (source / "generation_config.json").is_file():
            GenerationConfig.from_pretrained(source).save_pretrained(staging)
        processor.save_pretrained(staging)
        write_legacy_processor_files(staging, config.text_config.model_type)
    if native_format == "llava_next" and config.video_token_id is not None:
        log("note: llava_next has no video input; the <video> token stays in the vocabulary unused")
    log(
        f"exported {source} as native {native_format} ({native_class.__name__}, {len(names)} tensors bit-exact, "
        f"tie_word_embeddings={config.tie_word_embeddings}) to {output}"
    )
    log(NORMALIZER_CAVEAT.format(factor=config.text_config.hidden_size**0.5))
    if native_format == "llava_next":
        log(
            "Also: native LlavaNext tiles every image of a multi-image prompt, TowerVision gives each of them one "
            "tile (LLaVA-OneVision rule); single-image prompts and text are processed identically."
        )
    return native_config
