"""transformers' model contract for TowerVision, in the shape of transformers' own common model tests.

`TowerVisionModelTester` builds a tiny config and inputs as transformers' VLM testers do (`get_config`,
`prepare_config_and_inputs_for_common`); `TestTowerVisionModelContract` runs what transformers asks of every
model: save/load, `inputs_embeds`, hidden states and attentions, the multimodal feature interfaces, generation with
and without cache, assisted and prompt-lookup decoding, left padding, static cache and compiled decoding, custom 4D
masks, SDPA, resized embeddings, gradient checkpointing, the cache argument's name and the tensor-parallel plan.
"""

import copy
import os
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import DynamicCache, Gemma2Config, SiglipVisionConfig, StaticCache
from transformers.modeling_outputs import BaseModelOutputWithPooling

from towervision_hf import TowerVisionForConditionalGeneration, TowerVisionModel
from towervision_hf.model.configuration_towervision import TowerVisionConfig
from towervision_hf.model.modeling_towervision import CACHE_NAME


ATOL = 1e-5


def ids_tensor(shape, low, high, seed):
    return torch.randint(low, high, shape, generator=torch.Generator().manual_seed(seed))


def floats_tensor(shape, seed):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


class TowerVisionModelTester:
    """Tiny TowerVision config and inputs: a 2-layer SigLIP tower on 12 px tiles of 4 px patches (3x3 features per
    tile), a 2-layer Gemma2 with both softcaps and a sliding window shorter than the prompts.

    Every image is 12x24 px: one thumbnail and a 1x2 tile grid, so `9 + 3 * (6 + 1) = 30` `<image>` tokens; every
    video has 2 frames pooled to 2x2 and one newline, `2 * 4 + 1 = 9` `<video>` tokens.
    """

    batch_size = 3
    text_length = 7
    vocab_size = 99
    pad_token_id, bos_token_id, eos_token_id, image_token_id, video_token_id = 0, 1, 2, 3, 4
    num_hidden_layers = 2
    num_attention_heads = 4
    hidden_size = 32
    vision_hidden_size = 16
    vision_num_hidden_layers = 2
    tile_size, patch_size = 12, 4
    image_size = (12, 24)
    num_image_tokens = 30
    num_frames = 2
    num_video_tokens = 9

    def get_config(self) -> TowerVisionConfig:
        vision_config = SiglipVisionConfig(
            hidden_size=self.vision_hidden_size,
            intermediate_size=37,
            num_hidden_layers=self.vision_num_hidden_layers,
            num_attention_heads=2,
            image_size=self.tile_size,
            patch_size=self.patch_size,
            vision_use_head=False,
        )
        text_config = Gemma2Config(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=37,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=2,
            head_dim=8,
            query_pre_attn_scalar=8,
            sliding_window=16,
            max_position_embeddings=512,
            pad_token_id=self.pad_token_id,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
        )
        return TowerVisionConfig(
            vision_config=vision_config,
            text_config=text_config,
            image_token_id=self.image_token_id,
            video_token_id=self.video_token_id,
            max_tiles=4,
            num_frames=self.num_frames,
        )

    def prompt_ids(self, num_placeholders: int, placeholder_id: int, seed: int) -> torch.Tensor:
        """`(batch_size, 1 + num_placeholders + text_length)`: `<bos>`, the placeholders, then random text."""
        text = ids_tensor((self.batch_size, self.text_length), self.video_token_id + 1, self.vocab_size, seed)
        bos = torch.full((self.batch_size, 1), self.bos_token_id)
        return torch.cat([bos, torch.full((self.batch_size, num_placeholders), placeholder_id), text], dim=1)

    def prepare_config_and_inputs_for_common(self) -> tuple[TowerVisionConfig, dict]:
        """One image per sample: `pixel_values` `(batch, 3 patches, 3, 12, 12)` and `image_sizes`."""
        input_ids = self.prompt_ids(self.num_image_tokens, self.image_token_id, seed=0)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": floats_tensor((self.batch_size, 3, 3, self.tile_size, self.tile_size), seed=1),
            "image_sizes": torch.tensor([self.image_size] * self.batch_size),
        }
        return self.get_config(), inputs

    def prepare_config_and_video_inputs(self) -> tuple[TowerVisionConfig, dict]:
        """One video per sample: `pixel_values_videos` `(batch, num_frames, 3, 12, 12)`."""
        input_ids = self.prompt_ids(self.num_video_tokens, self.video_token_id, seed=2)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values_videos": floats_tensor(
                (self.batch_size, self.num_frames, 3, self.tile_size, self.tile_size), seed=3
            ),
        }
        return self.get_config(), inputs


def build(config, seed=0, **kwargs) -> TowerVisionForConditionalGeneration:
    torch.manual_seed(seed)
    return TowerVisionForConditionalGeneration._from_config(copy.deepcopy(config), **kwargs).eval()


