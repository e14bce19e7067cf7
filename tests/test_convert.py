"""`towervision convert` / `export` against tiny release-format checkpoints saved by transformers 4.52.

`tests/fixtures/release_llava_*` were written by `scripts/make_release_fixture.py` under transformers 4.52.4:
the checkpoints in the release's exact format, the images, the prompts and the trained behaviour's outputs
(4.52 LlavaNext / LlavaOnevision, eager attention, float32, final-logit softcap applied).
"""

import copy
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from towervision_hf.checkpoint.cli import convert_main, export_main
from towervision_hf.checkpoint.convert import (
    convert_checkpoint,
    export_checkpoint,
    native_key,
    rename_source_key,
    rename_state_dict,
    resolve_lm_head,
)
from towervision_hf.checkpoint.weights import WeightReader


FIXTURES = Path(__file__).parent / "fixtures"
NEXT_DIR = FIXTURES / "release_llava_next"
ONEVISION_DIR = FIXTURES / "release_llava_onevision"
SOURCES = {"llava_next": NEXT_DIR, "llava_onevision": ONEVISION_DIR}
LOGITS_TOLERANCE = 1e-4  # float32, eager attention on both sides


def load_safetensors_dir(directory: Path) -> dict[str, torch.Tensor]:
    reader = WeightReader(directory)
    return {name: reader.get(name) for name in reader.entries}


def load_reference(directory: Path) -> tuple[dict, dict]:
    return json.loads((directory / "reference.json").read_text()), load_file(directory / "reference.safetensors")


def softcap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    return torch.tanh(logits / cap) * cap


@pytest.mark.parametrize(
    "key, expected",
    [
        # transformers 4.x on-disk layout (the release)
        (
            "language_model.model.layers.0.self_attn.q_proj.weight",
            "model.language_model.layers.0.self_attn.q_proj.weight",
        ),
        ("language_model.lm_head.weight", "lm_head.weight"),
        (
            "vision_tower.vision_model.encoder.layers.1.mlp.fc1.bias",
            "model.vision_tower.encoder.layers.1.mlp.fc1.bias",
        ),
        ("vision_tower.vision_model.post_layernorm.weight", "model.vision_tower.post_layernorm.weight"),
        ("multi_modal_projector.linear_2.weight", "model.multi_modal_projector.linear_2.weight"),
        ("image_newline", "model.image_newline"),
        # transformers 5.x in-memory layout
        ("model.language_model.embed_tokens.weight", "model.language_model.embed_tokens.weight"),
        (
            "model.vision_tower.embeddings.patch_embedding.weight",
            "model.vision_tower.embeddings.patch_embedding.weight",
        ),
        ("model.image_newline", "model.image_newline"),
        ("lm_head.weight", "lm_head.weight"),
    ],
)
def test_source_keys_map_to_in_memory_names(key, expected):
    assert rename_source_key(key) == expected


def test_unknown_source_key_is_rejected_by_name():
    with pytest.raises(ValueError, match="model.mm_projector.0.weight"):
        rename_source_key("model.mm_projector.0.weight")


def test_missing_head_is_tied_only_when_text_config_ties_it():
    state_dict = rename_state_dict(load_safetensors_dir(NEXT_DIR))
    assert not any("lm_head" in key for key in state_dict)  # 4.52 saved no head
    tied, message = resolve_lm_head(state_dict, state_dict.__getitem__, text_ties=True)
    assert tied and "no lm_head.weight" in message and "deliberately" in message
    with pytest.raises(ValueError, match="lm_head"):
        resolve_lm_head(state_dict, state_dict.__getitem__, text_ties=False)


def test_head_equal_to_embeddings_is_tied_and_a_different_head_is_kept():
    state_dict = rename_state_dict(load_safetensors_dir(NEXT_DIR))
    embeddings = state_dict["model.language_model.embed_tokens.weight"]
    equal = {**state_dict, "lm_head.weight": embeddings.clone()}
    assert resolve_lm_head(equal, equal.__getitem__, text_ties=False)[0] is True
    different = {**state_dict, "lm_head.weight": embeddings + 1}
    assert resolve_lm_head(different, different.__getitem__, text_ties=True)[0] is False


