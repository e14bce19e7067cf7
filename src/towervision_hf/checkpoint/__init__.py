"""Checkpoint reading and writing, in one place: streamed safetensors (`weights`), composing a stage-0 model from
SigLIP + Tower+ (`compose`), converting released checkpoints and exporting back to native classes (`convert`), the
trained-modules save and `towervision merge`, the image newline beside LoRA adapters, and the tiny offline model.
Tensor-name keys and the dtype table live in `weights` and nowhere else."""
