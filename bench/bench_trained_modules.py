"""`--save_trained_only` at the TowerVision-2B (or 9B) geometry: sizes, save time, and the wall time and peak RSS of
`towervision merge`, which must stream the base (peak about the largest tensor, not the model).

Writes a random-weight stand-in of the stage-0 checkpoint (bf16, streamed), loads it, perturbs the projector as a
stage 1 would, saves the trained modules (`save_trained_modules`, digests of the frozen tensors included), then runs
`towervision merge` in its own process and checks, tensor by tensor, that the result is the base with the new
projector.

    PYTHONPATH=src python bench/bench_trained_modules.py --geometry 2b --workdir /tmp/trained-2b
    PYTHONPATH=src python bench/bench_trained_modules.py --geometry small --workdir /tmp/trained-small
"""

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from scale import GEOMETRIES, PeakRSS, write_random_checkpoint
from transformers import Gemma2Config, SiglipVisionConfig

from towervision_hf.checkpoint.trained_modules import TRAINED_WEIGHTS_NAME, save_trained_modules
from towervision_hf.checkpoint.weights import WeightReader, tensor_entries
from towervision_hf.model.configuration_towervision import TowerVisionConfig
from towervision_hf.model.modeling_towervision import TowerVisionForConditionalGeneration


def stage0_config(geometry: dict) -> TowerVisionConfig:
    """TowerVision at `geometry`, as `towervision init` composes it (last vision layer and pooling head dropped)."""
    vision = dict(geometry["vision"], num_hidden_layers=geometry["vision"]["num_hidden_layers"] - 1)
    vocab = geometry["vocab"]
    text = Gemma2Config(vocab_size=vocab + 2, sliding_window=4096, **geometry["text"])
    return TowerVisionConfig(
        vision_config=SiglipVisionConfig(**vision, vision_use_head=False).to_dict(),
        text_config=text.to_dict(),
        image_token_id=vocab,
        video_token_id=vocab + 1,
        tie_word_embeddings=True,
    )


def folder_bytes(folder: Path, pattern: str) -> int:
    return sum(path.stat().st_size for path in folder.glob(pattern))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geometry", choices=sorted(GEOMETRIES), default="small")
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    base, stage, merged = args.workdir / "stage0", args.workdir / "stage1", args.workdir / "stage1-full"
    shutil.rmtree(merged, ignore_errors=True)
    if not (base / "config.json").is_file():
        write_random_checkpoint(
            TowerVisionForConditionalGeneration, stage0_config(GEOMETRIES[args.geometry]), base, torch.bfloat16, 0
        )
    model = TowerVisionForConditionalGeneration.from_pretrained(base, dtype=torch.bfloat16)
    with torch.no_grad():  # stage 1: only the projector trains
        for name, param in model.named_parameters():
            param.requires_grad_("multi_modal_projector" in name)
            if param.requires_grad:
                param.add_(0.01)
    start = time.perf_counter()
    trained = save_trained_modules(model, _NoProcessor(), stage, {"model_name_or_path": str(base.resolve())})
    save_seconds = time.perf_counter() - start
    del model

    start = time.perf_counter()
    command = [sys.executable, "-m", "towervision_cli", "merge", str(stage), str(merged)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with PeakRSS(process.pid) as rss:
        if process.wait() != 0:
            raise SystemExit(f"{' '.join(command)} failed")
    merge_seconds, merge_rss = time.perf_counter() - start, rss.peak

    base_reader, merged_reader = WeightReader(base), WeightReader(merged)
    assert set(merged_reader.entries) == set(base_reader.entries)
    for name in base_reader.entries:
        expected = trained[name] if name in trained else base_reader.get(name)
        assert torch.equal(merged_reader.get(name), expected), name
    largest = max(entry.num_bytes for entry in tensor_entries(base))
    print(f"geometry {args.geometry}: {sum(e.num_elements for e in tensor_entries(base)):,} parameters")
    print(f"full weights         {folder_bytes(base, 'model*.safetensors') / 1e9:8.3f} GB")
    print(f"trained modules      {folder_bytes(stage, TRAINED_WEIGHTS_NAME) / 1e6:8.3f} MB ({len(trained)} tensors)")
    print(f"trained_modules.json {folder_bytes(stage, 'trained_modules.json') / 1e3:8.1f} kB")
    print(f"save (with digests)  {save_seconds:8.1f} s")
    print(f"merge                {merge_seconds:8.1f} s, peak RSS {merge_rss / 1e9:.2f} GB", end=" ")
    print(f"(largest tensor {largest / 1e9:.2f} GB)")
    print("merged == base + trained projector, tensor by tensor: yes")
    return 0


class _NoProcessor:
    """The stand-in has no tokenizer: the processor files are not what is measured."""

    def save_pretrained(self, directory):
        pass


if __name__ == "__main__":
    sys.exit(main())
