"""Per-source and per-language counts of a build: every record read is either kept or skipped with a reason."""

import json
from collections import Counter


SKIP_REASONS = {
    "malformed": "the record does not have the source's fields or types",
    "empty_conversation": "no usable user/assistant turn",
    "missing_media": "a referenced image/video file does not exist",
    "dead_link": "an image URL could not be fetched",
    "hash_mismatch": "fetched bytes differ from the source's SHA-256",
    "undecodable_media": "fetched bytes are not a readable image",
    "placeholder_mismatch": "<image>/<video> placeholders do not match the media",
    "unknown_language": "the language is missing or not one of the 20",
    "language_not_selected": "a valid language outside the recipe's language set (filtered by design)",
    "not_english": "a non-English row of a source's share, dropped by `switches.english_only` (filtered by design)",
    "invalid_sample": "the converted row fails validate_sample",
    "empty_translation": "the translation model returned an empty text",
    "below_threshold": "the COMETKiwi score is under the filter threshold",
    "request_failed": "the chat endpoint failed for this request, after its retries",
    "cut_answer": 'the endpoint stopped the answer at its token limit (finish_reason "length"); dropped',
}
MAX_EXAMPLES = 5


class BuildReport:
    """Counts for one build; `to_dict()` is the JSON report and `format_table()` the printed one."""

    def __init__(self, name: str = "", **info):
        self.name, self.info = name, info
        self.kept: dict[str, Counter] = {}
        self.skipped: dict[str, Counter] = {}
        self.examples: dict[str, list] = {}

    def _source(self, source: str) -> None:
        self.kept.setdefault(source, Counter())
        self.skipped.setdefault(source, Counter())
        self.examples.setdefault(source, [])

    def restore(self, report: dict) -> "BuildReport":
        """Take the counts of `report` (a `to_dict()`), to go on counting where a stopped run left off."""
        for source, counts in report["sources"].items():
            self.kept[source] = Counter(counts["languages"])
            self.skipped[source] = Counter(counts["skipped"])
            self.examples[source] = list(counts["examples"])
        return self

    def add_source(self, source: str) -> None:
        self._source(source)

    def keep(self, source: str, language: str) -> None:
        self._source(source)
        self.kept[source][language] += 1

    def drop(self, source: str, language: str, reason: str) -> None:
        """Move one row of `source` counted as kept (in `language`) to the skipped rows, as `reason`."""
        self.kept[source][language] -= 1
        self.skip(source, reason, language)

    def skip(self, source: str, reason: str, detail: str = "", record: int | None = None) -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; known: {sorted(SKIP_REASONS)}")
        self._source(source)
        self.skipped[source][reason] += 1
        if len(self.examples[source]) < MAX_EXAMPLES:
            self.examples[source].append({"record": record, "reason": reason, "detail": detail[:300]})

    @property
    def total(self) -> int:
        return sum(sum(counter.values()) for counter in self.kept.values())

    def languages(self) -> Counter:
        return sum(self.kept.values(), Counter())

    def to_dict(self) -> dict:
        sources = {}
        for source in self.kept:
            kept, skipped = sum(self.kept[source].values()), sum(self.skipped[source].values())
            sources[source] = {
                "read": kept + skipped,
                "kept": kept,
                "skipped": dict(sorted(self.skipped[source].items())),
                "languages": dict(sorted(self.kept[source].items())),
                "examples": self.examples[source],
            }
        total = self.total
        languages = self.languages()
        return {
            "name": self.name,
            **self.info,
            "total": total,
            "sources": sources,
            "languages": {code: {"rows": n, "share": round(n / total, 6)} for code, n in sorted(languages.items())},
        }

    def save(self, path) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=2, ensure_ascii=False)
            handle.write("\n")

    def format_table(self) -> str:
        report = self.to_dict()
        total = max(report["total"], 1)
        width = max([len("source"), *map(len, report["sources"])])
        lines = [
            f"{self.name}: {report['total']} rows",
            f"{'source':<{width}}  {'read':>9}  {'kept':>9}  {'share':>6}  skipped",
        ]
        for source, counts in report["sources"].items():
            skipped = ", ".join(f"{reason}={n}" for reason, n in counts["skipped"].items()) or "-"
            share = counts["kept"] / total
            lines.append(f"{source:<{width}}  {counts['read']:>9}  {counts['kept']:>9}  {share:>6.1%}  {skipped}")
        lines.append("")
        lines.append(f"{'language':<8}  {'rows':>9}  {'share':>6}")
        for code, counts in report["languages"].items():
            lines.append(f"{code:<8}  {counts['rows']:>9}  {counts['share']:>6.1%}")
        return "\n".join(lines)