def greedy(model, inputs, **kwargs) -> torch.Tensor:
    return model.generate(**inputs, max_new_tokens=8, do_sample=False, min_new_tokens=8, **kwargs)


class TestTowerVisionModelContract:
    def setup_method(self):
        self.model_tester = TowerVisionModelTester()

    def inputs(self, modality):
        if modality == "image":
            return self.model_tester.prepare_config_and_inputs_for_common()
        return self.model_tester.prepare_config_and_video_inputs()

    def test_save_load_round_trip(self, tmp_path):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(config)
        model.save_pretrained(tmp_path)
        for model_class in (TowerVisionForConditionalGeneration, TowerVisionModel):
            loaded = model_class.from_pretrained(tmp_path).eval()
            with torch.no_grad():
                output = loaded(**inputs)
                expected = (model if model_class is TowerVisionForConditionalGeneration else model.model)(**inputs)
            assert torch.equal(output[0], expected[0])  # logits / last hidden state

    @pytest.mark.parametrize("modality", ["image", "video"])
    def test_inputs_embeds_matches_input_ids(self, modality):
        config, inputs = self.inputs(modality)
        model = build(config)
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        with torch.no_grad():
            expected = model(**inputs).logits
            logits = model(**{**inputs, "input_ids": None, "inputs_embeds": embeds}).logits
        torch.testing.assert_close(logits, expected, rtol=0, atol=ATOL)

    def test_hidden_states_and_attentions(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(config, attn_implementation="eager")
        batch, length = inputs["input_ids"].shape
        with torch.no_grad():
            outputs = model(**inputs, output_hidden_states=True, output_attentions=True)
        tester = self.model_tester
        assert len(outputs.hidden_states) == tester.num_hidden_layers + 1
        assert all(state.shape == (batch, length, tester.hidden_size) for state in outputs.hidden_states)
        assert len(outputs.attentions) == tester.num_hidden_layers
        attention_shape = (batch, tester.num_attention_heads, length, length)
        assert all(attention.shape == attention_shape for attention in outputs.attentions)
        assert outputs.image_outputs.hidden_states is None  # the vision tower's are returned when asked for

    def test_image_features_interface(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(config, attn_implementation="eager")
        tester = self.model_tester
        pixel_values, image_sizes = inputs["pixel_values"], inputs["image_sizes"]
        with torch.no_grad():
            features = model.get_image_features(pixel_values, image_sizes)
            everything = model.get_image_features(
                pixel_values, image_sizes, output_hidden_states=True, output_attentions=True
            )
            as_tuple = model.get_image_features(pixel_values, image_sizes, return_dict=False)
            forward = model(**inputs)
        assert isinstance(features, BaseModelOutputWithPooling)
        assert features.hidden_states is None and features.attentions is None
        total_tiles = tester.batch_size * 3
        assert features.last_hidden_state.shape == (total_tiles, 9, tester.vision_hidden_size)
        assert [tuple(item.shape) for item in features.pooler_output] == [
            (tester.num_image_tokens, tester.hidden_size)
        ] * tester.batch_size
        assert len(everything.hidden_states) == tester.vision_num_hidden_layers + 1
        assert len(everything.attentions) == tester.vision_num_hidden_layers
        for feature, same in zip(features.pooler_output, everything.pooler_output, strict=True):
            assert torch.equal(feature, same)
        assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], features.last_hidden_state)
        assert torch.equal(torch.cat(forward.image_outputs.pooler_output), torch.cat(features.pooler_output))
        assert torch.equal(forward.image_hidden_states, torch.cat(features.pooler_output))
        assert forward.video_outputs is None
        config.output_attentions = config.output_hidden_states = True  # the config's defaults are honoured too
        from_config = build(config, attn_implementation="eager").get_image_features(pixel_values, image_sizes)
        assert len(from_config.attentions) == len(from_config.hidden_states) - 1 == tester.vision_num_hidden_layers

    def test_video_features_interface(self):
        config, inputs = self.model_tester.prepare_config_and_video_inputs()
        model = build(config, attn_implementation="eager")
        tester = self.model_tester
        with torch.no_grad():
            features = model.get_video_features(inputs["pixel_values_videos"], output_hidden_states=True)
            forward = model(**inputs)
        assert isinstance(features, BaseModelOutputWithPooling)
        assert features.pooler_output.shape == (tester.batch_size, tester.num_video_tokens, tester.hidden_size)
        num_frames = tester.batch_size * tester.num_frames
        assert features.last_hidden_state.shape == (num_frames, 9, tester.vision_hidden_size)
        assert len(features.hidden_states) == tester.vision_num_hidden_layers + 1
        assert torch.equal(forward.video_outputs.pooler_output, features.pooler_output)
        assert forward.image_outputs is None

    def test_tuple_output_nests_encoder_outputs_as_tuples(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(config)
        with torch.no_grad():
            as_dict = model(**inputs)
            as_tuple = model(**inputs, return_dict=False)
        assert torch.equal(as_tuple[0], as_dict.logits)
        image_outputs = as_tuple[-1]
        assert isinstance(image_outputs, tuple)
        assert torch.equal(image_outputs[0], as_dict.image_outputs.last_hidden_state)

    @pytest.mark.parametrize("modality", ["image", "video"])
    def test_generate_with_and_without_cache(self, modality):
        config, inputs = self.inputs(modality)
        model = build(config)
        assert torch.equal(greedy(model, inputs), greedy(model, inputs, use_cache=False))

    @pytest.mark.parametrize("modality", ["image", "video"])
    def test_assisted_and_prompt_lookup_decoding_match_greedy(self, modality):
        """A TowerVision draft (other weights) runs on the prompt without pixels, by transformers' design."""
        config, inputs = self.inputs(modality)
        inputs = {key: value[:1] for key, value in inputs.items()}  # assisted decoding runs one sample at a time
        model, draft = build(config, seed=0), build(config, seed=1)
        expected = greedy(model, inputs)
        assert torch.equal(greedy(model, inputs, assistant_model=draft), expected)
        assert torch.equal(greedy(model, inputs, assistant_model=model), expected)  # a draft that is always right
        assert torch.equal(greedy(model, inputs, prompt_lookup_num_tokens=3), expected)

    def test_left_padding_keeps_logits(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(config)
        padding = 4
        pad = torch.full((inputs["input_ids"].shape[0], padding), config.text_config.pad_token_id)
        padded = {
            **inputs,
            "input_ids": torch.cat([pad, inputs["input_ids"]], dim=1),
            "attention_mask": torch.cat([torch.zeros_like(pad), inputs["attention_mask"]], dim=1),
        }
        with torch.no_grad():
            expected = model(**inputs).logits
            logits = model(**padded).logits[:, padding:]
        torch.testing.assert_close(logits, expected, rtol=0, atol=ATOL)
        assert torch.equal(greedy(model, padded)[:, padding:], greedy(model, inputs))

    @pytest.mark.parametrize("modality", ["image", "video"])
    def test_static_cache_matches_dynamic_cache(self, modality):
        config, inputs = self.inputs(modality)
        model = build(config)
        assert torch.equal(greedy(model, inputs, cache_implementation="static"), greedy(model, inputs))

    def test_decoding_compiles_without_graph_breaks(self):
        """Decoding steps on a static cache under `torch.compile(fullgraph=True)` (dynamo tracing, eager backend)."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(config)
        expected = greedy(model, inputs)
        prompt = inputs["input_ids"]
        cache = StaticCache(config=config.text_config, max_cache_len=prompt.shape[1] + 8)
        compiled = torch.compile(model, fullgraph=True, backend="eager", dynamic=False)
        with torch.no_grad():
            outputs = model(**inputs, use_cache=True, **{CACHE_NAME: cache})
            tokens = outputs.logits[:, -1].argmax(-1, keepdim=True)
            generated = [tokens]
            for step in range(7):
                position = prompt.shape[1] + step
                outputs = compiled(
                    input_ids=tokens,
                    attention_mask=torch.ones(prompt.shape[0], position + 1, dtype=torch.long),
                    position_ids=torch.full((prompt.shape[0], 1), position),
                    use_cache=True,
                    **{CACHE_NAME: cache},
                )
                tokens = outputs.logits[:, -1].argmax(-1, keepdim=True)
                generated.append(tokens)
        assert torch.equal(torch.cat([prompt, *generated], dim=1), expected)

    def test_custom_4d_attention_mask_packs_samples(self):
        """Two image samples packed in one row with a block-diagonal 4D mask give each sample's own logits."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        config.text_config.sliding_window = 128  # a custom 4D mask is used as is: no sliding window on top
        model = build(config, attn_implementation="eager")
        input_ids, length = inputs["input_ids"][:2], inputs["input_ids"].shape[1]
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        allowed = torch.block_diag(causal, causal)  # (2*length, 2*length): each sample sees only itself
        mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
        packed = {
            "input_ids": input_ids.reshape(1, -1),
            "attention_mask": mask,
            "position_ids": torch.arange(length).repeat(2)[None],
            "pixel_values": inputs["pixel_values"][:2],
            "image_sizes": inputs["image_sizes"][:2],
        }
        separate = {key: value[:2] for key, value in inputs.items()}
        with torch.no_grad():
            expected = model(**separate).logits
            logits = model(**packed).logits.view(2, length, -1)
        torch.testing.assert_close(logits, expected, rtol=0, atol=ATOL)

    def test_sdpa_vision_tower_matches_eager(self, tmp_path):
        """SDPA runs the vision tower; Gemma2 keeps eager attention for its softcap, as transformers decides."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        build(config).save_pretrained(tmp_path)
        sdpa = TowerVisionForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
        eager = TowerVisionForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
        assert sdpa.model.vision_tower.config._attn_implementation == "sdpa"
        assert sdpa.model.language_model.config._attn_implementation == "eager"
        assert eager.model.vision_tower.config._attn_implementation == "eager"
        with torch.no_grad():
            torch.testing.assert_close(sdpa(**inputs).logits, eager(**inputs).logits, rtol=1e-4, atol=ATOL)

    def test_resize_token_embeddings_keeps_the_head_tied(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(config)
        vocab_size = config.text_config.vocab_size
        model.resize_token_embeddings(vocab_size + 10)
        assert model.config.text_config.vocab_size == vocab_size + 10
        assert model.lm_head.weight is model.get_input_embeddings().weight
        with torch.no_grad():
            assert model(**inputs).logits.shape[-1] == vocab_size + 10

    def test_gradient_checkpointing_gives_the_same_gradients(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == config.image_token_id, -100)
        gradients = []
        for checkpointing in (False, True):
            model = build(config).train()
            if checkpointing:
                model.activation_checkpointing_enable()
            model(**inputs, labels=labels, use_cache=False).loss.backward()
            gradients.append({name: param.grad for name, param in model.named_parameters()})
        assert gradients[0].keys() == gradients[1].keys()
        assert gradients[0]["model.vision_tower.embeddings.patch_embedding.weight"].abs().sum() > 0
        for name, gradient in gradients[0].items():
            torch.testing.assert_close(gradients[1][name], gradient, rtol=1e-4, atol=ATOL, msg=name)

    @pytest.mark.skipif(CACHE_NAME != "cache", reason="`past_key_values` is the cache's own name before 5.24")
    def test_past_key_values_is_deprecated_for_cache(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(config)
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            old = model(**inputs, use_cache=True, past_key_values=DynamicCache(config=config.text_config))
        assert any("`past_key_values` is deprecated" in str(warning.message) for warning in caught)
        with torch.no_grad():
            new = model(**inputs, use_cache=True, cache=DynamicCache(config=config.text_config))
        assert old.cache.get_seq_length() == new.cache.get_seq_length() == inputs["input_ids"].shape[1]
        assert torch.equal(old.logits, new.logits)

    def test_tensor_parallel_plan_covers_the_tied_head_and_embedding(self):
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        model = build(config)
        modules = dict(model.named_modules())
        plan = model.tp_plan
        assert plan["lm_head"] == "colwise_gather_output"
        assert plan["model.language_model.embed_tokens"] == "embedding_rowwise"
        assert model.fsdp_plan["lm_head"] == "keep_full_weight"
        for pattern in plan:
            prefix, _, suffix = pattern.partition("*")
            assert any(name.startswith(prefix) and name.endswith(suffix) for name in modules), pattern


TP_SCRIPT = """
import sys
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from transformers.distributed import DistributedConfig

from towervision_hf import TowerVisionForConditionalGeneration

path, inputs_path, output_path = sys.argv[1:]
distributed_config = DistributedConfig(tp_size=2, tp_plan="auto")
model = TowerVisionForConditionalGeneration.from_pretrained(path, distributed_config=distributed_config).eval()
sharded = type(model.lm_head.weight).__name__, type(model.model.language_model.layers[0].mlp.up_proj.weight).__name__
inputs = load_file(inputs_path)
with torch.no_grad():
    logits = model(**inputs).logits
generated = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
if dist.get_rank() == 0:
    save_file({"logits": logits.contiguous(), "generated": generated}, output_path)
    print(*sharded)
"""


@pytest.mark.slow
def test_tensor_parallel_on_two_cpu_processes_matches_one_process(tmp_path):
    """`torchrun --nproc-per-node 2` on CPU (gloo): the TP plan shards the model, logits and greedy tokens match."""
    tester = TowerVisionModelTester()
    config, inputs = tester.prepare_config_and_inputs_for_common()
    model = build(config)
    model.save_pretrained(tmp_path / "checkpoint")
    save_file(inputs, tmp_path / "inputs.safetensors")
    (tmp_path / "tp.py").write_text(TP_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         str(tmp_path / "tp.py"), str(tmp_path / "checkpoint"), str(tmp_path / "inputs.safetensors"),
         str(tmp_path / "outputs.safetensors")],
        check=False, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.split()[-2:] == ["DTensor", "DTensor"]  # the head and the MLP are sharded
    outputs = load_file(tmp_path / "outputs.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(outputs["logits"], model(**inputs).logits, rtol=1e-5, atol=ATOL)
    assert torch.equal(outputs["generated"], greedy(model, inputs))
