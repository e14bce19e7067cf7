# Copyright 2026 The towervision-hf authors. Licensed under the Apache License, Version 2.0.
"""TowerVision / TowerVideo: SigLIP vision tower + 2-layer MLP projector + Gemma2 (Tower+) language model.

Weight names and feature layout are those of transformers' LLaVA-NeXT (anyres tiling, unpadding, image newline)
and LLaVA-OneVision (one tile per image in multi-image samples, 2x2-pooled video frames), so state dicts load 1:1.
Two behaviours of the released checkpoints are reproduced on top (see `TowerVisionConfig`):

* `scale_image_features`: projected image/video features, newline rows included, are multiplied by
  `sqrt(text_config.hidden_size)` in the embedding dtype before they replace the placeholder tokens. Before
  transformers 5.4 Gemma2 applied this normalizer to the whole `inputs_embeds`; it now lives in the text embedding.
* `text_config.final_logit_softcapping`: `tanh(logits / cap) * cap` on the LM head output, as Gemma2ForCausalLM.

Only stable public transformers API is used, so this file also travels to the Hub as remote code.
"""

import itertools
import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast

from .configuration_towervision import TowerVisionConfig
from .tiling_towervision import image_layout, pooled_side, restrict_pinpoints, unpad_slices


# transformers 5.24 renamed `past_key_values` to `cache` in outputs, `forward` and `generate`; the library's own output
# class says which name the installed version uses, and every cache is passed and read under that name.
CACHE_NAME = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"

# `auto_map` written into every saved checkpoint, so that `trust_remote_code` loading works with each Auto class.
AUTO_MAP = {
    "AutoConfig": "configuration_towervision.TowerVisionConfig",
    "AutoModel": "modeling_towervision.TowerVisionModel",
    "AutoModelForImageTextToText": "modeling_towervision.TowerVisionForConditionalGeneration",
    "AutoModelForMultimodalLM": "modeling_towervision.TowerVisionForConditionalGeneration",
}


class TowerVisionOutputMixin:
    """The encoder outputs of a TowerVision forward; nested outputs become tuples in `to_tuple`, as in transformers."""

    image_outputs: BaseModelOutputWithPooling | None
    video_outputs: BaseModelOutputWithPooling | None

    def to_tuple(self) -> tuple:
        return tuple(
            self[key].to_tuple() if key in ("image_outputs", "video_outputs") else self[key] for key in self.keys()
        )

    @property
    def image_hidden_states(self) -> torch.FloatTensor | None:
        """The embeddings that replaced the `<image>` tokens, `(num_image_tokens, hidden_size)`."""
        return None if self.image_outputs is None else torch.cat(self.image_outputs.pooler_output)

    @property
    def video_hidden_states(self) -> torch.FloatTensor | None:
        """The embeddings that replaced the `<video>` tokens, `(num_video_tokens, hidden_size)`."""
        return None if self.video_outputs is None else self.video_outputs.pooler_output.flatten(0, 1)


@dataclass
class TowerVisionModelOutputWithPast(TowerVisionOutputMixin, BaseModelOutputWithPast):
    r"""
    Output of [`TowerVisionModel`].

    image_outputs (`BaseModelOutputWithPooling`, *optional*):
        Output of [`TowerVisionModel.get_image_features`] when images were encoded: `pooler_output` holds the
        embeddings that replaced each image's `<image>` tokens.
    video_outputs (`BaseModelOutputWithPooling`, *optional*):
        Output of [`TowerVisionModel.get_video_features`] when videos were encoded.
    """

    image_outputs: BaseModelOutputWithPooling | None = None
    video_outputs: BaseModelOutputWithPooling | None = None


@dataclass
class TowerVisionCausalLMOutputWithPast(TowerVisionOutputMixin, CausalLMOutputWithPast):
    r"""
    Output of [`TowerVisionForConditionalGeneration`]: `loss` is the next-token cross-entropy computed on the
    softcapped `logits` (Gemma2's final-logit softcapping is applied); the cache field is named by the installed
    transformers (`cache` from 5.24, `past_key_values` before).

    image_outputs (`BaseModelOutputWithPooling`, *optional*):
        Output of [`TowerVisionModel.get_image_features`] when images were encoded.
    video_outputs (`BaseModelOutputWithPooling`, *optional*):
        Output of [`TowerVisionModel.get_video_features`] when videos were encoded.
    """

    image_outputs: BaseModelOutputWithPooling | None = None
    video_outputs: BaseModelOutputWithPooling | None = None


