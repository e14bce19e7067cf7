# Copyright 2026 The towervision-hf authors. Licensed under the Apache License, Version 2.0.
"""Processor for TowerVision / TowerVideo: Tower+ (Gemma) tokenizer + image processor + video processor."""

# First: importing the configuration checks the installed transformers version and fails clearly if unsupported.
from .configuration_towervision import check_transformers_version  # noqa: F401  # isort: skip

from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import make_flat_list_of_images
from transformers.processing_utils import MultiModalData, ProcessorMixin

from .image_processing_towervision import TowerVisionImageProcessor
from .tiling_towervision import image_layout, video_token_count
from .video_processing_towervision import TowerVisionVideoProcessor, make_batched_video_inputs


# Tower+ / Gemma turns, as the released template: `<bos><start_of_turn>user\n<image>\n{query}<end_of_turn>\n
# <start_of_turn>model\n`. String contents render exactly as the release (so `"<image>\n{query}"` gives the same
# tokens); content lists render their image / video blocks first, one `<image>\n` / `<video>\n` each, then their
# text blocks. `assistant` becomes `model`; any other role (e.g. `system`) is its own turn, as in the release.
# Assistant turns, `<end_of_turn>\n` included, are `{% generation %}` spans for assistant-only losses.
DEFAULT_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set content = message['content'] | trim -%}"
    "{%- else -%}"
    "{%- set parts = namespace(media='', text='') -%}"
    "{%- for block in message['content'] -%}"
    "{%- if block['type'] == 'image' -%}{%- set parts.media = parts.media + '<image>\n' -%}"
    "{%- elif block['type'] == 'video' -%}{%- set parts.media = parts.media + '<video>\n' -%}"
    "{%- elif block['type'] == 'text' -%}{%- set parts.text = parts.text + block['text'] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- set content = (parts.media + parts.text) | trim -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<start_of_turn>model\n' -}}"
    "{%- generation -%}{{- content + '<end_of_turn>\n' -}}{%- endgeneration -%}"
    "{%- else -%}"
    "{{- '<start_of_turn>' + message['role'] + '\n' + content + '<end_of_turn>\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}"
)


