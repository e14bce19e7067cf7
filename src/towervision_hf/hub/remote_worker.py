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
import ctypes  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402


def release_memory() -> None:
    """Give back to the system what a dropped model held: collect its reference cycles (accelerate's hooks keep the
    modules alive until then), then trim glibc's heap, which otherwise keeps freed blocks below its mmap threshold
    in the process. The load check's in-process side uses it too."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def class_path(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def run_model(model, modality: str, inputs, max_new_tokens: int) -> dict:
    """Own processor outputs, greedy tokens and the logits that chose them (one prefill; as `load_check`)."""
    import torch

    batch = {key: value for key, value in inputs.items() if isinstance(value, torch.Tensor)}
    tensors = {f"{modality}.inputs.{key}": value.contiguous() for key, value in batch.items()}
    with torch.no_grad():
        output = model.generate(
            **{key: value.to(model.device) for key, value in batch.items()},
            max_new_tokens=max_new_tokens,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    tensors[f"{modality}.generated"] = output.sequences.cpu()
    tensors[f"{modality}.logits"] = torch.stack(output.logits, dim=1).float().cpu().contiguous()
    return tensors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--work", required=True, help="folder with the check's image.png, video.npy, prompts.json")
    parser.add_argument("--max-new-tokens", type=int, required=True)
    parser.add_argument("--dtype", default="auto", help="`auto` (the checkpoint's) or a torch dtype name")
    parser.add_argument("--sys-path", action="append", default=[], help="folders put first on sys.path")
    args = parser.parse_args(argv)
    for folder in reversed(args.sys_path):
        sys.path.insert(0, folder)

    import numpy as np
    import torch
    import transformers
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, pipeline

    work = Path(args.work)
    prompts = json.loads((work / "prompts.json").read_text())
    report = {"transformers_version": transformers.__version__, "transformers_file": transformers.__file__}
    try:
        import towervision_hf  # noqa: F401

        report["towervision_hf_importable"] = True
    except ImportError:
        report["towervision_hf_importable"] = False
    config = AutoConfig.from_pretrained(args.model, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    offload = str(work / "offload")
    load = {"trust_remote_code": True, "dtype": args.dtype, "device_map": "auto", "offload_folder": offload}
    model = AutoModelForImageTextToText.from_pretrained(args.model, **load).eval()
    report["classes"] = {
        "config": class_path(config),
        "processor": class_path(processor),
        "image_processor": class_path(processor.image_processor),
        "model": class_path(model),
    }
    report["dtype"], report["device"] = str(model.dtype).removeprefix("torch."), str(model.device)
    tensors = {}
    image = Image.open(work / "image.png").convert("RGB")
    image_chat = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": prompts["image"]}]}
    ]
    inputs = processor.apply_chat_template(
        image_chat, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    tensors.update(run_model(model, "image", inputs, args.max_new_tokens))
    if "video" in prompts:
        report["classes"]["video_processor"] = class_path(processor.video_processor)
        video_chat = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompts["video"]}]}]
        text = processor.apply_chat_template(video_chat, add_generation_prompt=True, tokenize=False)
        frames = np.load(work / "video.npy", allow_pickle=False)
        inputs = processor(text=text, videos=[frames], do_sample_frames=False, return_tensors="pt")
        tensors.update(run_model(model, "video", inputs, args.max_new_tokens))
    del model
    release_memory()  # the pipeline loads its own copy: never two at once

    pipe = pipeline(
        "image-text-to-text", model=args.model, trust_remote_code=True, dtype=args.dtype, device_map="auto",
        model_kwargs={"offload_folder": str(work / "offload")},
    )  # fmt: skip
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
