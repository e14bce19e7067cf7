# Copyright 2026 The towervision-hf authors. Licensed under the Apache License, Version 2.0.
"""`towervision demo`: the three training stages of `recipes/tiny` on the embedded multilingual sample, on CPU.

Stage 1 aligns the projector of a tiny random TowerVision (vision tower and language model frozen), stage 2 trains
everything on captions, QA, multi-image and text-only rows in 12 languages, stage 3 on short videos. The result is
loaded back with `AutoModelForImageTextToText` + trust_remote_code and asked about an image and a video (a tiny
model trained for seconds answers with noise: the point is that every piece runs end to end). The recipes and the
sample ship with the package, so this works from any directory.
"""

import argparse
import os
import sys
from importlib import resources

from .errors import exits_on_error


STAGES = ("stage1_projector", "stage2_vision", "stage3_video")


def _loss_curve(trainer) -> tuple[float | None, float | None]:
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return (losses[0], losses[-1]) if losses else (None, None)


def _format_table(rows: list[dict]) -> str:
    header = f"{'stage':<18}{'steps':>6}{'loss before':>13}{'loss after':>12}{'trainable (vision/projector/LM)':>34}"
    lines = [header, "-" * len(header)]
    for row in rows:
        trainable = row["trainable"]
        counts = f"{trainable['vision']:,} / {trainable['projector']:,} / {trainable['language']:,}"
        lines.append(
            f"{row['stage']:<18}{row['steps']:>6}{row['loss_before']:>13.3f}{row['loss_after']:>12.3f}{counts:>34}"
        )
    return "\n".join(lines)


def _generate(model, processor, content: list[dict], max_new_tokens: int) -> str:
    conversation = [{"role": "user", "content": content}]
    inputs = processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)  # generate runs without grad
    return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


@exits_on_error("towervision demo")
def main(argv: list[str] | None = None) -> int:
    """`towervision demo [--output-dir DIR] [--max-steps N]`."""
    parser = argparse.ArgumentParser(
        prog="towervision demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output-dir", default=os.path.join("outputs", "demo"), help="where the three stages are written"
    )
    parser.add_argument("--max-steps", type=int, help="optimizer steps per stage (default: the recipes' value)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    # imported once the arguments are parsed, so that `--help` answers without torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .data.sample import load_sample
    from .data.schema import load_image, load_video_frames
    from .train import run
    from .training.trainer import trainable_parameters

    output_dir = os.path.abspath(args.output_dir)
    rows, previous = [], "tiny"
    for index, stage in enumerate(STAGES, start=1):
        print(f"\n=== stage {index}/3: {stage} ===", flush=True)
        recipe = str(resources.files("towervision_hf") / "recipes" / "tiny" / f"{stage}.yaml")
        stage_dir = os.path.join(output_dir, f"stage{index}")
        argv = [recipe, "--model_name_or_path", previous, "--output_dir", stage_dir]
        if index == 1:
            argv += ["--vision_feature_cache", os.path.join(output_dir, "feature_cache")]
        if args.max_steps is not None:
            argv += ["--max_steps", str(args.max_steps)]
        trainer = run(argv)
        loss_before, loss_after = _loss_curve(trainer)
        rows.append(
            {
                "stage": stage,
                "steps": trainer.state.global_step,
                "loss_before": loss_before,
                "loss_after": loss_after,
                "trainable": trainable_parameters(trainer.model),
            }
        )
        previous = stage_dir
        del trainer

    print(f"\n=== loading {previous} with AutoModelForImageTextToText (trust_remote_code=True) ===")
    model = AutoModelForImageTextToText.from_pretrained(previous, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(previous, trust_remote_code=True)
    image_row, video_row = load_sample(2)[0], load_sample(3)[0]
    image = load_image(image_row["images"][0])
    frames = load_video_frames(video_row["videos"][0], processor.video_processor.num_frames)
    image_answer = _generate(
        model,
        processor,
        [{"type": "image", "image": image}, {"type": "text", "text": "Describe the image."}],
        args.max_new_tokens,
    )
    video_answer = _generate(
        model,
        processor,
        [{"type": "video", "video": frames}, {"type": "text", "text": "What happens in this video?"}],
        args.max_new_tokens,
    )
    print(f"image ({image.width}x{image.height}) -> {image_answer!r}")
    print(f"video ({len(frames)} frames) -> {video_answer!r}")
    print("\n" + _format_table(rows))
    print(f"\noutputs: {output_dir} (stage1/, stage2/, stage3/ are complete checkpoints; stage3 is the final model)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