@pytest.mark.parametrize("directory", [NEXT_DIR, ONEVISION_DIR], ids=["llava_next", "llava_onevision"])
def test_native_transformers_5_runs_the_release_differently(directory):
    """Why `convert` exists: native 5.x classes on the release checkpoint (head tied by hand, PIL preprocessing)
    miss the reference by several logits; scaling the merged image features by sqrt(hidden) is exactly the fix."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

    record, reference = load_reference(directory)
    model, loading_info = AutoModelForImageTextToText.from_pretrained(
        directory, attn_implementation="eager", output_loading_info=True
    )
    if directory == NEXT_DIR:  # 5.x LlavaNext reads the top-level tie_word_embeddings=false: random head
        assert "lm_head.weight" in loading_info["missing_keys"]
    model.lm_head.weight = model.model.language_model.embed_tokens.weight
    model.eval()
    processor = AutoProcessor.from_pretrained(directory)
    processor.image_processor = AutoImageProcessor.from_pretrained(directory, backend="pil")  # what 4.52 computed
    cap = model.config.text_config.final_logit_softcapping

    def max_delta() -> float:
        worst = 0.0
        for sample in record["samples"]:
            inputs = sample_inputs(processor, directory, sample, reference)
            with torch.no_grad():
                logits = model(**inputs).logits[0, -record["logit_positions"] :]
            worst = max(worst, (softcap(logits, cap) - reference[f"{sample['name']}.logits"]).abs().max().item())
        return worst

    assert max_delta() > 1.0
    scale = math.sqrt(model.config.text_config.hidden_size)
    model.model.multi_modal_projector.register_forward_hook(lambda module, args, output: output * scale)
    with torch.no_grad():
        model.model.image_newline.mul_(scale)
    assert max_delta() < 1e-4


def sample_inputs(processor, directory: Path, sample: dict, reference: dict):
    """Processor inputs of a reference sample, built the way the references were (rendered prompt, no extra BOS)."""
    prompt = processor.apply_chat_template(sample["messages"], tokenize=False, add_generation_prompt=True)
    assert prompt == sample["prompt"]
    kwargs = {"text": prompt, "return_tensors": "pt", "add_special_tokens": False}
    if sample.get("images"):
        kwargs["images"] = [Image.open(directory / name) for name in sample["images"]]
    if sample.get("video"):  # the reference took every frame of the clip
        kwargs["videos"] = [reference[f"{sample['name']}.video_frames"].numpy()]
        kwargs["do_sample_frames"] = False
    return processor(**kwargs)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    """Each release fixture converted once: `{format: (folder, printed lines)}`."""
    results = {}
    for format, source in SOURCES.items():
        lines = []
        output = tmp_path_factory.mktemp(f"converted_{format}")
        convert_checkpoint(source, output, log=lines.append)
        results[format] = (output, lines)
    return results


@pytest.fixture(scope="module")
def exported(converted, tmp_path_factory) -> dict[str, Path]:
    """Each converted fixture exported back to its native format."""
    results = {}
    for format in SOURCES:
        output = tmp_path_factory.mktemp(f"exported_{format}")
        export_checkpoint(converted[format][0], output, format, log=lambda line: None)
        results[format] = output
    return results


@pytest.mark.parametrize("format", SOURCES)
def test_converted_checkpoint_reproduces_the_release(converted, format):
    """Our processor on the fixture's images and prompts gives the reference input_ids and pixels; our model gives
    the reference (softcapped) logits within 1e-4 and the same greedy tokens as transformers 4.52."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    directory = SOURCES[format]
    record, reference = load_reference(directory)
    folder = converted[format][0]
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True, attn_implementation="eager")
    model.eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    worst = 0.0
    for sample in record["samples"]:
        name = sample["name"]
        inputs = sample_inputs(processor, directory, sample, reference)
        assert torch.equal(inputs["input_ids"][0], reference[f"{name}.input_ids"]), name
        for key in ("pixel_values", "image_sizes", "pixel_values_videos"):
            if f"{name}.{key}" in reference:
                assert torch.equal(inputs[key], reference[f"{name}.{key}"]), (name, key)
        with torch.no_grad():
            logits = model(**inputs).logits[0, -record["logit_positions"] :]
            generated = model.generate(**inputs, max_new_tokens=record["max_new_tokens"], do_sample=False)
        worst = max(worst, (logits - reference[f"{name}.logits"]).abs().max().item())
        assert generated[0, inputs["input_ids"].shape[1] :].tolist() == reference[f"{name}.generated"].tolist(), name
    assert worst <= LOGITS_TOLERANCE
    print(f"{format}: max |logits - transformers 4.52 reference| = {worst:.3g}")


