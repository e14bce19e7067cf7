"""lmms-eval model plugin: `lmms-eval --model towervision --model_args pretrained=DIR --tasks textvqa,ocrbench`.

Registered through lmms-eval's entry-point group `lmms_eval.models` (see pyproject.toml): the entry point returns a
`ModelManifest` for the *simple* (legacy) model interface, which is the one lmms-eval defines for all three request
types. `Instance.args` are, per request type:

- `loglikelihood`: `(context, doc_to_target, doc_to_visual, doc_id, task, split)`;
- `generate_until`: `(context, gen_kwargs, doc_to_visual, doc_id, task, split)`;
- `generate_until_multi_round`: `(context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split)`, where
  `doc_to_text(doc, previous_output=, round_idx=, previous_round_info=)` returns
  `(visuals, context, terminal_signal, round_outputs, round_info)` for every round after the first.

Visuals are PIL images (placed before the text) or video paths (decoded to `max_frames_num` frames); `<image>` /
`<video>` strings already in a context are removed, since the chat template places the media itself.

`loglikelihood` convention (EvolvingLMMs-Lab/lmms-eval#370): lmms-eval's `multiple_choice` tasks pick
`argmin` of the returned values, as its HF wrappers return a *loss*. The default `loglikelihood_score=mean_nll`
therefore returns the mean negative log-likelihood of the continuation tokens (lower is better), which is what
those tasks expect; `loglikelihood_score=sum_logprob` returns the summed log-probability (higher is better) that
lmms-eval's base-class docstring promises, for tasks and scripts written against that convention (not for
`towervision_commute`, which follows lmms-eval's loss convention like its HF models). The continuation is scored as
the assistant's answer including the end-of-turn marker (`scoring.score_continuations`).

lmms-eval is an optional extra (`pip install 'towervision-hf[lmms]'`); without it the class still works with any
harness that passes objects with `.args` as above and sets `task_dict[task][split][doc_id]`.
"""

from .media import load_video_frames
from .scoring import default_num_frames, generate, load_model_and_processor, score_continuations, user_prompt


try:
    from lmms_eval.api.model import lmms as _LmmsBase
except ImportError:  # optional extra: the plugin is only *registered* when lmms-eval is installed
    _LmmsBase = object


LOGLIKELIHOOD_SCORES = ("mean_nll", "sum_logprob")


