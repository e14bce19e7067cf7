"""Mixture recipes: sources per stage, weights, ablation switches, deterministic interleaving and the build.

Recipe YAML (see recipes/data/visionblocks.yaml)::

    name: visionblocks
    seed: 0
    languages: all                 # all | core | [codes] | "de,fr"
    switches: {video: multilingual, english_only: false}
    media: {fetch: true, embed_local: false, workers: 8, cache_dir: null}
    stages:
      vision:
        sources:
          - name: pixmo_docs_charts  # unique; becomes the rows' `source`
            adapter: pixmo_docs      # sources.ADAPTERS
            samples: 117000          # rows taken at most (the paper's count); default interleaving weight
            weight: 2.0              # optional interleaving weight (default: samples)
            when: {video_qe_filter: true}  # optional: only when every listed switch has this value
            params: {config: charts} # adapter keyword arguments; "{languages}" in a string becomes the set's name
            paper: {row: PixMo-Docs, category: Doc VQA, tag: public}  # optional: the paper's table row it rebuilds
    inputs:                          # optional: sources read by `data translate` / `data synth` (RECIPE#NAME)
      pixmo_cap_en: {adapter: pixmo_cap, params: {}}
    paper: {table: Table 8, total: 6313286}   # optional: the paper's printed totals, for `build --dry-run`

Every mapping is checked: an unknown key at any level (a misspelt `langauges:`, a source's `wieght:`, an adapter
param the adapter does not take) is an error naming where it is and the nearest known key, and weights must be
finite and positive.

Interleaving draws the next source with probability proportional to its weight among the sources not yet exhausted
(random.Random(seed)), so the first rows of a build follow the weights and a full build uses every row once.
`samples` counts rows kept after the language filter, so switching `languages` (all / core) keeps every source's
size, and so the dataset's, whenever the source holds enough rows in the selected languages; a source that runs
short is reported after the build.

Switches select sources through `when`; one is read here too: `english_only: true` keeps, of the rows each source
gives the full mixture (its `samples` in the recipe's languages), only the English ones: nothing refills the dropped
rows (counted as `not_english`), so the build is exactly the English part of the full mixture.
"""

import difflib
import math
import random
import shutil
import tempfile
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .fetch import UrlFetcher
from .languages import resolve_language_set
from .report import BuildReport
from .schema import to_features
from .sources import check_adapter_params, iter_samples, make_adapter


@dataclass
class SourceSpec:
    name: str
    adapter: str
    params: dict = field(default_factory=dict)
    samples: int | None = None
    weight: float | None = None
    when: dict = field(default_factory=dict)
    paper: dict = field(default_factory=dict)

    @property
    def mixture_weight(self) -> float:
        return float(self.weight if self.weight is not None else self.samples)


@dataclass
class Recipe:
    name: str
    stages: dict[str, list[SourceSpec]]
    seed: int = 0
    languages: tuple[str, ...] = ()
    switches: dict = field(default_factory=dict)
    media: dict = field(default_factory=dict)
    inputs: dict[str, SourceSpec] = field(default_factory=dict)
    paper: dict = field(default_factory=dict)

    def active_sources(self, stage: str) -> list[SourceSpec]:
        """The stage's sources whose `when` conditions hold under the current switches."""
        if stage not in self.stages:
            raise ValueError(f"recipe {self.name!r} has no stage {stage!r}; stages: {list(self.stages)}")
        return [
            source
            for source in self.stages[stage]
            if all(self.switches.get(switch) == value for switch, value in source.when.items())
        ]


_MEDIA_DEFAULTS = {"fetch": True, "embed_local": False, "workers": 8, "cache_dir": None}
# Switches this module reads itself (other switches only select sources through `when`), with their allowed values.
ENGLISH_ONLY = "english_only"
SWITCH_VALUES = {ENGLISH_ONLY: (False, True)}
PAPER_TAGS = {"public": "Public Data", "synthetic": "Synthetic (Generated)", "translated": "Translated (Augmented)"}
# The keys a recipe may hold, per level (`switches` are the recipe's own: `when` may name only those)
RECIPE_KEYS = ("name", "seed", "languages", "switches", "media", "stages", "sources", "inputs", "paper")
RECIPE_PAPER_KEYS = ("table", "total", "english", "multilingual")
STAGE_KEYS = ("sources",)
SOURCE_KEYS = ("name", "adapter", "params", "samples", "weight", "when", "paper")
SOURCE_PAPER_KEYS = ("row", "category", "tag")
INPUT_KEYS = ("adapter", "params", "samples")