class TowerVisionProcessor(ProcessorMixin):
    r"""
    Processor of TowerVision / TowerVideo: expands every `<image>` / `<video>` placeholder into exactly as many
    tokens as the model produces features for it (arithmetic in `tiling_towervision`), and prepares pixels with
    [`TowerVisionImageProcessor`] / [`TowerVisionVideoProcessor`].

    * A sample with one image is tiled (thumbnail + unpadded tile grid + one newline per feature row); each image of
      a sample with several images is one tile + one newline (LLaVA-OneVision rule). With the image processor's
      `image_aspect_ratio` `"square"` / `"pad"` every image is one tile: `(tile_size // patch_size)**2` tokens.
      `images` may be nested per sample (`[[img], [img, img]]`) or flat, in which case they are assigned to the
      samples in the order of their `<image>` placeholders.
    * A video gives `ceil(patches_per_side / video_pool_size)²` tokens per frame plus one newline.
    * The number of placeholders of every sample must equal its number of images (videos), else `ValueError`.
    * A text that already starts with the BOS token (e.g. rendered by the chat template) gets no second one.

    Returns `input_ids`, `attention_mask`, and with images `pixel_values`, `image_sizes`, `batch_num_images`
    (`image_max_tiles` when `max_tiles` is lowered for the call), with videos `pixel_values_videos`.

    Args:
        image_processor ([`TowerVisionImageProcessor`], *optional*): defaults to 384 px tiles, at most 6.
        tokenizer ([`PreTrainedTokenizerBase`]): the Tower+ (Gemma) tokenizer with `<image>` / `<video>` tokens.
        video_processor ([`TowerVisionVideoProcessor`], *optional*): defaults to 32 frames of 384 px.
        chat_template (`str`, *optional*): defaults to `DEFAULT_CHAT_TEMPLATE`.
        patch_size (`int`, *optional*, defaults to 14): patch size of the vision tower.
        video_pool_size (`int`, *optional*, defaults to 2): spatial pooling of video frame features.
        use_image_newline (`bool`, *optional*, defaults to `True`): whether the model appends newline features.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        video_processor=None,
        chat_template=None,
        patch_size: int = 14,
        video_pool_size: int = 2,
        use_image_newline: bool = True,
        image_token: str = "<image>",
        video_token: str = "<video>",
        **kwargs,
    ):
        self.patch_size = patch_size
        self.video_pool_size = video_pool_size
        self.use_image_newline = use_image_newline
        self.image_token = getattr(tokenizer, "image_token", None) or image_token
        self.video_token = getattr(tokenizer, "video_token", None) or video_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        super().__init__(
            image_processor or TowerVisionImageProcessor(),
            tokenizer,
            video_processor or TowerVisionVideoProcessor(),
            chat_template=chat_template or DEFAULT_CHAT_TEMPLATE,
        )

    @classmethod
    def from_model_config(cls, config, tokenizer, **kwargs) -> "TowerVisionProcessor":
        """The processor matching a `TowerVisionConfig`: its tile size, image layout, grid pinpoints, patch size, frame
        count, video pooling and newline setting, around `tokenizer` (which must know `<image>` / `<video>`)."""
        tile_size = config.tile_size
        return cls(
            image_processor=TowerVisionImageProcessor(
                tile_size=tile_size,
                image_grid_pinpoints=config.image_grid_pinpoints,
                image_aspect_ratio=config.image_aspect_ratio,
                max_tiles=config.max_tiles,
            ),
            tokenizer=tokenizer,
            video_processor=TowerVisionVideoProcessor(
                size={"height": tile_size, "width": tile_size}, num_frames=config.num_frames
            ),
            patch_size=config.vision_config.patch_size,
            video_pool_size=config.video_pool_size,
            use_image_newline=config.use_image_newline,
            **kwargs,
        )

    def __call__(self, images=None, text=None, videos=None, **kwargs) -> BatchFeature:
        texts = [text] if isinstance(text, str) else text
        bos = self.tokenizer.bos_token
        explicit = "add_special_tokens" in kwargs or "add_special_tokens" in kwargs.get("text_kwargs", {})
        if texts and bos and not explicit and all(isinstance(t, str) and t.startswith(bos) for t in texts):
            kwargs["add_special_tokens"] = False
        return super().__call__(images=images, text=text, videos=videos, **kwargs)

    def prepare_inputs_layout(self, images=None, text=None, videos=None, audio=None, **kwargs):
        images, text, videos, audio = super().prepare_inputs_layout(images=images, text=text, videos=videos, **kwargs)
        if images is not None and text is not None and not _is_nested(images):
            flat_images = make_flat_list_of_images(images)
            counts = [sample.count(self.image_token) for sample in text]
            if sum(counts) == len(flat_images):
                offsets = [sum(counts[:i]) for i in range(len(counts) + 1)]
                images = [flat_images[offsets[i] : offsets[i + 1]] for i in range(len(counts))]
        return images, text, videos, audio

    def validate_inputs(self, images=None, text=None, videos=None, audio=None, **kwargs):
        if images is None and text is None and videos is None:
            raise ValueError(f"You need to provide at least one input to call {self.__class__.__name__}")
        if text is None:
            return
        if not all(isinstance(sample, str) for sample in text):
            raise ValueError("`text` must be a string or a list of strings")
        media = {
            "image": (images, self.image_token, _count_images),
            "video": (videos, self.video_token, _count_videos),
        }
        for modality, (inputs, token, count) in media.items():
            placeholders = [sample.count(token) for sample in text]
            if inputs is None:
                if any(placeholders):
                    raise ValueError(
                        f"The text has {sum(placeholders)} {token} placeholders but no {modality}s were given"
                    )
                continue
            if _is_nested(inputs) and len(inputs) == len(text):
                for position, (expected, sample_inputs) in enumerate(zip(placeholders, inputs)):
                    if count(sample_inputs) != expected:
                        raise ValueError(
                            f"Sample {position} has {expected} {token} placeholders but {count(sample_inputs)} "
                            f"{modality}s were given for it"
                        )
            elif sum(placeholders) != count(inputs):
                raise ValueError(
                    f"The text has {sum(placeholders)} {token} placeholders but {count(inputs)} {modality}s were given"
                )

    def _process_videos(self, videos, **kwargs):
        processed_videos = self.video_processor(videos, **kwargs)
        replacements = [
            self.replace_video_token(processed_videos, video_idx=index)
            for index in range(len(make_batched_video_inputs(videos)))
        ]
        return processed_videos, replacements

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        sample, first_image = 0, 0
        while image_idx >= first_image + int(image_inputs["batch_num_images"][sample]):
            first_image += int(image_inputs["batch_num_images"][sample])
            sample += 1
        max_tiles = image_inputs.get("image_max_tiles")
        count = self.get_image_layout(
            tuple(int(side) for side in image_inputs["image_sizes"][image_idx]),
            num_images=int(image_inputs["batch_num_images"][sample]),
            max_tiles=None if max_tiles is None else int(max_tiles[image_idx]),
        ).num_tokens
        return self.image_token * count

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        frames = video_inputs["pixel_values_videos"][video_idx]
        count = video_token_count(
            len(frames), frames.shape[-1], self.patch_size, self.video_pool_size, self.use_image_newline
        )
        return self.video_token * count

    def get_image_layout(self, image_size: tuple[int, int], num_images: int, max_tiles: int | None = None):
        """Tiles and `<image>` tokens of an image of `image_size` in a sample of `num_images` images."""
        image_processor = self.image_processor
        return image_layout(
            image_size,
            num_images,
            image_processor.image_aspect_ratio,
            image_processor.pinpoints(max_tiles),
            image_processor.tile_size,
            self.patch_size,
            self.use_image_newline,
        )

    def _get_num_multimodal_tokens(self, image_sizes=None, video_sizes=None, **kwargs) -> MultiModalData:
        """Placeholder counts for single-image samples of `image_sizes` and for videos of `(frames, height, width)`."""
        data = {}
        if image_sizes is not None:
            max_tiles = kwargs.get("max_tiles")
            data["num_image_tokens"] = [
                self.get_image_layout(tuple(size), 1, max_tiles).num_tokens for size in image_sizes
            ]
            data["num_image_patches"] = [1] * len(image_sizes)
        if video_sizes is not None:
            side = self.video_processor.size["height"]
            data["num_video_tokens"] = [
                video_token_count(frames, side, self.patch_size, self.video_pool_size, self.use_image_newline)
                for frames, _, _ in video_sizes
            ]
        return MultiModalData(**data)


def _count_images(images) -> int:
    return 0 if isinstance(images, (list, tuple)) and not images else len(make_flat_list_of_images(images))


def _count_videos(videos) -> int:
    return 0 if isinstance(videos, (list, tuple)) and not videos else len(make_batched_video_inputs(videos))


def _is_nested(inputs) -> bool:
    return (
        isinstance(inputs, (list, tuple)) and bool(inputs) and all(isinstance(item, (list, tuple)) for item in inputs)
    )


__all__ = ["TowerVisionProcessor"]