def lmms_manifest():
    """Entry point of group `lmms_eval.models`: the model name `towervision` -> `TowerVision` (simple interface)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="towervision", simple_class_path=f"{__name__}.TowerVision")


class TowerVision(_LmmsBase):
    """TowerVision / TowerVideo (or any chat-templated image-text-to-text checkpoint) as an lmms-eval model.

    Args (lmms-eval `--model_args`): `pretrained` (checkpoint dir or Hub id), `device`, `dtype`, `batch_size`,
    `max_frames_num` (frames per video, default: the processor's `num_frames`), `attn_implementation`,
    `loglikelihood_score` (`mean_nll` or `sum_logprob`, see the module docstring), `max_new_tokens` (default when a
    task sets none). `max_batch_size` and `trust_remote_code` are accepted for lmms-eval compatibility; remote code
    is always trusted (TowerVision ships as remote code).
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int | str = 1,
        max_frames_num: int | None = None,
        attn_implementation: str | None = None,
        loglikelihood_score: str = "mean_nll",
        max_new_tokens: int = 1024,
        max_batch_size: int | None = None,
        trust_remote_code: bool = True,
    ) -> None:
        super().__init__()
        if loglikelihood_score not in LOGLIKELIHOOD_SCORES:
            raise ValueError(f"loglikelihood_score={loglikelihood_score!r}: expected one of {LOGLIKELIHOOD_SCORES}")
        self.model, self.processor = load_model_and_processor(pretrained, device, dtype, attn_implementation)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 1
        self.max_frames_num = max_frames_num or default_num_frames(self.model, self.processor)
        self.loglikelihood_score = loglikelihood_score
        self.max_new_tokens = int(max_new_tokens)
        if _LmmsBase is object:  # what lmms-eval's base class sets up: one process, tasks filled in by the harness
            self._rank, self._world_size, self.task_dict = 0, 1, {}

    def _prompt(self, context: str, visuals, where: str):
        images, videos = [], []
        for visual in visuals or ():
            if isinstance(visual, str):
                frames = load_video_frames(visual, self.max_frames_num)
                if frames is None:
                    raise ValueError(f"{where}: cannot decode video {visual!r}")
                videos.append(frames)
            elif hasattr(visual, "convert"):
                images.append(visual.convert("RGB"))
            else:
                raise ValueError(
                    f"{where}: unsupported visual of type {type(visual).__name__} (PIL image or video path)"
                )
        for token in (getattr(self.processor, "image_token", None), getattr(self.processor, "video_token", None)):
            if token:
                context = context.replace(token, "")
        return user_prompt(context.strip(), images, videos)

    def _doc(self, task, split, doc_id):
        return self.task_dict[task][split][doc_id]

    def _visuals(self, doc_to_visual, doc):
        visuals = doc_to_visual(doc) if doc_to_visual is not None else []
        return visuals if isinstance(visuals, (list, tuple)) else [visuals]

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """`(score, is_greedy)` per request; `score` follows `loglikelihood_score` (default: mean NLL, lower is
        better)."""
        prompts, continuations = [], []
        for context, doc_to_target, doc_to_visual, doc_id, task, split in (request.args for request in requests):
            doc = self._doc(task, split, doc_id)
            continuation = doc_to_target if isinstance(doc_to_target, str) else doc_to_target(doc)
            prompts.append(self._prompt(context, self._visuals(doc_to_visual, doc), f"{task}/{split}/{doc_id}"))
            continuations.append(str(continuation))
        scores = score_continuations(self.model, self.processor, prompts, continuations, batch_size=self.batch_size)
        if self.loglikelihood_score == "mean_nll":
            return [(-score.mean_logprob, score.is_greedy) for score in scores]
        return [(score.sum_logprob, score.is_greedy) for score in scores]

    def _generation_kwargs(self, gen_kwargs: dict) -> tuple[dict, list[str]]:
        gen_kwargs = dict(gen_kwargs or {})
        until = gen_kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        kwargs = {"max_new_tokens": int(gen_kwargs.pop("max_new_tokens", self.max_new_tokens))}
        temperature = float(gen_kwargs.pop("temperature", 0) or 0)
        do_sample = bool(gen_kwargs.pop("do_sample", False)) or temperature > 0
        kwargs["do_sample"] = do_sample
        if do_sample:
            kwargs["temperature"] = temperature or 1.0
            kwargs["top_p"] = float(gen_kwargs.pop("top_p", None) or 1.0)
        if "num_beams" in gen_kwargs:
            kwargs["num_beams"] = int(gen_kwargs.pop("num_beams"))
        return kwargs, until

    def generate_until(self, requests) -> list[str]:
        """Answers to `generate_until` requests; requests with identical generation settings are batched together."""
        answers = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(repr(sorted((request.args[1] or {}).items(), key=str)), []).append(index)
        for indices in groups.values():
            kwargs, until = self._generation_kwargs(requests[indices[0]].args[1])
            prompts = []
            for index in indices:
                context, _, doc_to_visual, doc_id, task, split = requests[index].args
                doc = self._doc(task, split, doc_id)
                prompts.append(self._prompt(context, self._visuals(doc_to_visual, doc), f"{task}/{split}/{doc_id}"))
            outputs = generate(
                self.model, self.processor, prompts, batch_size=self.batch_size, stop_strings=until, **kwargs
            )
            for index, output in zip(indices, outputs):
                answers[index] = output
        return answers

    def generate_until_multi_round(self, requests) -> list[tuple[str, ...]]:
        """All rounds' answers per request (a tuple, as lmms-eval's multi-round tasks expect)."""
        results = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = request.args
            kwargs, until = self._generation_kwargs(gen_kwargs)
            doc = self._doc(task, split, doc_id)
            visuals, outputs, round_info, round_idx = self._visuals(doc_to_visual, doc), [], None, 0
            while True:
                if round_idx > 0:
                    visuals, context, terminal, outputs, round_info = doc_to_text(
                        doc, previous_output=outputs, round_idx=round_idx, previous_round_info=round_info
                    )
                    outputs = list(outputs)
                    if terminal:
                        break
                prompt = self._prompt(context, visuals, f"{task}/{split}/{doc_id} round {round_idx}")
                outputs.append(generate(self.model, self.processor, [prompt], stop_strings=until, **kwargs)[0])
                round_idx += 1
            results.append(tuple(outputs))
        return results
