"""`towervision init`: compose the stage-0 TowerVision checkpoint from a SigLIP(2) and a Tower+ (Gemma2) checkpoint.

    towervision init --vision google/siglip2-so400m-patch14-384 --text Unbabel/Tower-Plus-2B out/stage0
    towervision init --tiny out/tiny

The vision tower keeps every encoder layer but the last one and no pooling head (features are read from the last
kept layer, as in the released models); the projector and the image newline are randomly initialised; `<image>`
and `<video>` are added to the tokenizer and the embedding matrix grows to match. The output folder is a complete
trust_remote_code checkpoint: weights, config, tokenizer, chat template, image and video processors.
"""

import argparse
import logging

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, SiglipVisionModel

from .configuration_towervision import TowerVisionConfig
from .modeling_towervision import TowerVisionForConditionalGeneration
from .processing_towervision import TowerVisionProcessor
from .tiny import build_tiny_processor, build_tiny_tokenizer, tiny_config


logger = logging.getLogger(__name__)


def generation_config_for(tokenizer) -> GenerationConfig:
    """Greedy by default; stops at `<end_of_turn>` (Tower+ chat turns) or `<eos>`."""
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    eos = [token for token in (end_of_turn, tokenizer.eos_token_id) if token is not None and token != tokenizer.unk_token_id]
    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)


def build_tiny(seed: int = 0) -> tuple[TowerVisionForConditionalGeneration, TowerVisionProcessor]:
    """A random tiny TowerVision and its processor (offline; for tests, the demo and quick experiments)."""
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    model = TowerVisionForConditionalGeneration(tiny_config(tokenizer))
    model.generation_config = generation_config_for(tokenizer)
    return model, build_tiny_processor(tokenizer)


def compose_from_pretrained(
    vision: str, text: str, max_tiles: int = 6, num_frames: int = 32, dtype: str = "float32", seed: int = 0
) -> tuple[TowerVisionForConditionalGeneration, TowerVisionProcessor]:
    """Stage-0 TowerVision from a SigLIP checkpoint (full SigLIP or vision-only) and a Gemma2 causal LM checkpoint."""
    torch_dtype = getattr(torch, dtype)
    vision_model = SiglipVisionModel.from_pretrained(vision, dtype=torch_dtype)
    language_model = AutoModelForCausalLM.from_pretrained(text, dtype=torch_dtype)
    if language_model.config.model_type != "gemma2":
        logger.warning("text model is %r, not gemma2: TowerVision was designed for Tower+ (Gemma2)", language_model.config.model_type)
    tokenizer = AutoTokenizer.from_pretrained(text)
    tokenizer.add_special_tokens({"extra_special_tokens": ["<image>", "<video>"]}, replace_extra_special_tokens=False)
    if len(tokenizer) > language_model.config.vocab_size:
        language_model.resize_token_embeddings(len(tokenizer))

    vision_config = vision_model.config.to_dict()
    if vision_config["num_hidden_layers"] < 2:
        raise ValueError(f"--vision {vision} has {vision_config['num_hidden_layers']} encoder layer(s); at least 2 are needed")
    vision_config.update(num_hidden_layers=vision_config["num_hidden_layers"] - 1, vision_use_head=False)
    config = TowerVisionConfig(
        vision_config=vision_config,
        text_config=language_model.config.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        max_tiles=max_tiles,
        num_frames=num_frames,
        tie_word_embeddings=language_model.config.tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = TowerVisionForConditionalGeneration(config).to(torch_dtype)

    kept_layers = config.vision_config.num_hidden_layers
    vision_state = {
        key: value
        for key, value in vision_model.state_dict().items()
        if not key.startswith(("head.", f"encoder.layers.{kept_layers}."))
    }
    model.model.vision_tower.load_state_dict(vision_state, strict=True)
    model.model.language_model.load_state_dict(language_model.model.state_dict(), strict=True)
    if not config.tie_word_embeddings:
        model.lm_head.load_state_dict(language_model.lm_head.state_dict())
    model.generation_config = generation_config_for(tokenizer)
    processor = TowerVisionProcessor.from_model_config(config, tokenizer)
    return model, processor


def build_parser() -> argparse.ArgumentParser:
    """The `towervision init` command line."""
    parser = argparse.ArgumentParser(prog="towervision init", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="folder to write the checkpoint to")
    parser.add_argument("--vision", default="google/siglip2-so400m-patch14-384", help="SigLIP(2) checkpoint: Hub id or local dir")
    parser.add_argument("--text", default="Unbabel/Tower-Plus-2B", help="Tower+ / Gemma2 checkpoint: Hub id or local dir")
    parser.add_argument("--tiny", action="store_true", help="build a tiny random model and tokenizer instead (offline)")
    parser.add_argument("--max-tiles", type=int, default=6, help="most tiles per image + thumbnail (default: %(default)s)")
    parser.add_argument("--num-frames", type=int, default=32, help="frames sampled per video (default: %(default)s)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="seed for the randomly initialised projector and newline")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    if args.tiny:
        model, processor = build_tiny(args.seed)
    else:
        model, processor = compose_from_pretrained(args.vision, args.text, args.max_tiles, args.num_frames, args.dtype, args.seed)
    model.save_pretrained(args.output_dir)
    processor.save_pretrained(args.output_dir)
    trainable = sum(p.numel() for p in model.model.multi_modal_projector.parameters()) + model.config.text_config.hidden_size
    print(
        f"wrote {'tiny ' if args.tiny else ''}TowerVision checkpoint to {args.output_dir}: "
        f"{model.num_parameters():,} parameters ({trainable:,} new: projector + image newline), "
        f"vision {model.config.vision_config.num_hidden_layers} layers, tiles <= {model.config.max_tiles} x {model.config.tile_size}px"
    )
    return 0