def _unknown_key_hint(key, known, prefix: str = "") -> str:
    """`did you mean 'languages'?` for the known key nearest to `key` (with `prefix.`), else the known keys."""
    options = [str(option) for option in known]
    nearest = difflib.get_close_matches(str(key), options, n=1)
    return f"did you mean {'.'.join(filter(None, [prefix, nearest[0]]))!r}?" if nearest else f"known: {options}"


def _check_mapping(value, where: str) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {value!r:.120}")


def _check_keys(mapping, known, where: str) -> None:
    """ValueError naming `where`, the first key of `mapping` not in `known` and the nearest known key."""
    _check_mapping(mapping, where)
    for key in mapping:
        if key not in known:
            raise ValueError(f"{where}: unknown key {key!r}; {_unknown_key_hint(key, known)}")


def _check_override_key(config: dict, key: str, assignment: str) -> None:
    """ValueError naming the first unknown part of `key` and the nearest known key: an override never adds a key,
    so a typo (`languagez=core`) cannot be silently ignored."""
    known = {
        **dict.fromkeys(RECIPE_KEYS),
        **config,
        "media": {**_MEDIA_DEFAULTS, **(config.get("media") or {})},
        "switches": {**dict.fromkeys(SWITCH_VALUES), **(config.get("switches") or {})},
    }
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(known, dict):
            raise ValueError(f"--set {assignment!r}: {'.'.join(parts[:depth])!r} is not a mapping in the recipe")
        if part not in known:
            hint = _unknown_key_hint(part, known, prefix=".".join(parts[:depth]))
            raise ValueError(f"--set {assignment!r}: unknown key {'.'.join(parts[: depth + 1])!r}; {hint}")
        known = known[part]


def _apply_override(config: dict, assignment: str) -> None:
    key, separator, value = assignment.partition("=")
    if not separator or not key:
        raise ValueError(f"override {assignment!r} is not KEY=VALUE (e.g. languages=core, switches.video=english)")
    _check_override_key(config, key, assignment)
    *parents, leaf = key.split(".")
    target = config
    for parent in parents:
        target = target.setdefault(parent, {})
        if not isinstance(target, dict):
            raise ValueError(f"override {assignment!r}: {parent!r} is not a mapping in the recipe")
    parsed = yaml.safe_load(value)
    # YAML 1.1 reads on/off/yes/no as booleans; only true/false are meant as such on the command line
    target[leaf] = value if isinstance(parsed, bool) and value.strip().lower() not in ("true", "false") else parsed


def _with_language_set(value, language_set: str):
    """`"{languages}"` in the strings of `value` (params) becomes the language set's name (all / core / custom)."""
    if isinstance(value, str):
        return value.replace("{languages}", language_set)
    if isinstance(value, dict):
        return {key: _with_language_set(item, language_set) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_language_set(item, language_set) for item in value]
    return value


def _check_params(where: str, adapter: str, name: str, params) -> None:
    """The adapter exists and takes every key of `params` (checked when the recipe loads, before any build)."""
    _check_mapping(params, f"{where}, source {name!r}, params")
    try:
        check_adapter_params(adapter, name, params)
    except ValueError as error:
        raise ValueError(f"{where}, {error}") from None


def _source_spec(recipe_name: str, stage: str, entry: dict, switches: dict, language_set: str = "all") -> SourceSpec:
    where = f"recipe {recipe_name!r}, stage {stage!r}"
    if not isinstance(entry, dict) or "name" not in entry or "adapter" not in entry:
        raise ValueError(f"{where}: every source needs a name and an adapter, got {entry!r:.120}")
    _check_keys(entry, SOURCE_KEYS, f"{where}, source {entry['name']!r}")
    _check_keys(entry.get("paper") or {}, SOURCE_PAPER_KEYS, f"{where}, source {entry['name']!r}, paper")
    _check_params(where, entry["adapter"], entry["name"], entry.get("params") or {})
    spec = SourceSpec(
        name=entry["name"],
        adapter=entry["adapter"],
        params=_with_language_set(dict(entry.get("params") or {}), language_set),
        samples=entry.get("samples"),
        weight=entry.get("weight"),
        when=dict(entry.get("when") or {}),
        paper=dict(entry.get("paper") or {}),
    )
    if spec.paper and spec.paper.get("tag") not in PAPER_TAGS:
        raise ValueError(f"{where}, source {spec.name!r}: paper.tag must be one of {sorted(PAPER_TAGS)}")
    if spec.samples is None and spec.weight is None:
        raise ValueError(f"{where}, source {spec.name!r}: give `samples` (row count) or `weight`")
    for key, kind, types in (("samples", "integer (rows taken)", int), ("weight", "finite number", (int, float))):
        value = getattr(spec, key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, types) or not math.isfinite(value) or value <= 0
        ):
            raise ValueError(f"{where}, source {spec.name!r}: `{key}` must be a positive {kind}, got {value!r}")
    for switch in spec.when:
        if switch not in switches:
            raise ValueError(f"{where}, source {spec.name!r}: `when` names unknown switch {switch!r}")
    return spec


