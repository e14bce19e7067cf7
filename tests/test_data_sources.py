"""Every source adapter on local fixtures shaped like the source's real schema (no network)."""

import hashlib
import io
import json
import urllib.error

import pytest
from datasets import Dataset, Features, List, Value
from datasets import Image as ImageFeature
from PIL import Image

from towervision_hf.data.fetch import UrlFetcher
from towervision_hf.data.report import BuildReport
from towervision_hf.data.schema import to_features, validate_sample
from towervision_hf.data.sources import SchemaError, iter_samples, make_adapter


def png(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 9), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def url_fetcher(tmp_path, pages: dict[str, bytes]) -> UrlFetcher:
    def opener(url, timeout):
        if url not in pages:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        return pages[url]

    return UrlFetcher(tmp_path / "cache", opener=opener, sleep=lambda seconds: None)


def run(adapter_name, tmp_path, languages=None, fetcher=None, **params):
    report = BuildReport("test")
    rows = list(
        iter_samples(
            make_adapter(adapter_name, "src", **params), report, languages=languages, fetcher=fetcher, workers=2
        )
    )
    for row in rows:
        assert validate_sample(row) == [], row
        assert row["source"] == "src"
    counts = report.to_dict()["sources"]["src"]
    assert counts["read"] == counts["kept"] + sum(counts["skipped"].values())
    Dataset.from_list(rows, features=to_features())  # every row fits the Arrow schema
    return rows, counts


def write_parquet(path, records, features=None):
    Dataset.from_list(records, features=features).to_parquet(str(path))
    return str(path)


def user_texts(row):
    return [
        block["text"]
        for turn in row["messages"]
        if turn["role"] == "user"
        for block in turn["content"]
        if block["type"] == "text"
    ]


def test_pixmo_cap_fetches_urls_and_counts_dead_links(tmp_path):
    path = write_parquet(
        tmp_path / "pixmo-cap.parquet",
        [
            {"image_url": "https://img.example/1.jpg", "caption": "A red square.", "transcripts": ["red square"]},
            {"image_url": "https://img.example/dead.jpg", "caption": "Gone.", "transcripts": []},
            {"image_url": "https://img.example/2.jpg", "caption": "  ", "transcripts": []},
            {"image_url": "https://img.example/3.jpg", "caption": "Not an image.", "transcripts": []},
        ],
    )
    fetcher = url_fetcher(tmp_path, {"https://img.example/1.jpg": png(), "https://img.example/3.jpg": b"<html>"})
    rows, counts = run("pixmo_cap", tmp_path, fetcher=fetcher, path=path)
    assert counts["kept"] == 1
    assert counts["skipped"] == {"dead_link": 1, "empty_conversation": 1, "undecodable_media": 1}
    row = rows[0]
    assert row["images"][0]["bytes"] == png() and row["images"][0]["url"] == "https://img.example/1.jpg"
    assert row["messages"][1]["content"] == [{"type": "text", "text": "A red square."}]
    assert row["messages"][0]["content"][0]["type"] == "image" and row["language"] == "en"

    # without a fetcher, URLs stay in the rows
    rows, counts = run("pixmo_cap", tmp_path, path=path)
    assert counts["kept"] == 3 and rows[0]["images"][0] == {
        "bytes": None,
        "path": None,
        "url": "https://img.example/1.jpg",
    }


def test_pixmo_cap_mirror_with_embedded_images(tmp_path):
    features = Features(
        {
            "image": ImageFeature(),
            "image_url": Value("string"),
            "caption": Value("string"),
            "transcripts": List(Value("string")),
        }
    )
    path = write_parquet(
        tmp_path / "mirror.parquet",
        [
            {
                "image": {"bytes": png(), "path": None},
                "image_url": "https://x/1",
                "caption": "Red.",
                "transcripts": [],
            },
        ],
        features,
    )
    rows, counts = run("pixmo_cap", tmp_path, path=path)
    assert counts["kept"] == 1 and rows[0]["images"][0]["bytes"] == png()


def test_pixmo_cap_schema_mismatch_names_expected_and_found_columns(tmp_path):
    path = write_parquet(tmp_path / "wrong.parquet", [{"url": "https://x/1", "text": "hi"}])
    expected = r"expected columns \[caption, image or image_url\], found \['text', 'url'\]"
    with pytest.raises(SchemaError, match=expected):
        run("pixmo_cap", tmp_path, path=path)


