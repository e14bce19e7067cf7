"""One placeholder rule: processor, packer and model agree on every image of the shipped sample, in every layout."""

import pytest
import torch

from towervision_hf.checkpoint.tiny import tiny_config
from towervision_hf.data.sample import load_sample
from towervision_hf.model.modeling_towervision import TowerVisionForConditionalGeneration
from towervision_hf.model.processing_towervision import TowerVisionProcessor
from towervision_hf.training.collator import TowerVisionCollator
from towervision_hf.training.packing import SampleMeasure, image_size_from_header


LAYOUTS = {
    "anyres": {},
    "anyres-2-tiles": {"max_tiles": 2},
    "anyres-no-newline": {"use_image_newline": False},
    "square": {"image_aspect_ratio": "square"},
    "pad": {"image_aspect_ratio": "pad"},
}
MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values", "image_sizes", "batch_num_images")


@pytest.fixture(scope="module")
def image_rows():
    rows = [row for stage in (1, 2) for row in load_sample(stage) if row["images"]]
    assert any(len(row["images"]) > 1 for row in rows) and any(len(row["images"]) == 1 for row in rows)
    return rows


def placeholder_runs(input_ids: torch.Tensor, token_id: int) -> list[int]:
    """Lengths of the runs of `token_id` in a 1-D id tensor, in order: one run per image."""
    runs, length = [], 0
    for is_placeholder in (input_ids == token_id).tolist() + [False]:
        if is_placeholder:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return runs


@pytest.mark.parametrize("layout", LAYOUTS)
def test_processor_packer_and_model_agree_on_every_sample_image(tiny_tokenizer, image_rows, layout):
    config = tiny_config(tiny_tokenizer, **LAYOUTS[layout])
    processor = TowerVisionProcessor.from_model_config(config, tiny_tokenizer)
    torch.manual_seed(0)
    model = TowerVisionForConditionalGeneration(config).eval()
    collator, measure = TowerVisionCollator(processor), SampleMeasure(processor, config.num_frames)
    for row in image_rows:
        batch = collator([row])
        input_ids = batch["input_ids"][0]
        sizes = [image_size_from_header(image) for image in row["images"]]
        layouts = [processor.get_image_layout(size, len(sizes)) for size in sizes]
        expected = [image_layout.num_tokens for image_layout in layouts]
        assert placeholder_runs(input_ids, config.image_token_id) == expected, row["id"]
        if len(sizes) == 1:
            assert processor._get_num_multimodal_tokens(image_sizes=sizes).num_image_tokens == expected, row["id"]
        tokens, tiles = measure(row)
        assert tokens == int(batch["attention_mask"].sum()), row["id"]
        num_tiles = [image_layout.num_tiles for image_layout in layouts]
        assert tiles == sum(num_tiles), row["id"]
        assert tuple(batch["pixel_values"].shape[:2]) == (len(sizes), max(num_tiles)), row["id"]
        with torch.no_grad():  # the model checks every image's features against its run of placeholders
            output = model(**{key: value for key, value in batch.items() if key in MODEL_INPUTS})
        assert output.image_hidden_states.shape[0] == sum(expected), row["id"]
