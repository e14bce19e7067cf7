"""The one dataset loader of training and evaluation: Hub-layout folders, `save_to_disk` folders (DatasetDict and
Dataset) and single files give the same splits and rows."""

from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict
from PIL import Image

from towervision_hf.data.jsonl import write_jsonl
from towervision_hf.data.loading import load_split, load_splits
from towervision_hf.data.schema import image_block, make_sample, media, message


def split(language: str, rows: int) -> Dataset:
    return Dataset.from_list([{"source": f"{language} {i}", "target": f"t{i}"} for i in range(rows)])


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """The same three splits as a Hub-layout parquet folder and a `save_to_disk` folder, one split as files."""
    root = tmp_path_factory.mktemp("loading")
    splits = DatasetDict({"de": split("de", 3), "fr": split("fr", 2), "ru": split("ru", 1)})
    for name, dataset in splits.items():
        dataset.to_parquet(str(root / "hub" / "data" / f"{name}-00000-of-00001.parquet"))
    splits.save_to_disk(str(root / "saved_dict"))
    splits["de"].save_to_disk(str(root / "saved_dataset"))
    splits["de"].to_json(str(root / "de.jsonl"))
    splits["de"].to_parquet(str(root / "de.parquet"))
    (root / "de.txt").write_text("not a table")
    return root, splits


@pytest.mark.parametrize("copy, kind", [("hub", "directory"), ("saved_dict", "save_to_disk")])
def test_folders_keep_their_splits(copies, copy, kind):
    root, splits = copies
    loaded, provenance = load_splits(str(root / copy))
    assert provenance["kind"] == kind and provenance["rows"] == {"de": 3, "fr": 2, "ru": 1}
    assert all(loaded[name].to_list() == splits[name].to_list() for name in splits)
    assert load_split(str(root / copy), "fr").to_list() == splits["fr"].to_list()
    with pytest.raises(ValueError, match="has no split 'zh'"):
        load_split(str(root / copy), "zh")


@pytest.mark.parametrize(
    "copy, kind", [("saved_dataset", "save_to_disk"), ("de.jsonl", "file"), ("de.parquet", "file")]
)
def test_a_single_dataset_or_file_is_the_split_asked_for(copies, copy, kind):
    root, splits = copies
    loaded, provenance = load_splits(str(root / copy), single_split="test")
    assert provenance["kind"] == kind and list(loaded) == ["test"]
    assert loaded["test"].to_list() == splits["de"].to_list()
    assert load_split(str(root / copy), "train").to_list() == splits["de"].to_list()


def test_unsupported_files_are_named(copies):
    root, _ = copies
    with pytest.raises(ValueError, match=r"de.txt': unsupported file type '.txt'"):
        load_splits(str(root / "de.txt"))


def test_data_build_sources_read_save_to_disk_copies_through_the_same_loader(copies):
    from towervision_hf.data.sources import open_table

    root, splits = copies
    assert open_table(str(root / "saved_dict"), split="fr").to_list() == splits["fr"].to_list()
    assert open_table(str(root / "saved_dataset")).to_list() == splits["de"].to_list()


def schema_rows(media_dir):
    """Two sample-schema rows whose image is a file under `media_dir`, and one whose image is a URL."""
    media_dir.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "red").save(media_dir / "red.png")
    messages = [message("user", image_block(), "Colour?"), message("assistant", "Red.")]
    images = [[media(path=str(media_dir / "red.png"))]] * 2 + [[media(url="https://example.org/red.png")]]
    return [make_sample(f"row-{index}", "toy", "en", messages, images[index]) for index in range(3)]


def test_jsonl_media_paths_resolve_against_the_file_folder_from_any_working_folder(tmp_path, monkeypatch):
    media_dir = tmp_path / "data" / "media"
    write_jsonl(schema_rows(media_dir), tmp_path / "data" / "stage", media_dir=media_dir)
    assert '"path": "../media/red.png"' in (tmp_path / "data" / "stage" / "data.jsonl").read_text()  # as written
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for data in ("../data/stage/data.jsonl", "../data/stage"):
        rows = load_split(data, "train").to_list()
        assert [row["images"][0]["path"] for row in rows[:2]] == [str(media_dir / "red.png")] * 2
        assert rows[2]["images"][0] == {"bytes": None, "path": None, "url": "https://example.org/red.png"}


def test_a_folder_written_by_our_tools_is_read_without_its_report(tmp_path):
    out = tmp_path / "translated"
    write_jsonl(schema_rows(tmp_path / "media"), out, bring_media=True)
    write_jsonl(schema_rows(tmp_path / "media")[:1], out, filename="rejected.jsonl", bring_media=True)
    (out / "report.json").write_text('{"total": 3, "sources": {}}')
    splits, provenance = load_splits(str(out))
    assert provenance["kind"] == "jsonl" and provenance["rows"] == {"train": 3}
    assert [row["id"] for row in splits["train"]] == ["row-0", "row-1", "row-2"]
    assert all(Path(row["images"][0]["path"]).is_file() for row in splits["train"].to_list()[:2])