@pytest.mark.parametrize("format", SOURCES)
def test_conversion_copies_every_tensor_bit_for_bit(converted, format):
    source = rename_state_dict(load_safetensors_dir(SOURCES[format]))
    saved = load_safetensors_dir(converted[format][0])
    assert saved.keys() == source.keys()
    for key, tensor in source.items():
        assert saved[key].dtype == tensor.dtype and torch.equal(saved[key], tensor), key


def test_missing_head_is_tied_and_reported(converted):
    from transformers import AutoModelForImageTextToText

    folder, lines = converted["llava_next"]
    assert any("no lm_head.weight" in line and "tie_word_embeddings=True" in line for line in lines)
    assert json.loads((folder / "config.json").read_text())["tie_word_embeddings"] is True
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
    assert model.lm_head.weight is model.get_input_embeddings().weight


def test_a_different_head_is_kept_untied(tmp_path):
    from transformers import AutoModelForImageTextToText

    source = tmp_path / "release"
    shutil.copytree(NEXT_DIR, source)
    weights = load_file(source / "model.safetensors")
    head = weights["language_model.model.embed_tokens.weight"] * 0.5
    save_file(
        {**weights, "language_model.lm_head.weight": head}, source / "model.safetensors", metadata={"format": "pt"}
    )
    lines = []
    convert_checkpoint(source, tmp_path / "converted", log=lines.append)
    assert any("kept as a separate head" in line for line in lines)
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "converted", trust_remote_code=True)
    assert model.config.tie_word_embeddings is False
    assert torch.equal(model.lm_head.weight, head)
    assert not torch.equal(model.get_input_embeddings().weight, head)


def test_onevision_keeps_the_pinpoints_anyres_max_leaves_at_full_resolution(converted):
    from transformers import AutoConfig

    release = AutoConfig.from_pretrained(ONEVISION_DIR)
    config = json.loads((converted["llava_onevision"][0] / "config.json").read_text())
    tile = config["tile_size"]
    assert config["image_grid_pinpoints"] == [
        p for p in release.image_grid_pinpoints if (p[0] // tile) * (p[1] // tile) <= 10
    ]
    assert (config["max_tiles"], config["video_token_id"]) == (10, release.video_token_id)


@pytest.mark.parametrize("format", SOURCES)
def test_convert_export_convert_round_trip_is_bit_exact(converted, exported, tmp_path, format):
    again = tmp_path / "again"
    convert_checkpoint(exported[format], again, log=lambda line: None)
    first, second = load_safetensors_dir(converted[format][0]), load_safetensors_dir(again)
    assert first.keys() == second.keys()
    for key, tensor in first.items():
        assert second[key].dtype == tensor.dtype and torch.equal(second[key], tensor), key
    config_first = json.loads((converted[format][0] / "config.json").read_text())
    config_second = json.loads((again / "config.json").read_text())
    assert config_first == config_second
    for name in ("processor_config.json", "chat_template.jinja", "tokenizer.json"):
        assert (converted[format][0] / name).read_text() == (again / name).read_text(), name


@pytest.mark.parametrize("format", SOURCES)
def test_export_loads_with_native_classes(converted, exported, format):
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

    native_class = {
        "llava_next": "LlavaNextForConditionalGeneration",
        "llava_onevision": "LlavaOnevisionForConditionalGeneration",
    }
    model, info = AutoModelForImageTextToText.from_pretrained(exported[format], output_loading_info=True)
    assert type(model).__name__ == native_class[format]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ours = load_safetensors_dir(converted[format][0])
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, ours.get(key, ours["model.language_model.embed_tokens.weight"])), key
    # the release's file layout: readable by transformers 4.x as well
    on_disk = load_safetensors_dir(exported[format])
    assert set(on_disk) == {native_key(key) for key in ours}
    assert (exported[format] / "preprocessor_config.json").is_file()
    processor = AutoProcessor.from_pretrained(exported[format])
    assert (
        type(processor).__name__
        == {"llava_next": "LlavaNextProcessor", "llava_onevision": "LlavaOnevisionProcessor"}[format]
    )
    assert processor.chat_template == (converted[format][0] / "chat_template.jinja").read_text()
    image_processor = AutoImageProcessor.from_pretrained(exported[format], backend="pil")
    assert image_processor.image_grid_pinpoints == model.config.image_grid_pinpoints
    assert (image_processor.resample, list(image_processor.image_mean)) == (2, [0.5, 0.5, 0.5])


