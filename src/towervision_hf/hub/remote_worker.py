"""Load a staged checkpoint exactly as a Hub user would, with only its own remote code. Run by `load_check`.

Started as `python -I remote_worker.py ...` from an empty working directory with HF_HUB_OFFLINE=1. The
towervision_hf package is made unimportable before anything else runs, so every class must come from the files
in the checkpoint folder. Uses only the standard library, numpy, torch, transformers, safetensors and PIL.
Writes `report.json` and `tensors.safetensors` to the output folder (tensor names as in `load_check`).
"""

import sys


if __name__ == "__main__":
    sys.modules["towervision_hf"] = None  # `import towervision_hf` now raises ImportError

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402


def class_path(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def run_model(model, modality: str, inputs, reference: dict, max_new_tokens: int, logits_to_keep: int) -> dict:
    """Own processor outputs, logits on the in-process side's inputs, greedy generation on the own inputs."""
    import torch

    prefix = f"{modality}.inputs."
    tensors = {
        f"{prefix}{key}": value.contiguous() for key, value in inputs.items() if isinstance(value, torch.Tensor)
    }
    theirs = {key.removeprefix(prefix): value for key, value in reference.items() if key.startswith(prefix)}
    with torch.no_grad():
        tensors[f"{modality}.logits"] = model(**theirs, logits_to_keep=logits_to_keep).logits.float().contiguous()
    tensors[f"{modality}.generated"] = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tensors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--work", required=True, help="folder with the check's image.png, video.npy, prompts.json")
    parser.add_argument("--max-new-tokens", type=int, required=True)
    parser.add_argument("--logits-to-keep", type=int, required=True, help="compare the logits of the last N positions")
    parser.add_argument("--sys-path", action="append", default=[], help="folders put first on sys.path")
    args = parser.parse_args(argv)
    for folder in reversed(args.sys_path):
        sys.path.insert(0, folder)

    import numpy as np
    import torch
    import transformers
    from PIL import Image
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, pipeline

    work = Path(args.work)
    prompts = json.loads((work / "prompts.json").read_text())
    reference = load_file(work / "reference_inputs.safetensors")
    report = {"transformers_version": transformers.__version__, "transformers_file": transformers.__file__}
    try:
        import towervision_hf  # noqa: F401

        report["towervision_hf_importable"] = True
    except ImportError:
        report["towervision_hf_importable"] = False
    config = AutoConfig.from_pretrained(args.model, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(args.model, trust_remote_code=True, dtype="auto").eval()
    report["classes"] = {
        "config": class_path(config),
        "processor": class_path(processor),
        "image_processor": class_path(processor.image_processor),
        "model": class_path(model),
    }
    tensors = {}
    image = Image.open(work / "image.png").convert("RGB")
    image_chat = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": prompts["image"]}]}
    ]
    inputs = processor.apply_chat_template(
        image_chat, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    tensors.update(run_model(model, "image", inputs, reference, args.max_new_tokens, args.logits_to_keep))
    if "video" in prompts:
        report["classes"]["video_processor"] = class_path(processor.video_processor)
        video_chat = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompts["video"]}]}]
        text = processor.apply_chat_template(video_chat, add_generation_prompt=True, tokenize=False)
        frames = np.load(work / "video.npy", allow_pickle=False)
        inputs = processor(text=text, videos=[frames], do_sample_frames=False, return_tensors="pt")
        tensors.update(run_model(model, "video", inputs, reference, args.max_new_tokens, args.logits_to_keep))
    del model

    pipe = pipeline("image-text-to-text", model=args.model, trust_remote_code=True, dtype="auto")
    report["classes"]["pipeline_model"] = class_path(pipe.model)
    report["classes"]["pipeline_processor"] = class_path(pipe.processor)
    outputs = pipe(
        text=image_chat, max_new_tokens=args.max_new_tokens, return_tensors=True, generate_kwargs={"do_sample": False}
    )
    tensors["image.pipeline_generated"] = torch.as_tensor(outputs[0]["generated_token_ids"]).reshape(1, -1)

    save_file(tensors, work / "remote.safetensors")
    (work / "report.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