def load_recipe(path, overrides=()) -> Recipe:
    """Read a recipe YAML, apply `overrides` (`"key.sub=value"` strings, values parsed as YAML) and check it."""
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    if not isinstance(config, dict):
        raise ValueError(f"recipe {path}: expected a mapping at the top level")
    for assignment in overrides:
        _apply_override(config, assignment)
    _check_keys(config, RECIPE_KEYS, f"recipe {path}")
    _check_keys(config.get("media") or {}, _MEDIA_DEFAULTS, f"recipe {path}, media")
    _check_keys(config.get("paper") or {}, RECIPE_PAPER_KEYS, f"recipe {path}, paper")
    _check_mapping(config.get("switches") or {}, f"recipe {path}, switches")
    name = config.get("name") or Path(path).stem
    switches = dict(config.get("switches") or {})
    language_spec = config.get("languages", "all")
    language_set = language_spec if language_spec in ("all", "core") else "custom"
    raw_stages = config.get("stages") or ({"default": {"sources": config["sources"]}} if "sources" in config else None)
    if not raw_stages:
        raise ValueError(f"recipe {path}: needs `stages` (or a top-level `sources` list)")
    for switch, allowed in SWITCH_VALUES.items():
        if switch in switches and switches[switch] not in allowed:
            raise ValueError(
                f"recipe {path}: switches.{switch} must be one of {list(allowed)}, got {switches[switch]!r}"
            )
    stages = {}
    _check_mapping(raw_stages, f"recipe {path}, stages")
    for stage, body in raw_stages.items():
        if isinstance(body, dict):
            _check_keys(body, STAGE_KEYS, f"recipe {path}, stage {stage!r}")
        entries = body.get("sources") if isinstance(body, dict) else None
        if not entries:
            raise ValueError(f"recipe {path}: stage {stage!r} has no sources")
        stages[stage] = [_source_spec(name, stage, entry, switches, language_set) for entry in entries]
        names = [spec.name for spec in stages[stage]]
        if len(set(names)) != len(names):
            raise ValueError(f"recipe {path}: stage {stage!r} has duplicate source names {names}")
    inputs = {}
    raw_inputs = config.get("inputs") or {}
    _check_mapping(raw_inputs, f"recipe {path}, inputs")
    for input_name, entry in raw_inputs.items():
        _check_keys(entry, INPUT_KEYS, f"recipe {path}, input {input_name!r}")
        if "adapter" not in entry:
            raise ValueError(f"recipe {path}: input {input_name!r} needs an adapter")
        _check_params(f"recipe {path}", entry["adapter"], input_name, entry.get("params") or {})
        inputs[input_name] = SourceSpec(
            name=input_name,
            adapter=entry["adapter"],
            samples=entry.get("samples"),
            params=_with_language_set(dict(entry.get("params") or {}), language_set),
        )
    recipe = Recipe(
        name=name,
        stages=stages,
        seed=int(config.get("seed", 0)),
        languages=resolve_language_set(language_spec),
        switches=switches,
        media={**_MEDIA_DEFAULTS, **(config.get("media") or {})},
        inputs=inputs,
        paper=dict(config.get("paper") or {}),
    )
    for stage in stages:
        if not recipe.active_sources(stage):
            conditions = sorted({f"{key}={value}" for spec in stages[stage] for key, value in spec.when.items()})
            raise ValueError(
                f"recipe {path}: no source of stage {stage!r} is active under switches {switches} "
                f"(its sources ask for {', '.join(conditions)})"
            )
    return recipe


def input_samples(recipe: Recipe, name: str, report: BuildReport, streaming: bool = False, limit: int | None = None):
    """Rows of the recipe's input `name` (the data `translate` and `synth` start from), in the recipe's languages;
    image URLs are left unresolved (the endpoint or a later build fetches them)."""
    if name not in recipe.inputs:
        raise ValueError(f"recipe {recipe.name!r} has no input {name!r}; inputs: {sorted(recipe.inputs)}")
    spec = recipe.inputs[name]
    adapter = make_adapter(spec.adapter, spec.name, seed=recipe.seed, streaming=streaming, **spec.params)
    caps = [value for value in (spec.samples, limit) if value is not None]
    cap = min(caps) if caps else None
    yield from iter_samples(
        adapter,
        report,
        languages=set(recipe.languages),
        embed_local=recipe.media["embed_local"],
        max_samples=cap,
        workers=1,
    )


