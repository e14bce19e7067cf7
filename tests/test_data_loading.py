"""The one dataset loader of training and evaluation: Hub-layout folders, `save_to_disk` folders (DatasetDict and
Dataset) and single files give the same splits and rows."""

import pytest
from datasets import Dataset, DatasetDict

from towervision_hf.data.loading import load_split, load_splits


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
