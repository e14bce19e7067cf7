"""The sample schema, the language list and the caption prompts."""

import io

import pytest
from datasets import Dataset
from PIL import Image

from towervision_hf.data.languages import (
    CORE_LANGUAGES,
    LANGUAGE_CODES,
    LANGUAGES,
    language_name,
    normalize_language,
    resolve_language_set,
)
from towervision_hf.data.prompts import (
    ANSWER_FORMAT_PROMPTS,
    CAPTION_INTENTS,
    CAPTION_PROMPTS,
    OUR_CAPTION_LANGUAGES,
    PAPER_CAPTION_LANGUAGES,
)
from towervision_hf.data.schema import (
    image_block,
    load_image,
    make_sample,
    media,
    message,
    text_block,
    to_features,
    to_trl_example,
    validate_sample,
    video_block,
)


def png(colour=(255, 0, 0), size=(8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def valid_row(**changes):
    row = make_sample(
        "r1",
        "unit",
        "pt-BR",
        [
            message("system", "Be brief."),
            message("user", image_block(), "O que é isto?"),
            message("assistant", "Um quadrado."),
            message("user", video_block(), "E isto?"),
            message("assistant", "Um vídeo."),
        ],
        images=[media(bytes=png())],
        videos=[media(path="/videos/a.mp4")],
    )
    row.update(changes)
    return row


def test_valid_row_round_trips_through_the_arrow_features():
    row = valid_row()
    assert validate_sample(row) == []
    dataset = Dataset.from_list([row], features=to_features())
    assert dataset.features == to_features()
    assert dataset[0] == row


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"language": "pt"}, "language 'pt' is not a canonical code"),
        ({"id": ""}, "id '' is not a non-empty string"),
        ({"extra": 1}, "unexpected columns ['extra']"),
        ({"messages": []}, "messages is empty"),
        ({"images": []}, "1 image blocks but 0 images entries"),
        ({"videos": [media(path="/a.mp4"), media(path="/b.mp4")]}, "1 video blocks but 2 videos entries"),
        ({"images": [media()]}, "images[0] has none of bytes, path, url"),
        ({"images": [media(url="ftp://x/y.png")]}, "is not an http(s) URL"),
        ({"images": [{"bytes": None, "path": "a.png", "url": None, "sha": "x"}]}, "must be a dict with keys"),
    ],
)
def test_invalid_rows_are_described(change, expected):
    problems = validate_sample(valid_row(**change))
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    "messages, expected",
    [
        ([message("user", "hi"), message("user", "hi again"), message("assistant", "yo")], "alternating"),
        ([message("user", "hi")], "ending with assistant"),
        ([message("assistant", "hi"), message("user", "yo")], "alternating"),
        ([message("user", "see <image> here"), message("assistant", "ok")], "placeholder"),
        ([message("user", "hi"), message("assistant", image_block(), "ok")], "media go in user turns"),
        ([message("user", "   "), message("assistant", "ok")], "text block without text"),
        ([message("user", {"type": "audio", "text": None}), message("assistant", "ok")], "type 'audio'"),
        ([{"role": "user", "content": []}, message("assistant", "ok")], "has no content blocks"),
    ],
)
def test_invalid_conversations_are_described(messages, expected):
    row = make_sample("r", "unit", "en", messages)
    problems = validate_sample(row)
    assert any(expected in problem for problem in problems), problems