def resolve_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The KV cache passed as `cache` or, deprecated from transformers 5.24, as `past_key_values`."""
    if past_key_values is None:
        return cache
    if cache is not None:
        raise ValueError("Pass the KV cache as either `cache` or `past_key_values`, not both")
    if CACHE_NAME == "cache":
        warnings.warn(
            "`past_key_values` is deprecated for TowerVision's `forward` since transformers 5.24. Use `cache` "
            "instead.",
            FutureWarning,
            stacklevel=3,
        )
    return past_key_values


class TowerVisionMultiModalProjector(nn.Module):
    """Linear(vision_hidden * n_feature_layers -> text_hidden) -> activation -> Linear(text_hidden -> text_hidden)."""

    def __init__(self, config: TowerVisionConfig):
        super().__init__()
        num_feature_layers = len(config.vision_feature_layer) if isinstance(config.vision_feature_layer, list) else 1
        text_hidden = config.text_config.hidden_size
        self.linear_1 = nn.Linear(
            config.vision_config.hidden_size * num_feature_layers, text_hidden, bias=config.multimodal_projector_bias
        )
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(text_hidden, text_hidden, bias=config.multimodal_projector_bias)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(image_features)))


class TowerVisionPreTrainedModel(PreTrainedModel):
    config_class = TowerVisionConfig
    config: TowerVisionConfig
    base_model_prefix = "model"
    input_modalities = ("image", "video", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, TowerVisionModel) and module.image_newline is not None:
            nn.init.normal_(module.image_newline, mean=0.0, std=1 / math.sqrt(self.config.text_config.hidden_size))

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as transformers does, with every TowerVision Auto class in `config.auto_map` when exporting code."""
        if self.is_remote_code():
            self.config.auto_map = {**AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}
        return super().save_pretrained(save_directory, *args, **kwargs)