def test_exported_folder_computes_the_release_once_features_are_scaled(exported):
    """Native 5.x LlavaNext on the export: unscaled it misses the reference, with the trained scale it matches."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

    record, reference = load_reference(NEXT_DIR)
    model = AutoModelForImageTextToText.from_pretrained(exported["llava_next"], attn_implementation="eager").eval()
    processor = AutoProcessor.from_pretrained(exported["llava_next"])
    processor.image_processor = AutoImageProcessor.from_pretrained(exported["llava_next"], backend="pil")
    sample = record["samples"][0]
    inputs = sample_inputs(processor, NEXT_DIR, sample, reference)
    with torch.no_grad():
        unscaled = softcap(model(**inputs).logits[0, -record["logit_positions"] :], 30.0)
        model.model.multi_modal_projector.register_forward_hook(lambda m, a, output: output * 32**0.5)
        model.model.image_newline.mul_(32**0.5)
        scaled = softcap(model(**inputs).logits[0, -record["logit_positions"] :], 30.0)
    expected = reference[f"{sample['name']}.logits"]
    assert (unscaled - expected).abs().max() > 1.0
    assert (scaled - expected).abs().max() < LOGITS_TOLERANCE


def test_cli_prints_what_it_did_and_the_caveat(tmp_path, capsys):
    assert convert_main([str(NEXT_DIR), str(tmp_path / "converted")]) == 0
    printed = capsys.readouterr().out
    assert "no lm_head.weight" in printed and "scale_image_features=True" in printed and "chat template" in printed
    assert export_main([str(tmp_path / "converted"), str(tmp_path / "native"), "--format", "llava_next"]) == 0
    printed = capsys.readouterr().out
    assert "Caveat" in printed and "5.657x too small" in printed and "transformers < 5.4" in printed


def test_dtype_option_casts_floating_weights(tmp_path):
    convert_checkpoint(NEXT_DIR, tmp_path, dtype="bfloat16", log=lambda line: None)
    weights = load_safetensors_dir(tmp_path)
    assert {tensor.dtype for tensor in weights.values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"


def test_bad_sources_and_formats_are_rejected_by_name(converted, tmp_path, capsys):
    assert convert_main([str(converted["llava_next"][0]), str(tmp_path / "out")]) == 2
    assert "model_type 'towervision'" in capsys.readouterr().err
    assert export_main([str(converted["llava_next"][0]), str(tmp_path / "out"), "--format", "llava_onevision"]) == 2
    assert "no <video> token" in capsys.readouterr().err


REMOTE_SCRIPT = """
import json, sys
sys.modules["towervision_hf"] = None  # only the code saved with the checkpoint may be used
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

