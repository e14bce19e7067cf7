"""Every YAML under recipes/ parses: training recipes with TRL's parser into our argument dataclasses, accelerate
configs with accelerate, data recipes with the data pipeline; and the stage recipes chain and carry the paper's
numbers."""

import os
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from PIL import Image

from towervision_hf import TowerVisionConfig, TowerVisionForConditionalGeneration, TowerVisionProcessor, train
from towervision_hf.checkpoint.cli import init_parser
from towervision_hf.data.mixture import load_recipe
from towervision_hf.training.model_loading import follow_config, set_layout


ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
ALL_YAML = sorted(
    Path(folder, name).relative_to(RECIPES)
    for folder, _, names in os.walk(RECIPES, followlinks=True)
    for name in names
    if name.endswith((".yaml", ".yml"))
)
TRAIN_YAML = [path for path in ALL_YAML if path.parts[0] not in ("accelerate", "data")]
STAGES = ("stage1_projector", "stage2_vision", "stage3_video")


def test_recipes_are_found():
    assert {path.parts[0] for path in ALL_YAML} == {"accelerate", "data", "tiny", "towervision-2b", "towervision-9b"}
    assert len(TRAIN_YAML) == 9


@pytest.mark.parametrize("path", TRAIN_YAML, ids=str)
def test_training_recipe_parses(path, tmp_path):
    # bf16 needs a GPU: parse the recipe as it is, with only that switched off
    data_args, training_args, model_args = train.parse_args(
        [str(RECIPES / path), "--bf16", "false", "--use_cpu", "true"]
    )
    raw = yaml.safe_load((RECIPES / path).read_text())
    assert raw["loss_type"] == training_args.loss_type == "nll"  # pinned: TRL's default changed between releases
    assert training_args.output_dir == raw["output_dir"] and model_args.model_name_or_path == raw["model_name_or_path"]
    assert training_args.over_length == "skip"
    if data_args.dataset.endswith(".yaml"):
        assert data_args.dataset_stage in load_recipe(ROOT / data_args.dataset).stages


@pytest.mark.parametrize("path", [p for p in ALL_YAML if p.parts[0] == "accelerate"], ids=str)
def test_accelerate_config_parses(path):
    config = load_config_from_file(str(RECIPES / path))
    if path.stem == "fsdp2":
        assert (
            config.fsdp_config["fsdp_version"] == 2 and config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
        )
    if path.stem == "deepspeed_zero3":
        assert config.deepspeed_config["zero_stage"] == 3 and config.deepspeed_config["zero3_save_16bit_model"]


@pytest.mark.parametrize("path", [p for p in ALL_YAML if p.parts[0] == "data"], ids=str)
def test_data_recipe_parses(path):
    assert load_recipe(RECIPES / path).stages


def test_fsdp_wrap_classes_are_the_model_layers(tiny_config):
    from towervision_hf import TowerVisionForConditionalGeneration

    wrapped = load_config_from_file(str(RECIPES / "accelerate/fsdp2.yaml")).fsdp_config[
        "fsdp_transformer_layer_cls_to_wrap"
    ]
    layer_types = {type(module).__name__ for module in TowerVisionForConditionalGeneration(tiny_config).modules()}
    assert set(wrapped.split(",")) <= layer_types


@pytest.mark.parametrize("family", ["tiny", "towervision-2b", "towervision-9b"])
def test_stages_chain_and_use_the_papers_settings(family):
    recipes = {stage: yaml.safe_load((RECIPES / family / f"{stage}.yaml").read_text()) for stage in STAGES}
    one, two, three = (recipes[stage] for stage in STAGES)
    assert two["model_name_or_path"] == one["output_dir"] and three["model_name_or_path"] == two["output_dir"]
    assert one["vision_lr"] == one["language_lr"] == 0 and one.get("projector_lr") is None  # projector only
    assert one["image_aspect_ratio"] == "square" and (two["image_aspect_ratio"], two["max_tiles"]) == ("anyres", 6)
    assert two["vision_lr"] < two["learning_rate"] and three["vision_lr"] < three["learning_rate"]
    if family == "tiny":
        assert three["num_frames"] == 4 and all(r["use_cpu"] for r in recipes.values())
        return
    assert [r["dataset_stage"] for r in recipes.values()] == ["alignment", "vision", "video"]
    assert one["learning_rate"] == 1e-3 and two["learning_rate"] == three["learning_rate"] == 1e-5
    assert two["vision_lr"] == three["vision_lr"] == 2e-6 and three["num_frames"] == 32
    for recipe, global_batch in zip(recipes.values(), (256, 128, 128)):
        # sized for 8 GPUs
        assert recipe["per_device_train_batch_size"] * recipe["gradient_accumulation_steps"] * 8 == global_batch
        assert recipe["max_length"] == 8192 and recipe["num_train_epochs"] == 1 and recipe["dtype"] == "bfloat16"


