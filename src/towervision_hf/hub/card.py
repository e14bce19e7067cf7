"""Model card of a staged checkpoint: Hub YAML metadata plus a body rendered from `hub/model_card.md`.

The metadata follows the released TowerVision cards (languages of the paper, `cc-by-nc-sa-4.0`, `image-text-to-text`
or `video-text-to-text`, `library_name: transformers`) and adds what a republished checkpoint needs: its
`base_model` chain, `custom_code`, and a `model-index` built from `towervision eval` results.
"""

import json
import re
from collections import Counter
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..checkpoint.weights import dtype_name
from ..data.languages import LANGUAGES
from .versions import MIN_TRANSFORMERS_VERSION


DEFAULT_LICENSE = "cc-by-nc-sa-4.0"
PIPELINE_TAGS = ("image-text-to-text", "video-text-to-text")
TAGS = ["towervision", "multimodal", "multilingual", "vlm", "translation", "custom_code", "arxiv:2510.21849"]
TEMPLATE_PATH = Path(__file__).resolve().with_name("model_card.md")

# Pretrained parts recognised from the config shapes, for the card's "Built from" line.
SIGLIP2_SO400M = "google/siglip2-so400m-patch14-384"
TOWER_PLUS_BY_SHAPE = {(2304, 26): "Unbabel/Tower-Plus-2B", (3584, 42): "Unbabel/Tower-Plus-9B"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
COUNT_COLUMNS = {"ties", "skipped", "empty_outputs"}


def card_languages() -> list[str]:
    """ISO 639-1 codes of the paper's languages, in the order of `towervision_hf.data.languages`, without repeats."""
    return list(dict.fromkeys(language.card_code for language in LANGUAGES.values()))


def is_hub_id(value) -> bool:
    """Whether `value` looks like a Hub repo id (`org/name`) rather than a local path."""
    return isinstance(value, str) and bool(HUB_ID.match(value)) and not Path(value).exists()


def read_card_metadata(checkpoint: Path) -> dict:
    """YAML metadata of an existing `README.md` in the checkpoint (e.g. the card TRL writes), or `{}`."""
    readme = Path(checkpoint) / "README.md"
    if not readme.is_file():
        return {}
    return ModelCard.load(readme, ignore_metadata_errors=True).data.to_dict()


def building_blocks(config) -> list[str]:
    """Public checkpoints the architecture was assembled from, recognised by their shapes."""
    vision, text = config.vision_config, config.text_config
    blocks = []
    if (vision.hidden_size, vision.patch_size, vision.image_size) == (1152, 14, 384):
        blocks.append(SIGLIP2_SO400M)
    if (tower := TOWER_PLUS_BY_SHAPE.get((text.hidden_size, text.num_hidden_layers))) is not None:
        blocks.append(tower)
    return blocks


def format_count(count: int) -> str:
    for threshold, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if count >= threshold:
            return f"{count / threshold:.3g}{suffix}"
    return str(count)


def load_evaluations(paths: list[Path]) -> list[dict]:
    """Read `towervision eval` result files (`<task>.json`); `ValueError` naming the file if one is not such a file."""
    evaluations = []
    for path in paths:
        path = Path(path)
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"evaluation results {path} cannot be read as JSON: {error}") from None
        if (
            not isinstance(result, dict)
            or not isinstance(result.get("task"), str)
            or not isinstance(result.get("tables"), dict)
        ):
            raise ValueError(
                f"evaluation results {path} are not a `towervision eval` result (needs 'task' and 'tables')"
            )
        evaluations.append(result)
    return evaluations


