"""`towervision init`: stage-0 composition from local SigLIP / Gemma2 checkpoints, and the --tiny preset."""

import pytest
import torch
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    Gemma2Config,
    Gemma2ForCausalLM,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from towervision_hf.checkpoint.cli import init_main
from towervision_hf.checkpoint.compose import build_tiny
from towervision_hf.checkpoint.tiny import build_tiny_tokenizer
from towervision_hf.checkpoint.weights import WeightReader


NEW_TENSORS = ("model.multi_modal_projector.", "model.image_newline")


def _base_tokenizer():
    """A Tower+-like tokenizer that does not know `<image>` / `<video>` yet."""
    tokenizer = build_tiny_tokenizer()
    vocab = {token: index for token, index in tokenizer.get_vocab().items() if token not in ("<image>", "<video>")}
    vocab = {token: new_index for new_index, (token, _) in enumerate(sorted(vocab.items(), key=lambda item: item[1]))}
    return type(tokenizer)(vocab=vocab, merges=[])


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A full SigLIP, the same vision tower saved alone, and a Gemma2 LM with its base tokenizer (float32)."""
    folder = tmp_path_factory.mktemp("init_sources")
    torch.manual_seed(0)
    siglip = SiglipModel(
        SiglipConfig(
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 3,
                "num_attention_heads": 2,
                "image_size": 56,
                "patch_size": 8,
            },
            text_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "vocab_size": 64,
            },
        )
    )
    siglip.save_pretrained(folder / "siglip")
    vision_only = SiglipVisionModel(siglip.config.vision_config)
    vision_only.load_state_dict(siglip.vision_model.state_dict())
    vision_only.save_pretrained(folder / "siglip_vision")
    tokenizer = _base_tokenizer()
    tokenizer.save_pretrained(folder / "tower")
    tower = Gemma2ForCausalLM(
        Gemma2Config(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            query_pre_attn_scalar=16,
        )
    )
    tower.save_pretrained(folder / "tower")
    return folder, siglip, tower, tokenizer


def _init(sources, out, *extra, vision="siglip"):
    folder = sources[0]
    assert init_main(["--vision", str(folder / vision), "--text", str(folder / "tower"), *extra, str(out)]) == 0
    reader = WeightReader(out)
    return {name: reader.get(name) for name in reader.entries}


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_init_streams_siglip_and_gemma2_bit_for_bit(sources, tmp_path, dtype):
    """Every tensor of the streamed checkpoint is the one the in-memory composition gives: the vision tower without
    its last layer and head, the LM, the grown embeddings (new rows: the mean of the others), bit for bit."""
    _, siglip, tower, tokenizer = sources
    out = tmp_path / "stage0"
    saved = _init(sources, out, "--max-tiles", "4", *(["--dtype", dtype] if dtype else []))
    target = getattr(torch, dtype or "float32")  # default: the text checkpoint's dtype (float32 here)

    model, info = AutoModelForImageTextToText.from_pretrained(out, trust_remote_code=True, output_loading_info=True)
    assert not any(info.values()), info
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    config = model.config
    assert config.vision_config.num_hidden_layers == 2 and not config.vision_config.vision_use_head
    assert config.max_tiles == 4 and max(h * w for h, w in config.image_grid_pinpoints) == 4 * 56 * 56
    # `<image>` / `<video>` were added after the base vocabulary and the embeddings grew to match.
    assert config.image_token_id == len(tokenizer) and config.video_token_id == len(tokenizer) + 1
    assert config.text_config.vocab_size == len(processor.tokenizer) == len(tokenizer) + 2
    assert model.dtype == target and model.lm_head.weight is model.get_input_embeddings().weight

    expected = {
        f"model.vision_tower.{key}": value
        for key, value in siglip.vision_model.state_dict().items()
        if not key.startswith(("head.", "encoder.layers.2."))
    }
    expected.update({f"model.language_model.{key}": value for key, value in tower.model.state_dict().items()})
    embeddings = expected["model.language_model.embed_tokens.weight"].to(target)
    mean = embeddings.float().sum(0) / embeddings.shape[0]
    expected["model.language_model.embed_tokens.weight"] = torch.cat([embeddings, mean.to(target).expand(2, -1)])
    assert sorted(expected) == sorted(name for name in saved if not name.startswith(NEW_TENSORS))
    for name, value in expected.items():
        assert saved[name].dtype == target and torch.equal(saved[name], value.to(target)), name
    # transformers' mean-resizing samples around the same mean with covariance 1e-9 * the rows' covariance
    resized = Gemma2ForCausalLM.from_pretrained(sources[0] / "tower")
    resized.resize_token_embeddings(len(tokenizer) + 2)
    reference_rows = resized.get_input_embeddings().weight[-2:].detach()
    assert torch.allclose(saved["model.language_model.embed_tokens.weight"][-2:].float(), reference_rows, atol=1e-4)


def test_init_draws_the_new_tensors_from_the_seed(sources, tmp_path):
    first, again = _init(sources, tmp_path / "a"), _init(sources, tmp_path / "b", vision="siglip_vision")
    other = _init(sources, tmp_path / "c", "--seed", "1")
    assert first.keys() == again.keys() == other.keys()
    for name in first:
        assert torch.equal(first[name], again[name]), name  # a vision-only SigLIP gives the same checkpoint
    new = [name for name in first if name.startswith(NEW_TENSORS)]
    assert len(new) == 5 and not torch.equal(first["model.image_newline"], other["model.image_newline"])
    projector = first["model.multi_modal_projector.linear_2.weight"]
    assert 0.015 < projector.std() < 0.025 and not first["model.multi_modal_projector.linear_2.bias"].any()
    assert 0.12 < first["model.image_newline"].std() < 0.25  # 1 / sqrt(32)


def test_init_names_a_vision_checkpoint_without_layers_to_drop(sources, tmp_path, capsys):
    folder = sources[0]
    one_layer = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    SiglipVisionModel(one_layer).save_pretrained(folder / "one_layer")
    assert (
        init_main(["--vision", str(folder / "one_layer"), "--text", str(folder / "tower"), str(tmp_path / "out")]) == 2
    )
    assert "1 encoder layer(s); at least 2" in capsys.readouterr().err


def test_init_tiny_writes_a_loadable_checkpoint(tmp_path, capsys):
    assert init_main(["--tiny", str(tmp_path)]) == 0
    assert "tiny TowerVision checkpoint" in capsys.readouterr().out
    model = AutoModelForImageTextToText.from_pretrained(tmp_path, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert processor.image_processor.tile_size == model.config.tile_size
    assert model.generation_config.eos_token_id[0] == processor.tokenizer.convert_tokens_to_ids("<end_of_turn>")


def test_tiny_model_special_tokens_agree_with_its_tokenizer():
    """Trainer aligns config and generation config with the tokenizer, warning at every run when they differ."""
    from transformers.trainer_utils import align_special_tokens

    model, processor = build_tiny()
    before = (model.config.text_config.to_dict(), model.generation_config.to_dict())
    align_special_tokens(model, processor)
    assert (model.config.text_config.to_dict(), model.generation_config.to_dict()) == before


def test_init_names_a_text_model_given_as_vision(sources, tmp_path, capsys):
    folder = sources[0]
    argv = ["--vision", str(folder / "tower"), "--text", str(folder / "tower"), str(tmp_path / "out")]
    assert init_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a 'gemma2' model, not a SigLIP / SigLIP2 checkpoint" in err
    assert str(folder / "tower" / "config.json") in err and not (tmp_path / "out").exists()