class TowerVisionModel(TowerVisionPreTrainedModel):
    """Vision tower, projector and Gemma2 backbone without LM head; merges image/video features into the text."""

    def __init__(self, config: TowerVisionConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = TowerVisionMultiModalProjector(config)
        text_hidden = config.text_config.hidden_size
        if config.use_image_newline:
            self.image_newline = nn.Parameter(torch.randn(text_hidden) / math.sqrt(text_hidden))
        else:
            self.register_parameter("image_newline", None)
        text_config = config.text_config
        if getattr(text_config, "attn_logit_softcapping", None) and text_config._attn_implementation in (None, "sdpa"):
            # SDPA cannot softcap attention scores: Gemma2 runs eager by default and instead of SDPA, as transformers
            # >= 5.23 decides by itself (earlier 5.x default to SDPA and silently drop the trained softcap).
            text_config._attn_implementation = "eager"
        self.language_model = AutoModel.from_config(text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.language_model.set_input_embeddings(value)

    def _encode_tiles(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None, output_attentions: bool | None
    ) -> tuple[torch.Tensor, BaseModelOutputWithPooling]:
        """Vision tower + projector: `(num_tiles, 3, T, T)` -> `(num_tiles, patches_per_side**2, text_hidden)`.

        Also returns the vision tower's output, with its hidden states only when `output_hidden_states` (or the
        config) asks for them and its attentions only when `output_attentions` (or the config) does.
        """
        config = self.config
        if output_hidden_states is None:
            output_hidden_states = config.output_hidden_states
        if output_attentions is None:
            output_attentions = config.output_attentions
        pixel_values = pixel_values.to(self.vision_tower.dtype)
        vision_outputs = self.vision_tower(
            pixel_values, output_hidden_states=True, output_attentions=output_attentions, return_dict=True
        )
        hidden_states = vision_outputs.hidden_states
        if not output_hidden_states:
            vision_outputs.hidden_states = None
        if isinstance(config.vision_feature_layer, list):
            selected = torch.cat([hidden_states[layer] for layer in config.vision_feature_layer], dim=-1)
        else:
            selected = hidden_states[config.vision_feature_layer]
        if config.vision_feature_select_strategy == "default":
            selected = selected[:, 1:]
        if selected.shape[1] != config.patches_per_side**2:
            raise ValueError(
                f"vision_feature_select_strategy={config.vision_feature_select_strategy!r} leaves {selected.shape[1]} "
                f"features per tile, expected {config.patches_per_side}x{config.patches_per_side} (SigLIP has no CLS "
                "token: use 'full')"
            )
        return self.multi_modal_projector(selected), vision_outputs

    def _to_embedding_space(self, features: torch.Tensor) -> torch.Tensor:
        """Cast to the text-embedding dtype and apply the trained `sqrt(hidden_size)` scale when configured.

        The scale is rounded to the embedding dtype first, exactly like Gemma2's scaled word embedding.
        """
        embed_dtype = self.get_input_embeddings().weight.dtype
        features = features.to(embed_dtype)
        if self.config.scale_image_features:
            features = features * torch.tensor(self.config.text_config.hidden_size**0.5, dtype=embed_dtype).item()
        return features

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        image_sizes: torch.Tensor,
        batch_num_images: torch.Tensor | None = None,
        image_max_tiles: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        """Encode images: the embeddings that replace the `<image>` tokens, one `(num_tokens_i, text_hidden)` tensor
        per image, as `pooler_output` (transformers' interface for multimodal encoders, as LlavaNext's).

        Args:
            pixel_values (`torch.Tensor` of shape `(num_images, max_patches, 3, tile_size, tile_size)`):
                Per image: the thumbnail, then the tiles row by row; padded with zeros up to `max_patches`.
            image_sizes (`torch.Tensor` of shape `(num_images, 2)`):
                Original `(height, width)` of every image.
            batch_num_images (`torch.Tensor` of shape `(batch_size,)`, *optional*):
                Images per sample. An image of a sample with more than one image uses only its thumbnail
                (LLaVA-OneVision rule); `None` tiles every image. With `config.image_aspect_ratio` `"square"` or
                `"pad"` every image is one tile (its only patch) and gets no newline.
            image_max_tiles (`torch.Tensor` of shape `(num_images,)`, *optional*):
                Tile budget the processor was called with (`max_tiles` lowered at call time); the grid of each image is
                then chosen among the pinpoints with at most that many tiles, as the processor did.
            output_hidden_states, output_attentions (`bool`, *optional*):
                Return the vision tower's hidden states / attentions over all tiles (default: the config's).
            return_dict (`bool`, *optional*):
                Return a `BaseModelOutputWithPooling` (default: the config's `return_dict`) or a tuple.

        Returns:
            `BaseModelOutputWithPooling`: `last_hidden_state`, `hidden_states` and `attentions` of the vision tower
            over all tiles `(total_tiles, patches_per_side**2, vision_hidden)`; `pooler_output` the list of per-image
            features: thumbnail features, then the unpadded tile grid with a newline ending every feature row (a
            thumbnail-only image gets one newline, a single-tile layout none), in the text-embedding dtype, scaled by
            `sqrt(text_config.hidden_size)` when `config.scale_image_features`.
        """
        config = self.config
        if pixel_values.dim() != 5:
            raise ValueError(
                "pixel_values must have shape (num_images, max_patches, 3, height, width), "
                f"got {tuple(pixel_values.shape)}"
            )
        if torch.is_tensor(image_sizes):
            image_sizes = image_sizes.tolist()
        image_sizes = [tuple(size) for size in image_sizes]
        if len(image_sizes) != pixel_values.shape[0]:
            raise ValueError(
                f"image_sizes has {len(image_sizes)} entries but pixel_values has {pixel_values.shape[0]} images"
            )
        anyres = config.image_aspect_ratio == "anyres"
        if batch_num_images is None:
            sample_images = [1] * len(image_sizes)
        else:
            counts = [int(n) for n in batch_num_images]
            if sum(counts) != len(image_sizes):
                raise ValueError(
                    f"batch_num_images {counts} adds up to {sum(counts)} images, pixel_values has {len(image_sizes)}"
                )
            sample_images = [count for count in counts for _ in range(count)]  # images of each image's sample

        if image_max_tiles is None:
            pinpoints = [config.image_grid_pinpoints] * len(image_sizes)
        else:
            if len(image_max_tiles) != len(image_sizes):
                raise ValueError(f"image_max_tiles has {len(image_max_tiles)} entries for {len(image_sizes)} images")
            pinpoints = [
                restrict_pinpoints(config.image_grid_pinpoints, int(max_tiles), config.tile_size)
                for max_tiles in image_max_tiles
            ]
        layouts = [
            image_layout(
                size,
                count,
                config.image_aspect_ratio,
                candidates,
                config.tile_size,
                config.vision_config.patch_size,
                config.use_image_newline,
            )
            for size, count, candidates in zip(image_sizes, sample_images, pinpoints)
        ]
        grids = [layout.grid for layout in layouts]
        num_patches = [layout.num_tiles for layout in layouts]
        if max(num_patches) > pixel_values.shape[1]:
            raise ValueError(
                f"pixel_values holds {pixel_values.shape[1]} patches per image, "
                f"but image_sizes needs up to {max(num_patches)}"
            )
        patches = torch.cat([image[:count] for image, count in zip(pixel_values, num_patches)])  # (total, 3, T, T)
        features, vision_outputs = self._encode_tiles(patches, output_hidden_states, output_attentions)
        features = features.split(num_patches)  # per image: (num_patches_i, pps*pps, hidden)

        pps = config.patches_per_side
        image_features = []
        for feature, size, grid in zip(features, image_sizes, grids):
            if grid is None:
                packed = feature[0]  # (pps*pps, hidden)
                if self.image_newline is not None and anyres:
                    packed = torch.cat([packed, self.image_newline[None].to(packed.dtype)])
            else:
                rows, cols = grid
                thumbnail, tiles = feature[0], feature[1:]
                # (rows*cols, pps*pps, hidden) -> (rows*pps, cols*pps, hidden): one feature map over the whole grid
                tiles = tiles.view(rows, cols, pps, pps, -1).permute(0, 2, 1, 3, 4).reshape(rows * pps, cols * pps, -1)
                row_slice, col_slice = unpad_slices(size, rows * pps, cols * pps)
                tiles = tiles[row_slice, col_slice]  # (height, width, hidden) without the letterbox padding
                if self.image_newline is not None:
                    newline = self.image_newline.to(tiles.dtype).expand(tiles.shape[0], 1, -1)
                    tiles = torch.cat([tiles, newline], dim=1)  # (height, width + 1, hidden)
                packed = torch.cat([thumbnail, tiles.flatten(0, 1)])
            image_features.append(self._to_embedding_space(packed))
        vision_outputs.pooler_output = image_features
        return vision_outputs if self._return_dict(return_dict) else vision_outputs.to_tuple()

    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        """Encode videos: the embeddings that replace the `<video>` tokens, as `pooler_output` (as LlavaOnevision's).

        Args:
            pixel_values_videos (`torch.Tensor` of shape `(num_videos, num_frames, 3, tile_size, tile_size)`):
                Frames of every video, resized to one tile.
            output_hidden_states, output_attentions, return_dict: see [`~TowerVisionModel.get_image_features`].

        Returns:
            `BaseModelOutputWithPooling`: the vision tower's outputs over all frames; `pooler_output` of shape
            `(num_videos, num_frames * pooled_side**2 + 1, text_hidden)`: every frame's feature map pooled
            `video_pool_size`x`video_pool_size` (bilinear, ceil), then one newline per video; in the text-embedding
            dtype, scaled like the image features.
        """
        if pixel_values_videos.dim() != 5:
            raise ValueError(
                "pixel_values_videos must have shape (num_videos, num_frames, 3, height, width), "
                f"got {tuple(pixel_values_videos.shape)}"
            )
        num_videos, num_frames = pixel_values_videos.shape[:2]
        features, vision_outputs = self._encode_tiles(  # (videos*frames, pps*pps, hidden)
            pixel_values_videos.flatten(0, 1), output_hidden_states, output_attentions
        )
        pps = self.config.patches_per_side
        side = pooled_side(pps, self.config.video_pool_size)
        # (videos*frames, pps*pps, hidden) -> (videos*frames, hidden, pps, pps) -> pooled (.., hidden, side, side)
        features = features.view(-1, pps, pps, features.shape[-1]).permute(0, 3, 1, 2)
        features = nn.functional.interpolate(features, size=(side, side), mode="bilinear")
        features = features.permute(0, 2, 3, 1).reshape(num_videos, num_frames * side * side, -1)
        if self.image_newline is not None:
            newline = self.image_newline.to(features.dtype).expand(num_videos, 1, -1)
            features = torch.cat([features, newline], dim=1)  # (videos, frames*side*side + 1, hidden)
        vision_outputs.pooler_output = self._to_embedding_space(features)
        return vision_outputs if self._return_dict(return_dict) else vision_outputs.to_tuple()

    def _return_dict(self, return_dict: bool | None) -> bool:
        return return_dict if return_dict is not None else self.config.return_dict

    def _merge(self, input_ids, inputs_embeds, per_item: list[torch.Tensor], modality: str):
        """Scatter `per_item` features into the `<modality>` placeholders, after checking they line up exactly.

        Returns the new `inputs_embeds`.
        """
        token_id = getattr(self.config, f"{modality}_token_id")
        if input_ids is not None:
            mask = input_ids == token_id
        else:
            token_embedding = self.get_input_embeddings()(torch.tensor(token_id, device=inputs_embeds.device))
            mask = (inputs_embeds == token_embedding).all(-1)
        lengths = [item.shape[0] for item in per_item]
        num_tokens, num_features = int(mask.sum()), sum(lengths)
        if num_tokens != num_features:
            raise ValueError(
                f"{modality.capitalize()} features and {modality} tokens do not match, tokens: {num_tokens}, "
                f"features: {num_features} (each {modality} needs exactly as many <{modality}> tokens as it has "
                "features: were the prompts truncated or built with another processor?)"
            )
        # Every run of consecutive placeholders must end on an item boundary (runs never cross samples).
        seen = mask.flatten().cumsum(0)
        run_ends = mask & ~nn.functional.pad(mask[:, 1:], (0, 1))
        if not set(seen[run_ends.flatten()].tolist()) <= set(itertools.accumulate(lengths)):
            raise ValueError(
                f"The <{modality}> tokens are not grouped per {modality}: a run of placeholders ends inside the "
                f"features of one {modality} (feature lengths {lengths}), so placeholders and pixels are misaligned"
            )
        features = torch.cat(per_item).to(inputs_embeds.device, inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(mask.unsqueeze(-1).to(inputs_embeds.device), features)

    def check_placeholders_have_pixels(self, input_ids, pixel_values=None, pixel_values_videos=None):
        """Raise if `input_ids` hold `<image>` / `<video>` placeholders but the matching pixels were not given.

        `forward` itself accepts placeholders without pixels (they are then ordinary tokens), as transformers' own
        VLMs do: `generate` runs an assistant (draft) model on the prompt without pixels by design. The mistake of a
        user who forgot the image is caught where it can be told apart: on the first step of a user's `generate`
        and on a training forward (`labels` given).
        """
        if input_ids is None:
            return
        for modality, pixels, pixels_name in (
            ("image", pixel_values, "pixel_values"),
            ("video", pixel_values_videos, "pixel_values_videos"),
        ):
            token_id = getattr(self.config, f"{modality}_token_id")
            if token_id is None or (pixels is not None and pixels.shape[0] > 0):
                continue
            if num_tokens := int((input_ids == token_id).sum()):
                raise ValueError(f"input_ids contain {num_tokens} <{modality}> tokens but {pixels_name} was not given")

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        image_sizes_videos: torch.LongTensor | None = None,
        batch_num_images: torch.LongTensor | None = None,
        image_max_tiles: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TowerVisionModelOutputWithPast | tuple:
        r"""
        Embed the text, replace `<image>` / `<video>` placeholders by the visual embeddings and run the LM.

        Args:
            pixel_values, image_sizes, batch_num_images, image_max_tiles: see
                [`~TowerVisionModel.get_image_features`].
            pixel_values_videos: see [`~TowerVisionModel.get_video_features`].
            image_sizes_videos (`torch.LongTensor`, *optional*):
                Frame sizes returned by video processors; frames are not tiled, so they are not needed.
            past_key_values, cache (`Cache`, *optional*):
                The KV cache; `past_key_values` is its name before transformers 5.24 (deprecated from 5.24).
            **kwargs: forwarded to the language model (e.g. `output_hidden_states`, `output_attentions`).

        Placeholders without pixels are ordinary tokens here, as in transformers' VLMs (see
        [`~TowerVisionModel.check_placeholders_have_pixels`] for where their absence is an error).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        cache = resolve_cache(cache, past_key_values)
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        image_outputs = video_outputs = None
        if pixel_values is not None and pixel_values.shape[0] == 0:  # a collated batch without images
            pixel_values = None
        if pixel_values is not None:
            if image_sizes is None:
                raise ValueError("pixel_values was given without image_sizes")
            image_outputs = self.get_image_features(
                pixel_values, image_sizes, batch_num_images, image_max_tiles, return_dict=True
            )
            inputs_embeds = self._merge(input_ids, inputs_embeds, image_outputs.pooler_output, "image")
        if pixel_values_videos is not None:
            if self.config.video_token_id is None:
                raise ValueError("pixel_values_videos was given but this model has no video_token_id")
            video_outputs = self.get_video_features(pixel_values_videos, return_dict=True)
            inputs_embeds = self._merge(input_ids, inputs_embeds, list(video_outputs.pooler_output), "video")

        if use_cache is None and cache is None and attention_mask is None and position_ids is not None:
            # packed rows (positions restarting per sample): transformers keeps attention inside each sample only
            # when no cache is created
            use_cache = False
        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **{CACHE_NAME: cache},
            **kwargs,
        )
        output = TowerVisionModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=image_outputs,
            video_outputs=video_outputs,
        )
        return output if return_dict is not False else output.to_tuple()


class TowerVisionForConditionalGeneration(TowerVisionPreTrainedModel, GenerationMixin):
    """[`TowerVisionModel`] with a (tied) LM head and Gemma2's final-logit softcapping; supports `generate`."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    # As LlavaNext and Gemma2: the tied head is sharded on the vocabulary like the embedding it shares its weight with
    # (transformers adds `embedding_rowwise` for Gemma2's `embed_tokens`), and FSDP2 keeps it unsharded after forward.
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _fsdp_plan = {"lm_head": "keep_full_weight"}

    def __init__(self, config: TowerVisionConfig):
        super().__init__(config)
        self.model = TowerVisionModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module):
        self.lm_head = new_embeddings

    def prepare_inputs_for_generation(
        self,
        *args,
        pixel_values=None,
        image_sizes=None,
        pixel_values_videos=None,
        image_sizes_videos=None,
        is_first_iteration=False,
        **kwargs,
    ):
        """Pass pixels only on the first step (or without cache): afterwards their features are in the KV cache.

        transformers >= 5.23 drops them by itself; earlier 5.x `generate` forwards every kwarg at every step. The first
        step of a user's `generate` is where a forgotten image is an error; an assistant (draft) model never gets a
        first step (`generate` runs it on the prompt without pixels by design).
        """
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration:
            self.model.check_placeholders_have_pixels(model_inputs.get("input_ids"), pixel_values, pixel_values_videos)
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs.update(
                pixel_values=pixel_values,
                image_sizes=image_sizes,
                pixel_values_videos=pixel_values_videos,
                image_sizes_videos=image_sizes_videos,
            )
        return model_inputs

    def get_image_features(
        self,
        pixel_values,
        image_sizes,
        batch_num_images=None,
        image_max_tiles=None,
        output_hidden_states=None,
        output_attentions=None,
        return_dict=None,
    ) -> BaseModelOutputWithPooling | tuple:
        """See [`TowerVisionModel.get_image_features`]."""
        return self.model.get_image_features(
            pixel_values,
            image_sizes,
            batch_num_images,
            image_max_tiles,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=return_dict,
        )

    def get_video_features(
        self, pixel_values_videos, output_hidden_states=None, output_attentions=None, return_dict=None
    ) -> BaseModelOutputWithPooling | tuple:
        """See [`TowerVisionModel.get_video_features`]."""
        return self.model.get_video_features(
            pixel_values_videos,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=return_dict,
        )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        image_sizes_videos: torch.LongTensor | None = None,
        batch_num_images: torch.LongTensor | None = None,
        image_max_tiles: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TowerVisionCausalLMOutputWithPast | tuple:
        r"""
        Run [`TowerVisionModel`], the LM head and Gemma2's final-logit softcapping.

        Args:
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Token ids for the next-token loss (unshifted; `-100` is ignored), computed on the softcapped logits.
            logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
                Compute logits only for the last `logits_to_keep` positions (0 = all), or for the given indices.
            Other arguments: see [`TowerVisionModel.forward`].

        A training forward (`labels` given) refuses `<image>` / `<video>` placeholders without their pixels.
        """
        if labels is not None:
            self.model.check_placeholders_have_pixels(input_ids, pixel_values, pixel_values_videos)
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            image_sizes=image_sizes,
            pixel_values_videos=pixel_values_videos,
            image_sizes_videos=image_sizes_videos,
            batch_num_images=batch_num_images,
            image_max_tiles=image_max_tiles,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=resolve_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        kept = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(outputs.last_hidden_state[:, kept, :])
        softcap = self.config.text_config.final_logit_softcapping
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        output = TowerVisionCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=outputs.image_outputs,
            video_outputs=outputs.video_outputs,
        )
        return output if return_dict is not False else output.to_tuple()


__all__ = ["TowerVisionForConditionalGeneration", "TowerVisionModel", "TowerVisionPreTrainedModel"]