def _format_value(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def evaluation_sections(evaluations: list[dict]) -> list[dict]:
    """The evaluation results as the template's tables (one section per task, one table per grouping)."""
    sections = []
    for result in evaluations:
        data = result.get("data") or {}
        settings = result.get("settings") or {}
        description = f"Data: {_data_source(data)}"
        if data.get("kind") == "hub" and data.get("revision"):
            description += f" (revision `{data['revision']}`)"
        if settings.get("split"):
            description += f", split `{settings['split']}`"
        skipped = sum((result.get("skipped") or {}).values())
        description += f"; {skipped} items skipped." if skipped else "."
        tables = []
        for name, rows in result["tables"].items():
            columns = list(dict.fromkeys(column for row in rows.values() for column in row))
            tables.append(
                {
                    "name": name,
                    "columns": columns,
                    "rows": [
                        {"name": row_name, "values": [_format_value(row.get(column)) for column in columns]}
                        for row_name, row in rows.items()
                    ],
                }
            )
        sections.append(
            {"task": result["task"], "description": description, "tables": tables, "notes": result.get("notes") or []}
        )
    return sections


def _data_source(data: dict) -> str:
    """A benchmark's data as the card names it: a link for a Hub dataset, never a path on the author's disk."""
    source = data.get("source")
    if data.get("kind") == "hub" and is_hub_id(source):
        return f"[{source}](https://huggingface.co/datasets/{source})"
    return "local data"


def is_count(column: str) -> bool:
    """Whether a result column counts items (`n`, `n_scored`, `ties`, `skipped`, `empty_outputs`) instead of
    measuring the model: counts stay in the card's tables and out of `model-index`."""
    return column == "n" or column.startswith("n_") or column in COUNT_COLUMNS


def evaluation_metadata(evaluations: list[dict], pipeline_tag: str) -> list[EvalResult]:
    """`model-index` entries: every metric of each result's first table (the Hub shows them on the model page);
    counts (`is_count`) are left out."""
    entries = []
    for result in evaluations:
        if not result["tables"]:
            continue
        data = result.get("data") or {}
        dataset_type = data["source"] if data.get("kind") == "hub" and data.get("source") else result["task"]
        rows = next(iter(result["tables"].values()))
        for row_name, row in rows.items():
            for metric, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and not is_count(metric):
                    entries.append(
                        EvalResult(
                            task_type=pipeline_tag,
                            dataset_type=dataset_type,
                            dataset_name=result["task"],
                            dataset_config=str(row_name),
                            dataset_split=(result.get("settings") or {}).get("split"),
                            metric_type=metric,
                            metric_value=value,
                        )
                    )
    return entries


def training_summary(checkpoint: Path, datasets: list[str]) -> dict[str, str]:
    """What the checkpoint folder tells about its own training run.

    Reads `trainer_state.json` (transformers' Trainer) and `train_summary.json` (`towervision train`: steps,
    trainable parameters per module group, samples skipped for length).
    """
    summary = {}
    if datasets:
        summary["training data"] = ", ".join(
            f"[{d}](https://huggingface.co/datasets/{d})" if is_hub_id(d) else f"`{d}`" for d in datasets
        )
    state_path = Path(checkpoint) / "trainer_state.json"
    if state_path.is_file():
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if state.get("global_step"):
            summary["optimizer steps"] = str(state["global_step"])
        if state.get("epoch") is not None:
            summary["epochs"] = f"{state['epoch']:.3g}"
        losses = [
            entry["loss"] for entry in state.get("log_history", []) if isinstance(entry.get("loss"), (int, float))
        ]
        if losses:
            summary["final logged training loss"] = f"{losses[-1]:.4g}"
        if state.get("train_batch_size"):
            summary["per-device batch size"] = str(state["train_batch_size"])
    run_path = Path(checkpoint) / "train_summary.json"
    if run_path.is_file():
        run = json.loads(run_path.read_text(encoding="utf-8"))
        if isinstance(run.get("global_step"), int):
            summary.setdefault("optimizer steps", str(run["global_step"]))
        groups = run.get("trainable_parameters")
        if isinstance(groups, dict) and groups:
            summary["trained parameters"] = ", ".join(
                f"{group} {format_count(count)}" if count else f"{group} frozen" for group, count in groups.items()
            )
        if run.get("skipped_over_length"):
            summary["samples skipped as longer than max_length"] = str(run["skipped_over_length"])
    return summary


def render_model_card(
    config,
    *,
    repo_id: str,
    num_parameters: int,
    dtypes: list[str],
    pipeline_tag: str = "image-text-to-text",
    license: str = DEFAULT_LICENSE,
    base_models: list[str] | None = None,
    datasets: list[str] | None = None,
    evaluations: list[dict] | None = None,
    training: dict[str, str] | None = None,
    template_path: Path | None = None,
) -> str:
    """The README.md of the staged checkpoint.

    Args:
        config: the checkpoint's `TowerVisionConfig`.
        repo_id: target Hub repo (`org/name`), used in the usage snippet.
        num_parameters / dtypes: parameter count and safetensors dtype codes of the stored tensors.
        pipeline_tag: `"image-text-to-text"` or `"video-text-to-text"` (TowerVideo).
        base_models: Hub ids this checkpoint was fine-tuned or converted from (YAML `base_model`); when empty, the
            recognised SigLIP2 / Tower+ building blocks are listed instead.
        datasets: Hub ids of the training data of this checkpoint (YAML `datasets`).
        evaluations: `towervision eval` result dicts (see `load_evaluations`).
        training: facts about this checkpoint's training run (see `training_summary`).
        template_path: a Jinja template to use instead of `hub/model_card.md`.
    """
    if pipeline_tag not in PIPELINE_TAGS:
        raise ValueError(f"pipeline_tag must be one of {PIPELINE_TAGS}, got {pipeline_tag!r}")
    if not is_hub_id(repo_id):
        raise ValueError(f"repo_id {repo_id!r} is not a Hub repo id of the form org/name")
    invalid = [model for model in base_models or [] if not is_hub_id(model)]
    if invalid:
        raise ValueError(f"base_model entries must be Hub repo ids (org/name), got {invalid}")
    evaluations = evaluations or []
    blocks = building_blocks(config)
    yaml_base_models = list(base_models or []) or blocks
    video = pipeline_tag == "video-text-to-text"
    tags = TAGS + (["image-text-to-text", "video-text-to-text"] if video else ["image-text-to-text"])
    card_data = ModelCardData(
        language=card_languages(),
        license=license,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        base_model=yaml_base_models or None,
        datasets=list(datasets or []) or None,
        tags=list(dict.fromkeys(tags)),
        model_name=repo_id.split("/")[-1],
        eval_results=evaluation_metadata(evaluations, pipeline_tag) or None,
    )
    dtype_code = Counter(dtypes).most_common(1)[0][0] if dtypes else None
    pps = config.patches_per_side
    license_text = (
        "Released under [CC BY-NC-SA 4.0](https://creativecommons.org/licenses/by-nc-sa/4.0/) (non-commercial, "
        "share-alike), the license of the TowerVision models and of Tower+."
        if license == DEFAULT_LICENSE
        else f"Released under `{license}`. Check that it is compatible with the licenses of the models it derives "
        "from."
    )
    template = Path(template_path) if template_path is not None else TEMPLATE_PATH
    card = ModelCard.from_template(
        card_data,
        template_str=template.read_text(encoding="utf-8"),
        repo_id=repo_id,
        model_name=repo_id.split("/")[-1],
        video=video,
        vision_layers=config.vision_config.num_hidden_layers,
        vision_hidden=config.vision_config.hidden_size,
        text_layers=config.text_config.num_hidden_layers,
        text_hidden=config.text_config.hidden_size,
        projector_act=config.projector_hidden_act.upper(),
        num_parameters=format_count(num_parameters),
        max_tiles=config.max_tiles,
        tile_size=config.tile_size,
        tokens_per_tile=pps * pps,
        use_image_newline=config.use_image_newline,
        num_frames=config.num_frames,
        video_pool_size=config.video_pool_size,
        context_length=config.text_config.max_position_embeddings,
        dtype=dtype_name(dtype_code),
        languages=[language.name for language in LANGUAGES.values()],
        license=license,
        license_text=license_text,
        base_models=list(base_models or []),
        building_blocks=blocks,
        scale_image_features=config.scale_image_features,
        min_transformers=MIN_TRANSFORMERS_VERSION,
        training=training or {},
        evaluations=evaluation_sections(evaluations),
    )
    return str(card)