def test_pixmo_qa_checks_hashes_and_splits_dialogue_markers(tmp_path):
    good, bad = png(), png((0, 0, 0))
    path = write_parquet(
        tmp_path / "ask.parquet",
        [
            {
                "image_url": "https://img/1",
                "image_sha256": hashlib.sha256(good).hexdigest(),
                "question": "What is it?",
                "answer": "A square.",
            },
            {
                "image_url": "https://img/2",
                "image_sha256": hashlib.sha256(good).hexdigest(),
                "question": "And this?",
                "answer": "Black.",
            },
            {
                "image_url": "https://img/1",
                "image_sha256": None,
                "question": "[USER] Describe it. [ASSISTANT] A red square. [USER] What colour?",
                "answer": "Red.",
            },
        ],
    )
    fetcher = url_fetcher(tmp_path, {"https://img/1": good, "https://img/2": bad})
    rows, counts = run("pixmo_qa", tmp_path, fetcher=fetcher, path=path)
    assert counts["skipped"] == {"hash_mismatch": 1}
    assert [turn["role"] for turn in rows[1]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert user_texts(rows[1]) == ["Describe it.", "What colour?"]
    assert rows[1]["messages"][0]["content"][0]["type"] == "image"


def test_pixmo_docs_turns_all_pairs_into_one_conversation(tmp_path):
    features = Features(
        {
            "image": ImageFeature(),
            "image_id": Value("string"),
            "questions": {"question": List(Value("string")), "answer": List(Value("string"))},
        }
    )
    path = write_parquet(
        tmp_path / "charts.parquet",
        [
            {
                "image": {"bytes": png(), "path": None},
                "image_id": "chart-1",
                "questions": {"question": ["Max?", "Min?"], "answer": ["7", "1"]},
            },
            {
                "image": {"bytes": png(), "path": None},
                "image_id": "chart-2",
                "questions": {"question": [], "answer": []},
            },
        ],
        features,
    )
    rows, counts = run("pixmo_docs", tmp_path, path=path)
    assert counts["skipped"] == {"empty_conversation": 1}
    assert rows[0]["id"] == "chart-1" and len(rows[0]["messages"]) == 4 and user_texts(rows[0]) == ["Max?", "Min?"]


def test_vqa_takes_the_most_frequent_answer(tmp_path):
    features = Features(
        {
            "image": ImageFeature(),
            "question": Value("string"),
            "question_id": Value("int64"),
            "answers": List({"answer": Value("string"), "answer_confidence": Value("string")}),
        }
    )
    path = write_parquet(
        tmp_path / "vqa.parquet",
        [
            {
                "image": {"bytes": png(), "path": None},
                "question": "Colour?",
                "question_id": 11,
                "answers": [
                    {"answer": "red", "answer_confidence": "yes"},
                    {"answer": "red", "answer_confidence": "yes"},
                    {"answer": "pink", "answer_confidence": "maybe"},
                ],
            },
        ],
        features,
    )
    rows, _ = run("vqa", tmp_path, path=path, answer_column="answers")
    assert rows[0]["id"] == "11" and rows[0]["messages"][1]["content"][0]["text"] == "red"


@pytest.fixture
def llava_tree(tmp_path):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jpg").write_bytes(png())
    (root / "b.jpg").write_bytes(png((0, 90, 0)))
    records = [
        {
            "id": "ok",
            "image": "sub/a.jpg",
            "language": "de",
            "conversations": [
                {"from": "human", "value": "<image>\nWas ist das?"},
                {"from": "gpt", "value": "Ein Quadrat."},
            ],
        },
        {
            "id": "no-placeholder",
            "image": "b.jpg",
            "language": "ko",
            "conversations": [{"from": "human", "value": "무엇인가요?"}, {"from": "gpt", "value": "사각형"}],
        },
        {
            "id": "two-images",
            "image": ["sub/a.jpg", "b.jpg"],
            "language": "zh",
            "conversations": [
                {"from": "human", "value": "<image> 和 <image> 一样吗？"},
                {"from": "gpt", "value": "不一样。"},
            ],
        },
        {
            "id": "text-only",
            "language": "pt_BR",
            "conversations": [{"from": "human", "value": "Olá"}, {"from": "gpt", "value": "Oi!"}],
        },
        {
            "id": "missing-file",
            "image": "nope.jpg",
            "language": "de",
            "conversations": [{"from": "human", "value": "<image>\nUnd das?"}, {"from": "gpt", "value": "Nichts."}],
        },
        {
            "id": "mismatch",
            "image": "b.jpg",
            "language": "de",
            "conversations": [{"from": "human", "value": "<image><image> zwei?"}, {"from": "gpt", "value": "Eins."}],
        },
        {
            "id": "bad-language",
            "image": "b.jpg",
            "language": "xx",
            "conversations": [{"from": "human", "value": "<image>?"}, {"from": "gpt", "value": "!"}],
        },
        {"id": "empty", "image": "b.jpg", "language": "de", "conversations": [{"from": "human", "value": "<image>"}]},
        {"id": "broken", "image": "b.jpg", "language": "de", "conversations": "not a list"},
        {
            "id": "out-of-set",
            "image": "b.jpg",
            "language": "nn",
            "conversations": [{"from": "human", "value": "<image>Kva?"}, {"from": "gpt", "value": "Ein firkant."}],
        },
    ]
    path = tmp_path / "cultural.json"
    path.write_text(json.dumps(records, ensure_ascii=False))
    return path, root


def test_llava_json_with_image_root(tmp_path, llava_tree):
    path, root = llava_tree
    languages = {"de", "ko", "zh-Hans", "pt-BR"}
    rows, counts = run("llava", tmp_path, languages=languages, path=str(path), image_root=str(root))
    assert [row["id"] for row in rows] == ["ok", "no-placeholder", "two-images", "text-only"]
    assert counts["skipped"] == {
        "missing_media": 1,
        "placeholder_mismatch": 1,
        "unknown_language": 1,
        "empty_conversation": 1,
        "malformed": 1,
        "language_not_selected": 1,
    }
    by_id = {row["id"]: row for row in rows}
    assert by_id["ok"]["images"][0]["path"] == str(root / "sub" / "a.jpg")
    assert by_id["no-placeholder"]["messages"][0]["content"][0]["type"] == "image"  # media open the first user turn
    two = by_id["two-images"]["messages"][0]["content"]
    assert [block["type"] for block in two] == ["image", "text", "image", "text"] and two[1]["text"] == "和"
    assert by_id["two-images"]["language"] == "zh-Hans" and by_id["text-only"]["images"] == []


def test_llava_language_map_and_embedding(tmp_path, llava_tree):
    path, root = llava_tree
    report = BuildReport()
    adapter = make_adapter("llava", "src", path=str(path), image_root=str(root), language_map={"zh": "zh-Hant"})
    rows = list(iter_samples(adapter, report, embed_local=True))
    by_id = {row["id"]: row for row in rows}
    assert by_id["two-images"]["language"] == "zh-Hant"
    assert by_id["ok"]["images"][0]["bytes"] == png()


def test_cultural_ground_card_layout_and_llava_layout(tmp_path, llava_tree):
    conversation = [{"from": "human", "value": "<image>\nWhich festival is this?"}, {"from": "gpt", "value": "Holi."}]
    features = Features(
        {"id": Value("string"), "image": ImageFeature(), "text": Value("string"), "language": Value("string")}
    )
    path = write_parquet(
        tmp_path / "cg.parquet",
        [
            {
                "id": "cg-1",
                "image": {"bytes": png(), "path": None},
                "text": json.dumps(conversation),
                "language": "hi",
            },
            {"id": "cg-2", "image": {"bytes": png(), "path": None}, "text": "Q: what? A: that", "language": "hi"},
        ],
        features,
    )
    rows, counts = run("cultural_ground", tmp_path, path=path, kind="mcq")
    assert counts["skipped"] == {"malformed": 1} and rows[0]["language"] == "hi"
    assert rows[0]["images"][0]["bytes"] == png()

    json_path, root = llava_tree
    rows, counts = run("cultural_ground", tmp_path, path=str(json_path), image_root=str(root))
    assert counts["kept"] == 5


def test_chat_text_only(tmp_path):
    path = write_parquet(
        tmp_path / "euroblocks.parquet",
        [
            {
                "conversations": [
                    {"role": "system", "content": "Sê breve."},
                    {"role": "user", "content": "Olá"},
                    {"role": "assistant", "content": "Olá!"},
                ],
                "language": "pt-PT",
            },
            {"conversations": [{"role": "user", "content": "Hi"}], "language": "en"},
        ],
    )
    rows, counts = run("chat", tmp_path, path=path)
    assert counts["skipped"] == {"empty_conversation": 1}
    assert [turn["role"] for turn in rows[0]["messages"]] == ["system", "user", "assistant"]
    assert rows[0]["images"] == rows[0]["videos"] == []


def test_a_folder_written_by_our_tools_opens_without_its_report(tmp_path):
    from towervision_hf.data.sources import open_table

    rows = [
        {
            "conversations": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": "Olá!"}],
            "language": "pt-PT",
        }
        for i in range(3)
    ]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "report.json").write_text(json.dumps({"total": 3, "sources": {}}))
    assert list(open_table(str(tmp_path))) == rows