folder, fixture = sys.argv[1], sys.argv[2]
record = json.load(open(f"{fixture}/reference.json"))
reference = load_file(f"{fixture}/reference.safetensors")
model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True, attn_implementation="eager").eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
worst = 0.0
for sample in record["samples"]:
    messages = sample["messages"]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    images = [Image.open(f"{fixture}/{name}") for name in sample["images"]] or None
    inputs = processor(text=prompt, images=images, return_tensors="pt", add_special_tokens=False)
    assert torch.equal(inputs["input_ids"][0], reference[sample["name"] + ".input_ids"])
    with torch.no_grad():
        logits = model(**inputs).logits[0, -record["logit_positions"]:]
    worst = max(worst, (logits - reference[sample["name"] + ".logits"]).abs().max().item())
print(type(model).__module__, type(processor).__module__, worst)
"""


@pytest.mark.slow
def test_converted_checkpoint_runs_from_its_own_code(converted, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(converted["llava_next"][0]), str(NEXT_DIR)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    model_module, processor_module, worst = result.stdout.split()[-3:]
    assert model_module.startswith("transformers_modules.") and processor_module.startswith("transformers_modules.")
    assert float(worst) <= LOGITS_TOLERANCE


LEGACY_SCRIPT = """
import json, sys
import torch, transformers
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

folder, fixture = sys.argv[1], sys.argv[2]
record = json.load(open(f"{fixture}/reference.json"))
reference = load_file(f"{fixture}/reference.safetensors")
model = AutoModelForImageTextToText.from_pretrained(folder, attn_implementation="eager").eval()
processor = AutoProcessor.from_pretrained(folder)
cap = model.config.text_config.final_logit_softcapping
worst, identical = 0.0, True
for sample in record["samples"]:
    kwargs = dict(text=sample["prompt"], return_tensors="pt", add_special_tokens=False)
    if sample.get("images"):
        kwargs["images"] = [Image.open(f"{fixture}/{name}") for name in sample["images"]]
    if sample.get("video"):
        kwargs["videos"] = [reference[sample["name"] + ".video_frames"].numpy()]
    inputs = processor(**kwargs)
    identical &= torch.equal(inputs["input_ids"][0], reference[sample["name"] + ".input_ids"])
    with torch.no_grad():
        logits = model(**inputs).logits[0, -record["logit_positions"]:]
        generated = model.generate(**inputs, max_new_tokens=record["max_new_tokens"], do_sample=False)
    worst = max(worst, (torch.tanh(logits / cap) * cap - reference[sample["name"] + ".logits"]).abs().max().item())
    identical &= torch.equal(generated[0, inputs["input_ids"].shape[1]:], reference[sample["name"] + ".generated"])
print(transformers.__version__, identical, worst)
"""


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("TOWERVISION_TRANSFORMERS_452"),
    reason="set TOWERVISION_TRANSFORMERS_452 to a `pip install --target` folder holding transformers 4.52",
)
@pytest.mark.parametrize("format", SOURCES)
def test_export_runs_as_released_under_transformers_4_52(exported, tmp_path, format):
    """The export is the release's format: transformers 4.52 loads it and computes the reference exactly
    (its Gemma2 still scales the merged image features; the softcap is applied here as the references do)."""
    env = {**os.environ, "PYTHONPATH": os.environ["TOWERVISION_TRANSFORMERS_452"], "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", LEGACY_SCRIPT, str(exported[format]), str(SOURCES[format])],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    version, identical, worst = result.stdout.split()[-3:]
    assert version.startswith("4.52.") and identical == "True"
    assert float(worst) <= LOGITS_TOLERANCE


def test_single_tile_layouts_are_not_exported(tiny_config):
    from towervision_hf.checkpoint.convert import native_config_from_towervision

    config = copy.deepcopy(tiny_config)
    config.image_aspect_ratio = "square"
    with pytest.raises(ValueError, match="image_aspect_ratio='square'.*no llava_next / llava_onevision equivalent"):
        native_config_from_towervision(config, "llava_next")