def plan(recipe: Recipe, stage: str | None = None) -> list[dict]:
    """One entry per active source of every stage (or of `stage`): stage, name, adapter, samples, paper row, category
    and tag."""
    return [
        {
            "stage": name,
            "name": spec.name,
            "adapter": spec.adapter,
            "samples": spec.samples,
            "row": spec.paper.get("row"),
            "category": spec.paper.get("category"),
            "tag": spec.paper.get("tag"),
        }
        for name in ([stage] if stage else recipe.stages)
        for spec in recipe.active_sources(name)
    ]


def is_multilingual(entry: dict) -> bool:
    """Table 8's "Total (Multilingual)" counts its Multilingual/Cultural rows and the translated rows."""
    return entry["category"] == "Multilingual/Cultural" or entry["tag"] == "translated"


def paper_percent(samples: int, total: int) -> str:
    """`samples` as a percentage of `total`, printed like Table 8: two decimals, three below 0.015."""
    percent = 100 * samples / total
    return f"{percent:.2f}" if percent >= 0.015 else f"{percent:.3f}"


def format_plan(recipe: Recipe, stage: str | None = None) -> str:
    """The `build --dry-run` table: per source its rows and shares, per stage (every stage, or `stage`) and over the
    paper's table rows.

    `share` is of the recipe's rows; `paper %` is of the total the paper prints (`paper.total`), the way the paper
    computes its percentages."""
    entries = plan(recipe, stage)
    paper_total = recipe.paper.get("total")
    width = max(len("source"), *(len(entry["name"]) for entry in entries))
    row_width = max(len("paper row"), *(len(entry["row"] or "-") for entry in entries))
    lines = []
    lines.append(f"languages: {','.join(recipe.languages)}; switches: {recipe.switches}")
    if recipe.switches.get(ENGLISH_ONLY):
        lines.append(
            "english_only: each source keeps the English rows of the share below (rows read in the "
            "languages above); the English count is known after the build, nothing refills the rest"
        )
    lines.append("")
    for name in [stage] if stage else recipe.stages:
        stage_entries = [entry for entry in entries if entry["stage"] == name]
        stage_total = sum(entry["samples"] or 0 for entry in stage_entries)
        size = "every row" if any(entry["samples"] is None for entry in stage_entries) else f"{stage_total:,} rows"
        lines += [
            f"{recipe.name}/{name}: {len(stage_entries)} sources, {size}",
            f"{'source':<{width}}  {'paper row':<{row_width}}  {'tag':<10}  {'samples':>11}  {'share':>7}"
            + ("  paper %" if paper_total else ""),
        ]
        for entry in stage_entries:
            samples = entry["samples"]
            share = f"{samples / stage_total:>7.2%}" if samples and stage_total else f"{'-':>7}"
            count = f"{samples:,}" if samples is not None else "all"
            line = (
                f"{entry['name']:<{width}}  {entry['row'] or '-':<{row_width}}  {entry['tag'] or '-':<10}  "
                f"{count:>11}  {share}"
            )
            if paper_total and entry["row"] and samples:
                line += f"  {paper_percent(samples, paper_total):>7}"
            lines.append(line)
        lines.append("")
    rows = [entry for entry in entries if entry["row"]]
    if rows:
        total = sum(entry["samples"] for entry in rows)
        multilingual = sum(entry["samples"] for entry in rows if is_multilingual(entry))
        lines.append(
            f"{recipe.paper.get('table', 'paper')} rows: {len(rows)}, {total:,} samples "
            f"(English {total - multilingual:,}, multilingual {multilingual:,})"
        )
        if paper_total and stage is None:
            printed = {key: recipe.paper[key] for key in ("english", "multilingual") if key in recipe.paper}
            lines.append(
                f"as printed in the paper: total {paper_total:,}"
                + "".join(f", {key} {value:,}" for key, value in printed.items())
                + f"; rows minus printed total: {total - paper_total:+,}"
            )
    return "\n".join(lines)