def test_llava_video_normalises_both_placeholders(tmp_path):
    videos = tmp_path / "videos" / "academic_source" / "Charades"
    videos.mkdir(parents=True)
    (videos / "RW587.mp4").write_bytes(b"mp4")
    records = [
        {
            "id": "v1",
            "data_source": "0_30_s_academic_v0_1",
            "video": "academic_source/Charades/RW587.mp4",
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe the video."},
                {"from": "gpt", "value": "A man walks."},
            ],
        },
        {
            "id": "v2",
            "data_source": "0_30_s_academic_v0_1",
            "video": "academic_source/Charades/RW587.mp4",
            "conversations": [
                {"from": "human", "value": "<video>\nWhat happens?"},
                {"from": "gpt", "value": "He sits."},
                {"from": "human", "value": "Then?"},
                {"from": "gpt", "value": "He stands."},
            ],
        },
        {
            "id": "v3",
            "data_source": "0_30_s_academic_v0_1",
            "video": "academic_source/Charades/missing.mp4",
            "conversations": [{"from": "human", "value": "<video>\n?"}, {"from": "gpt", "value": "!"}],
        },
    ]
    folder = tmp_path / "0_30_s_academic_v0_1"
    folder.mkdir()
    (folder / "0_30_s_academic_oe_v0_1_qa_processed.json").write_text(json.dumps(records))
    (folder / "0_30_s_academic_v0_1_cap_processed.json").write_text(json.dumps(records[:1]))
    rows, counts = run(
        "llava_video",
        tmp_path,
        path=str(tmp_path / "0_30_s_academic_v0_1"),
        pattern="*_oe_*.json",
        video_root=str(tmp_path / "videos"),
        task="open_ended",
    )
    assert [row["id"] for row in rows] == ["v1", "v2"] and counts["skipped"] == {"missing_media": 1}
    assert rows[0]["messages"][0]["content"][0] == {"type": "video", "text": None}
    assert rows[1]["videos"][0]["path"].endswith("RW587.mp4") and len(rows[1]["messages"]) == 4