@pytest.mark.parametrize("family", ["towervision-2b", "towervision-9b"])
def test_stage1_encodes_each_image_once_in_729_tokens(family, tiny_tokenizer):
    """Paper §2.2: SigLIP2-so400m/14@384 gives 27x27 = 729 embeddings per image, encoded once in stage 1."""
    training_args = train.parse_args([str(RECIPES / family / "stage1_projector.yaml"), "--bf16", "false"])[1]
    config = TowerVisionConfig.from_preset(family)  # the real geometry, no weights
    processor = TowerVisionProcessor.from_model_config(config, tiny_tokenizer)
    set_layout(config, training_args.layout)
    follow_config(processor, config, training_args.layout)
    with torch.device("meta"):
        model = TowerVisionForConditionalGeneration(config)
    sizes = [(300, 1000), (384, 384), (2000, 50), (10, 10)]  # (height, width)
    images = [Image.new("RGB", (width, height)) for height, width in sizes]
    inputs = processor(images=images, text=["<image> a caption"] * len(images), padding=True, return_tensors="pt")
    assert inputs["input_ids"].eq(processor.image_token_id).sum(dim=1).tolist() == [729] * len(images)
    assert tuple(inputs["pixel_values"].shape) == (len(images), 1, 3, 384, 384)
    features = model.model.get_image_features(inputs["pixel_values"].to("meta"), inputs["image_sizes"]).pooler_output
    assert [tuple(feature.shape) for feature in features] == [(729, config.text_config.hidden_size)] * len(images)


def test_packaged_tiny_recipes_are_the_repository_ones():
    for stage in STAGES:
        packaged = Path(train.resolve_recipe(f"tiny/{stage}.yaml"))
        assert packaged.read_text() == (RECIPES / "tiny" / f"{stage}.yaml").read_text()
    with pytest.raises(ValueError, match="neither a file nor a recipe shipped"):
        train.resolve_recipe("tiny/no_such_stage.yaml")


# Table 10 of the paper: (resolution, patch size, tiles) of the vision-encoder ablation; 384/14/6 is the main recipe.
TABLE_10 = {"res224-p14": (224, 14, 22), "res224-p16": (224, 16, 20), "res512-p16": (512, 16, 4)}


def ablation_commands() -> dict[str, dict[str, list[str]]]:
    """The `# ablations` block of recipes/README.md: per ablation, its `init` and stage argument lists."""
    block = re.search(r"```bash\n# ablations\n(.*?)```", (RECIPES / "README.md").read_text(), re.S).group(1)
    ablations = {}
    for line in block.strip().splitlines():
        program, command, *argv = shlex.split(line)
        assert program == "towervision" and command in ("init", "train"), line
        name = re.search(r"outputs/ablations/([\w-]+)/", line).group(1)
        key = "init" if command == "init" else Path(argv[0]).stem
        ablations.setdefault(name, {})[key] = argv
    return ablations


def test_ablations_parse_and_follow_the_papers_tables():
    ablations = ablation_commands()
    assert set(ablations) == {*TABLE_10, "gemma2-pt", "gemma2-it", "towerplus-pt", "siglip1"}
    for name, commands in ablations.items():
        init = init_parser().parse_args(commands["init"])
        assert init.output_dir == f"outputs/ablations/{name}/stage0"
        one, two = (  # bf16 needs a GPU: parse with only that switched off
            train.parse_args([str(ROOT / commands[stage][0]), *commands[stage][1:], "--bf16", "false"])
            for stage in ("stage1_projector", "stage2_vision")
        )
        assert one[2].model_name_or_path == init.output_dir and two[2].model_name_or_path == one[1].output_dir
        assert one[1].image_aspect_ratio == "square" and two[1].image_aspect_ratio == "anyres"
        if name in TABLE_10:
            resolution, patch, tiles = TABLE_10[name]
            assert re.search(rf"siglip2-.*-patch{patch}-{resolution}$", init.vision) and two[1].max_tiles == tiles
        else:  # the main recipe's encoder geometry and tiles
            assert init.vision.endswith("patch14-384") and two[1].max_tiles == 6
    assert ablations["siglip1"]["init"][1] == "google/siglip-so400m-patch14-384"
    texts = [ablations[name]["init"][3] for name in ("gemma2-pt", "gemma2-it")]
    assert texts == ["google/gemma-2-2b", "google/gemma-2-2b-it"]