def test_media_resolve_to_rgb_pil_images_from_bytes_path_and_url(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(png((0, 255, 0)))

    class Fetcher:
        def fetch(self, url, sha256=None):
            assert url == "https://example.org/b.png"
            return png((0, 0, 255))

    row = make_sample(
        "r",
        "unit",
        "en",
        [message("user", image_block(), image_block(), image_block(), "Compare."), message("assistant", "Three.")],
        images=[media(bytes=png()), media(path=str(path)), media(url="https://example.org/b.png")],
    )
    example = to_trl_example(row, fetcher=Fetcher())
    assert [image.getpixel((0, 0)) for image in example["images"]] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    assert example["messages"] is row["messages"]
    grey = io.BytesIO()
    Image.new("L", (4, 4), 7).save(grey, format="PNG")
    assert load_image(media(bytes=grey.getvalue())).mode == "RGB"


def test_the_twenty_languages():
    # footnote 2 of the paper, in its order; Spanish is only Spanish (Latin America)
    assert LANGUAGE_CODES == (
        "en",
        "de",
        "nl",
        "es-LATAM",
        "fr",
        "pt-PT",
        "pt-BR",
        "uk",
        "hi",
        "zh-Hans",
        "zh-Hant",
        "ru",
        "cs",
        "ko",
        "ja",
        "it",
        "pl",
        "ro",
        "nn",
        "nb",
    )
    # Table 11's core languages: zh-Hant is one of them, Korean is not
    assert CORE_LANGUAGES == ("en", "de", "nl", "pt-PT", "ru", "zh-Hans", "zh-Hant", "es-LATAM", "fr", "it")
    # the 18 codes of the model cards, with pt and zh split into their variants
    assert {language.card_code for language in LANGUAGES.values()} == set(
        "en de nl es fr pt uk hi zh ru cs ko ja it pl ro nb nn".split()
    )
    assert language_name("pt-BR") == "Portuguese (Brazil)" and language_name("zh_TW") == "Chinese (Traditional)"


@pytest.mark.parametrize(
    "value, code",
    [
        ("pt_BR", "pt-BR"),
        ("PT", "pt-PT"),
        ("zh-CN", "zh-Hans"),
        ("zh-Hant-TW", "zh-Hant"),
        ("zh-TW", "zh-Hant"),
        ("no", "nb"),
        ("nno", "nn"),
        ("de-AT", "de"),
        ("es-419", "es-LATAM"),
        ("German", "de"),
        ("Norwegian Nynorsk", "nn"),
        ("es", "es-LATAM"),
        ("es_ES", "es-LATAM"),
        ("Spanish", "es-LATAM"),
        ("spa", "es-LATAM"),
    ],
)
def test_language_codes_are_normalised(value, code):
    assert normalize_language(value) == code


@pytest.mark.parametrize("value", ["xx", "ar", "", None, "iw"])
def test_unknown_languages_are_rejected_by_name(value):
    with pytest.raises(ValueError, match="language"):
        normalize_language(value)


def test_language_sets():
    assert resolve_language_set("core") == CORE_LANGUAGES
    assert resolve_language_set("de, pt_br,de") == ("de", "pt-BR")
    with pytest.raises(ValueError, match="'xx'"):
        resolve_language_set(["de", "xx"])


def test_caption_prompts_cover_every_language_with_seven_distinct_intents():
    assert set(CAPTION_PROMPTS) == set(LANGUAGE_CODES)
    for code, prompts in CAPTION_PROMPTS.items():
        assert len(prompts) == len(CAPTION_INTENTS) == 7, code
        assert len(set(prompts)) == 7, code
    # dialects are written separately, not copied
    for first, second in (("pt-PT", "pt-BR"), ("zh-Hans", "zh-Hant"), ("nb", "nn")):
        assert not set(CAPTION_PROMPTS[first]) & set(CAPTION_PROMPTS[second]), (first, second)


def test_prompts_are_the_papers_where_it_prints_them():
    # A.5.1 prints nine languages; the other eleven are ours
    assert set(PAPER_CAPTION_LANGUAGES) == {"en", "pt-PT", "fr", "nl", "de", "es-LATAM", "it", "ko", "zh-Hans"}
    assert set(OUR_CAPTION_LANGUAGES) == set(LANGUAGE_CODES) - set(PAPER_CAPTION_LANGUAGES)
    assert CAPTION_PROMPTS["en"][0] == "Describe this image." and CAPTION_PROMPTS["en"][4] == "Caption this image."
    assert CAPTION_PROMPTS["nl"][4] == "Onderschrift deze afbeelding."  # verbatim, as printed
    assert CAPTION_PROMPTS["zh-Hans"][-1] == "提供这张图片的描述。"
    # A.5.2: six families, 35 prompts, printed slips not reproduced
    assert {family: len(prompts) for family, prompts in ANSWER_FORMAT_PROMPTS.items()} == {
        "direct": 7,
        "caption_answer": 6,
        "final_answer": 7,
        "naive": 6,
        "formatted_pairs": 5,
        "markers": 4,
    }
    assert ANSWER_FORMAT_PROMPTS["final_answer"][0] == "End your response with 'Final Answer: <your answer>' ."
    assert ANSWER_FORMAT_PROMPTS["formatted_pairs"][3] == "# Image: <description>\n# Answer: <response>"
    assert ANSWER_FORMAT_PROMPTS["markers"][2].endswith("</ANSWER>")


def test_blocks_helpers():
    assert text_block("x") == {"type": "text", "text": "x"}
    assert message("user", image_block(), "x")["content"] == [
        {"type": "image", "text": None},
        {"type": "text", "text": "x"},
    ]