def test_visionblocks_passthrough_and_unconfirmed_schema_message(tmp_path):
    from towervision_hf.data.sample import load_sample

    sample = load_sample(2)
    path = tmp_path / "vb.parquet"
    sample.select(range(4)).to_parquet(str(path))
    rows, counts = run("visionblocks", tmp_path, path=str(path))
    assert counts["kept"] == 4 and rows[0]["messages"] == sample[0]["messages"]

    wrong = write_parquet(tmp_path / "other.parquet", [{"question": "q", "answer": "a", "img": "x"}])
    with pytest.raises(SchemaError, match=r"expected columns \[messages or conversations, language\], found"):
        run("visionblocks", tmp_path, path=wrong)


def test_local_jsonl_counts_malformed_lines_and_drops_bookkeeping(tmp_path):
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.png").write_bytes(png())
    good = {
        "id": "1",
        "source": "x",
        "language": "pt_PT",
        "translation": {"model": "m"},
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Isto?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Um quadrado."}]},
        ],
        "images": [{"path": "media/a.png"}],
        "videos": [],
    }
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "id": "2", "messages": []}),
        "[1, 2]",
        json.dumps({**good, "id": "3", "language": "klingon"}),
    ]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    rows, counts = run("local", tmp_path, path=str(tmp_path))
    assert counts["skipped"] == {"malformed": 2, "empty_conversation": 1, "unknown_language": 1}
    assert rows[0]["language"] == "pt-PT" and "translation" not in rows[0]
    assert rows[0]["images"][0]["path"] == str((tmp_path / "media" / "a.png").resolve())


def test_unknown_adapter_and_params_are_rejected():
    with pytest.raises(ValueError, match="unknown adapter 'pixmo'"):
        make_adapter("pixmo", "src")
    with pytest.raises(ValueError, match=r"adapter 'llava' has no params \['root'\]"):
        make_adapter("llava", "src", path="x.json", root="y")