def mixture_samples(
    recipe: Recipe, stage: str, report: BuildReport, streaming: bool = False, limit: int | None = None, fetcher=None
):
    """Rows of one stage, interleaved by weight with `random.Random(recipe.seed)`; at most `limit` rows.

    `fetcher` resolves image URLs (default: a `UrlFetcher` on the recipe's cache when `media.fetch` is on).
    """
    if fetcher is None and recipe.media["fetch"]:
        fetcher = UrlFetcher(recipe.media["cache_dir"])
    specs = recipe.active_sources(stage)
    streams = [
        iter_samples(
            make_adapter(spec.adapter, spec.name, seed=recipe.seed, streaming=streaming, **spec.params),
            report,
            languages=set(recipe.languages),
            fetcher=fetcher,
            embed_local=recipe.media["embed_local"],
            max_samples=spec.samples,
            workers=int(recipe.media["workers"]),
        )
        for spec in specs
    ]
    if recipe.switches.get(ENGLISH_ONLY):
        streams = [_english_rows(stream, spec.name, report) for stream, spec in zip(streams, specs)]
    weights = [spec.mixture_weight for spec in specs]
    rng = random.Random(recipe.seed)
    active, emitted = list(range(len(specs))), 0
    try:
        while active and (limit is None or emitted < limit):
            choice = rng.choices(active, weights=[weights[i] for i in active])[0]
            try:
                row = next(streams[choice])
            except StopIteration:
                active.remove(choice)
                continue
            yield row
            emitted += 1
    finally:
        for stream in streams:
            stream.close()


def _english_rows(rows, source: str, report: BuildReport):
    """The English rows of `rows` (a source's share of the full mixture); the others are counted as `not_english`."""
    with closing(rows):
        for row in rows:
            if row["language"] == "en":
                yield row
            else:
                report.drop(source, row["language"], "not_english")


def build(
    recipe: Recipe,
    out,
    stage: str | None = None,
    streaming: bool = False,
    limit: int | None = None,
    fetcher=None,
    echo=print,
) -> dict[str, BuildReport]:
    """Build one stage (or every stage, into `out/<stage>`) as `save_to_disk` folders with a `counts.json` each."""
    from datasets import Dataset

    out = Path(out)
    stages = [stage] if stage else list(recipe.stages)
    reports = {}
    for name in stages:
        target = out if stage or len(stages) == 1 else out / name
        report = BuildReport(
            f"{recipe.name}/{name}",
            seed=recipe.seed,
            language_set=list(recipe.languages),
            switches=recipe.switches,
            limit=limit,
        )

        rows = mixture_samples(recipe, name, report, streaming=streaming, limit=limit, fetcher=fetcher)
        first = next(rows, None)

        def generate(first=first, rows=rows):
            yield first
            yield from rows

        with tempfile.TemporaryDirectory(prefix=".build-", dir=out.parent if out.parent.exists() else None) as cache:
            if first is None:  # every row skipped or filtered: an empty dataset, and the report says why
                dataset = Dataset.from_dict({column: [] for column in to_features()}, features=to_features())
            else:
                dataset = Dataset.from_generator(
                    generate, features=to_features(), cache_dir=cache, fingerprint=uuid.uuid4().hex
                )
            if target.exists():
                shutil.rmtree(target)
            dataset.save_to_disk(str(target), num_shards=None if len(dataset) else 1)  # 0 shards do not load back
            del dataset
        report.save(target / "counts.json")
        echo(report.format_table())
        if first is None:
            echo(f"warning: stage {name!r} of {recipe.name!r} produced no rows; see the skipped counts above")
        elif limit is None:
            for spec in recipe.active_sources(name):  # rows dropped by english_only were the source's share
                kept = sum(report.kept.get(spec.name, {}).values()) + report.skipped[spec.name]["not_english"]
                if spec.samples is not None and kept < spec.samples:
                    echo(
                        f"warning: source {spec.name!r} gave {kept} of its {spec.samples} samples "
                        f"in languages {','.join(recipe.languages)}"
                    )
        reports[name] = report
    return reports


def load_mixture(
    recipe,
    stage: str | None = None,
    streaming: bool = True,
    limit: int | None = None,
    overrides=(),
    fetcher=None,
    report: BuildReport | None = None,
):
    """The mixture of `recipe` (a path or a Recipe) as an `IterableDataset`, streamed straight into training.

    Each iteration (epoch) replays the same seeded mixture; counts go to `report` when given.
    """
    from datasets import IterableDataset

    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, overrides)
    if stage is None:
        if len(recipe.stages) != 1:
            raise ValueError(f"recipe {recipe.name!r} has stages {list(recipe.stages)}: pass stage=")
        stage = next(iter(recipe.stages))
    recipe.active_sources(stage)

    def generate():
        counts = report if report is not None else BuildReport(f"{recipe.name}/{stage}")
        yield from mixture_samples(recipe, stage, counts, streaming=streaming, limit=limit, fetcher=fetcher)

    return IterableDataset.from_generator(generate, features=to_features())
