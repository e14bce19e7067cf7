"""`towervision init`: stage-0 composition from local SigLIP / Gemma2 checkpoints, and the --tiny preset."""

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, Gemma2Config, Gemma2ForCausalLM, SiglipConfig, SiglipModel

from towervision_hf.init_model import build_tiny
from towervision_hf.init_model import main as init_main
from towervision_hf.tiny import build_tiny_tokenizer


def _base_tokenizer():
    """A Tower+-like tokenizer that does not know `<image>` / `<video>` yet."""
    tokenizer = build_tiny_tokenizer()
    vocab = {token: index for token, index in tokenizer.get_vocab().items() if token not in ("<image>", "<video>")}
    vocab = {token: new_index for new_index, (token, _) in enumerate(sorted(vocab.items(), key=lambda item: item[1]))}
    return type(tokenizer)(vocab=vocab, merges=[])


def test_init_composes_siglip_and_gemma2(tmp_path):
    torch.manual_seed(0)
    siglip = SiglipModel(
        SiglipConfig(
            vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
                           "image_size": 56, "patch_size": 8},
            text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "vocab_size": 64},
        )
    )
    siglip.save_pretrained(tmp_path / "siglip")
    tokenizer = _base_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tower")
    tower = Gemma2ForCausalLM(
        Gemma2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16)
    )
    tower.save_pretrained(tmp_path / "tower")

    out = tmp_path / "stage0"
    assert init_main(["--vision", str(tmp_path / "siglip"), "--text", str(tmp_path / "tower"), "--max-tiles", "4", str(out)]) == 0

    model = AutoModelForImageTextToText.from_pretrained(out, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    config = model.config
    assert config.vision_config.num_hidden_layers == 2 and not config.vision_config.vision_use_head
    assert config.max_tiles == 4 and max(h * w for h, w in config.image_grid_pinpoints) == 4 * 56 * 56
    # `<image>` / `<video>` were added after the base vocabulary and the embeddings grew to match.
    assert config.image_token_id == len(tokenizer) and config.video_token_id == len(tokenizer) + 1
    assert config.text_config.vocab_size == len(processor.tokenizer) == len(tokenizer) + 2

    vision_state = siglip.vision_model.state_dict()
    for key, value in model.model.vision_tower.state_dict().items():
        assert torch.equal(value, vision_state[key]), key
    embeddings = model.model.language_model.embed_tokens.weight
    assert torch.equal(embeddings[: len(tokenizer)], tower.model.embed_tokens.weight)
    assert torch.equal(model.model.language_model.layers[1].mlp.down_proj.weight, tower.model.layers[1].mlp.down_proj.weight)
    assert model.lm_head.weight.data_ptr() == embeddings.data_ptr()


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
