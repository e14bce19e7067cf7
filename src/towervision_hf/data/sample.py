"""The embedded multilingual sample (`towervision_hf/sample/`): generated source -> local adapter -> schema rows.

`generate_sample_source(out)` draws deterministic images (one coloured shape on white, several aspect ratios) and
short videos (a shape crossing the frame, 8 frames of 64x64, H.264), writes rows about them in 12 languages in the
local JSONL format, and `load_sample(stage)` reads a stage back through the `local` source adapter, the same path
`towervision data build` uses. The package ships the output of
`towervision data sample --out src/towervision_hf/sample`.

  stage 1 (alignment): English captions, one per image
  stage 2 (vision):    captions and two-turn QA in 12 languages, multi-image comparisons, text-only translations
  stage 3 (video):     video captions and direction QA, half English and half in the other languages
"""

import io
import random
from pathlib import Path

import numpy as np
from datasets import Dataset
from PIL import Image, ImageDraw

from .jsonl import write_jsonl
from .languages import language_name
from .prompts import caption_prompt
from .report import BuildReport
from .schema import image_block, make_sample, media, message, to_features, video_block
from .sources import Local, iter_samples, sample_dir


SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (214, 39, 40), "green": (44, 160, 44), "blue": (31, 119, 180), "yellow": (240, 200, 20)}
IMAGE_SIZES = ((64, 64), (96, 64), (64, 96), (112, 56))
VIDEO_FRAMES, VIDEO_SIZE = 8, 64

# Per language: shapes as (indefinite, sentence-initial definite) noun phrases, colours in the form the `colour`
# sentence needs, and whole sentences, so that no grammar is assembled across languages.
LEXICON = {
    "en": {
        "shapes": {
            "circle": ("a circle", "The circle"),
            "square": ("a square", "The square"),
            "triangle": ("a triangle", "The triangle"),
        },
        "colours": {"red": "red", "green": "green", "blue": "blue", "yellow": "yellow"},
        "scene": "There is {indefinite} on a white background.",
        "colour": "{definite} is {colour}.",
        "ask_colour": "What colour is the shape?",
        "ask_shape": "Which shape is shown in the image?",
        "ask_same": "Do the shapes in these two images have the same colour?",
        "yes": "Yes.",
        "no": "No.",
        "left_to_right": "{definite} moves from left to right.",
        "right_to_left": "{definite} moves from right to left.",
        "ask_direction": "In which direction does the shape move?",
        "describe_video": "Describe what happens in this video.",
    },
    "de": {
        "shapes": {
            "circle": ("ein Kreis", "Der Kreis"),
            "square": ("ein Quadrat", "Das Quadrat"),
            "triangle": ("ein Dreieck", "Das Dreieck"),
        },
        "colours": {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb"},
        "scene": "Auf weißem Hintergrund ist {indefinite} zu sehen.",
        "colour": "{definite} ist {colour}.",
        "ask_colour": "Welche Farbe hat die Form?",
        "ask_shape": "Welche Form ist auf dem Bild zu sehen?",
        "ask_same": "Haben die Formen auf diesen beiden Bildern dieselbe Farbe?",
        "yes": "Ja.",
        "no": "Nein.",
        "left_to_right": "{definite} bewegt sich von links nach rechts.",
        "right_to_left": "{definite} bewegt sich von rechts nach links.",
        "ask_direction": "In welche Richtung bewegt sich die Form?",
        "describe_video": "Beschreibe, was in diesem Video passiert.",
    },
    "fr": {
        "shapes": {
            "circle": ("un cercle", "Le cercle"),
            "square": ("un carré", "Le carré"),
            "triangle": ("un triangle", "Le triangle"),
        },
        "colours": {"red": "rouge", "green": "vert", "blue": "bleu", "yellow": "jaune"},
        "scene": "Il y a {indefinite} sur un fond blanc.",
        "colour": "{definite} est {colour}.",
        "ask_colour": "De quelle couleur est la forme ?",
        "ask_shape": "Quelle forme voit-on sur l'image ?",
        "ask_same": "Les formes de ces deux images sont-elles de la même couleur ?",
        "yes": "Oui.",
        "no": "Non.",
        "left_to_right": "{definite} se déplace de gauche à droite.",
        "right_to_left": "{definite} se déplace de droite à gauche.",
        "ask_direction": "Dans quelle direction la forme se déplace-t-elle ?",
        "describe_video": "Décris ce qui se passe dans cette vidéo.",
    },
    "es-LATAM": {
        "shapes": {
            "circle": ("un círculo", "El círculo"),
            "square": ("un cuadrado", "El cuadrado"),
            "triangle": ("un triángulo", "El triángulo"),
        },
        "colours": {"red": "rojo", "green": "verde", "blue": "azul", "yellow": "amarillo"},
        "scene": "Hay {indefinite} sobre un fondo blanco.",
        "colour": "{definite} es {colour}.",
        "ask_colour": "¿De qué color es la figura?",
        "ask_shape": "¿Qué figura aparece en la imagen?",
        "ask_same": "¿Las figuras de estas dos imágenes son del mismo color?",
        "yes": "Sí.",
        "no": "No.",
        "left_to_right": "{definite} se mueve de izquierda a derecha.",
        "right_to_left": "{definite} se mueve de derecha a izquierda.",
        "ask_direction": "¿En qué dirección se mueve la figura?",
        "describe_video": "Describe lo que ocurre en este vídeo.",
    },
    "it": {
        "shapes": {
            "circle": ("un cerchio", "Il cerchio"),
            "square": ("un quadrato", "Il quadrato"),
            "triangle": ("un triangolo", "Il triangolo"),
        },
        "colours": {"red": "rosso", "green": "verde", "blue": "blu", "yellow": "giallo"},
        "scene": "Su uno sfondo bianco c'è {indefinite}.",
        "colour": "{definite} è {colour}.",
        "ask_colour": "Di che colore è la forma?",
        "ask_shape": "Quale forma compare nell'immagine?",
        "ask_same": "Le forme di queste due immagini sono dello stesso colore?",
        "yes": "Sì.",
        "no": "No.",
        "left_to_right": "{definite} si sposta da sinistra a destra.",
        "right_to_left": "{definite} si sposta da destra a sinistra.",
        "ask_direction": "In quale direzione si sposta la forma?",
        "describe_video": "Descrivi che cosa succede in questo video.",
    },
    "pt-PT": {
        "shapes": {
            "circle": ("um círculo", "O círculo"),
            "square": ("um quadrado", "O quadrado"),
            "triangle": ("um triângulo", "O triângulo"),
        },
        "colours": {"red": "vermelho", "green": "verde", "blue": "azul", "yellow": "amarelo"},
        "scene": "Há {indefinite} num fundo branco.",
        "colour": "{definite} é {colour}.",
        "ask_colour": "De que cor é a forma?",
        "ask_shape": "Que forma aparece na imagem?",
        "ask_same": "As formas destas duas imagens são da mesma cor?",
        "yes": "Sim.",
        "no": "Não.",
        "left_to_right": "{definite} desloca-se da esquerda para a direita.",
        "right_to_left": "{definite} desloca-se da direita para a esquerda.",
        "ask_direction": "Em que direção se desloca a forma?",
        "describe_video": "Descreve o que acontece neste vídeo.",
    },
    "pt-BR": {
        "shapes": {
            "circle": ("um círculo", "O círculo"),
            "square": ("um quadrado", "O quadrado"),
            "triangle": ("um triângulo", "O triângulo"),
        },
        "colours": {"red": "vermelho", "green": "verde", "blue": "azul", "yellow": "amarelo"},
        "scene": "Há {indefinite} em um fundo branco.",
        "colour": "{definite} é {colour}.",
        "ask_colour": "Qual é a cor da forma?",
        "ask_shape": "Qual forma aparece na imagem?",
        "ask_same": "As formas destas duas imagens têm a mesma cor?",
        "yes": "Sim.",
        "no": "Não.",
        "left_to_right": "{definite} se move da esquerda para a direita.",
        "right_to_left": "{definite} se move da direita para a esquerda.",
        "ask_direction": "Em que direção a forma se move?",
        "describe_video": "Descreva o que acontece neste vídeo.",
    },
    "nl": {
        "shapes": {
            "circle": ("een cirkel", "De cirkel"),
            "square": ("een vierkant", "Het vierkant"),
            "triangle": ("een driehoek", "De driehoek"),
        },
        "colours": {"red": "rood", "green": "groen", "blue": "blauw", "yellow": "geel"},
        "scene": "Op een witte achtergrond staat {indefinite}.",
        "colour": "{definite} is {colour}.",
        "ask_colour": "Welke kleur heeft de vorm?",
        "ask_shape": "Welke vorm is er op de afbeelding te zien?",
        "ask_same": "Hebben de vormen op deze twee afbeeldingen dezelfde kleur?",
        "yes": "Ja.",
        "no": "Nee.",
        "left_to_right": "{definite} beweegt van links naar rechts.",
        "right_to_left": "{definite} beweegt van rechts naar links.",
        "ask_direction": "In welke richting beweegt de vorm?",
        "describe_video": "Beschrijf wat er in deze video gebeurt.",
    },
    "ru": {
        "shapes": {
            "circle": ("круг", "Круг"),
            "square": ("квадрат", "Квадрат"),
            "triangle": ("треугольник", "Треугольник"),
        },
        "colours": {"red": "красного", "green": "зелёного", "blue": "синего", "yellow": "жёлтого"},
        "scene": "На белом фоне изображён {indefinite}.",
        "colour": "{definite} {colour} цвета.",
        "ask_colour": "Какого цвета фигура?",
        "ask_shape": "Какая фигура изображена на картинке?",
        "ask_same": "Фигуры на этих двух изображениях одного цвета?",
        "yes": "Да.",
        "no": "Нет.",
        "left_to_right": "{definite} движется слева направо.",
        "right_to_left": "{definite} движется справа налево.",
        "ask_direction": "В каком направлении движется фигура?",
        "describe_video": "Опиши, что происходит на этом видео.",
    },
    "zh-Hans": {
        "shapes": {
            "circle": ("一个圆形", "这个圆形"),
            "square": ("一个正方形", "这个正方形"),
            "triangle": ("一个三角形", "这个三角形"),
        },
        "colours": {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色"},
        "scene": "白色背景上有{indefinite}。",
        "colour": "{definite}是{colour}的。",
        "ask_colour": "这个图形是什么颜色的？",
        "ask_shape": "图片中是什么图形？",
        "ask_same": "这两张图片中的图形颜色相同吗？",
        "yes": "相同。",
        "no": "不相同。",
        "left_to_right": "{definite}从左向右移动。",
        "right_to_left": "{definite}从右向左移动。",
        "ask_direction": "这个图形朝哪个方向移动？",
        "describe_video": "请描述这段视频中发生了什么。",
    },
    "ja": {
        "shapes": {"circle": ("円", "円"), "square": ("正方形", "正方形"), "triangle": ("三角形", "三角形")},
        "colours": {"red": "赤", "green": "緑", "blue": "青", "yellow": "黄色"},
        "scene": "白い背景に{indefinite}が描かれています。",
        "colour": "{definite}の色は{colour}です。",
        "ask_colour": "この図形は何色ですか？",
        "ask_shape": "画像に描かれているのはどんな図形ですか？",
        "ask_same": "この2枚の画像の図形は同じ色ですか？",
        "yes": "はい、同じ色です。",
        "no": "いいえ、違う色です。",
        "left_to_right": "{definite}が左から右へ移動します。",
        "right_to_left": "{definite}が右から左へ移動します。",
        "ask_direction": "図形はどの方向に移動していますか？",
        "describe_video": "この動画で何が起きているか説明してください。",
    },
    "ko": {
        "shapes": {"circle": ("원", "원"), "square": ("정사각형", "정사각형"), "triangle": ("삼각형", "삼각형")},
        "colours": {"red": "빨간색", "green": "초록색", "blue": "파란색", "yellow": "노란색"},
        "scene": "흰색 배경에 {indefinite}이 있습니다.",
        "colour": "{definite}의 색은 {colour}입니다.",
        "ask_colour": "이 도형은 무슨 색인가요?",
        "ask_shape": "이미지에 있는 도형은 무엇인가요?",
        "ask_same": "이 두 이미지의 도형은 같은 색인가요?",
        "yes": "네, 같은 색입니다.",
        "no": "아니요, 다른 색입니다.",
        "left_to_right": "{definite}이 왼쪽에서 오른쪽으로 움직입니다.",
        "right_to_left": "{definite}이 오른쪽에서 왼쪽으로 움직입니다.",
        "ask_direction": "도형은 어느 방향으로 움직이나요?",
        "describe_video": "이 동영상에서 무슨 일이 일어나는지 설명해 주세요.",
    },
}
SAMPLE_LANGUAGES = tuple(LEXICON)


def _sentences(language: str, shape: str, colour: str) -> tuple[str, str]:
    """(scene sentence, colour sentence) describing a `colour` `shape` in `language`."""
    words = LEXICON[language]
    indefinite, definite = words["shapes"][shape]
    return (
        words["scene"].format(indefinite=indefinite),
        words["colour"].format(definite=definite, colour=words["colours"][colour]),
    )


def _join(language: str, *sentences: str) -> str:
    return ("" if language in ("zh-Hans", "ja") else " ").join(sentences)


def draw_shape(
    shape: str,
    colour: str,
    size: tuple[int, int],
    center: tuple[float, float] | None = None,
    radius: float | None = None,
) -> Image.Image:
    """One filled `shape` in `colour` on white, centred unless `center` is given."""
    width, height = size
    image = Image.new("RGB", size, (255, 255, 255))
    cx, cy = center or (width / 2, height / 2)
    r = radius or min(width, height) * 0.35
    draw, fill = ImageDraw.Draw(image), COLOURS[colour]
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def moving_shape_video(
    shape: str, colour: str, left_to_right: bool, frames: int = VIDEO_FRAMES, size: int = VIDEO_SIZE
) -> bytes:
    """An H.264 MP4 (4 fps) of `shape` crossing a white frame horizontally."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=4, options={"threads": "1", "preset": "medium", "crf": "28"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        radius = size * 0.15
        for index in range(frames):
            fraction = index / (frames - 1)
            x = radius + (size - 2 * radius) * (fraction if left_to_right else 1 - fraction)
            frame = draw_shape(shape, colour, (size, size), center=(x, size / 2), radius=radius)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def _stage1(images) -> list[dict]:
    rows = []
    for index, (shape, colour, path) in enumerate(images):
        prompt = caption_prompt("en", random.Random(f"sample:1:{index}"))
        caption = _join("en", *_sentences("en", shape, colour))
        rows.append(
            make_sample(
                f"s1-{index:03d}",
                "sample_captions",
                "en",
                [message("user", image_block(), prompt), message("assistant", caption)],
                images=[media(path=path)],
            )
        )
    return rows


def _stage2(images) -> list[dict]:
    rows = []
    for index, language in enumerate(SAMPLE_LANGUAGES):
        words = LEXICON[language]
        shape, colour, path = images[index % len(images)]
        scene, colour_sentence = _sentences(language, shape, colour)
        prompt = caption_prompt(language, random.Random(f"sample:2:{index}"))
        rows.append(
            make_sample(
                f"s2-caption-{index:03d}",
                "sample_captions",
                language,
                [
                    message("user", image_block(), prompt),
                    message("assistant", _join(language, scene, colour_sentence)),
                ],
                images=[media(path=path)],
            )
        )
        shape, colour, path = images[(index * 5 + 3) % len(images)]
        scene, colour_sentence = _sentences(language, shape, colour)
        rows.append(
            make_sample(
                f"s2-qa-{index:03d}",
                "sample_qa",
                language,
                [
                    message("user", image_block(), words["ask_colour"]),
                    message("assistant", colour_sentence),
                    message("user", words["ask_shape"]),
                    message("assistant", scene),
                ],
                images=[media(path=path)],
            )
        )
    for index, language in enumerate(SAMPLE_LANGUAGES[::3]):
        words = LEXICON[language]
        # circle vs square: of the same colour for even rows, of the next colour for odd rows
        first = images[len(SHAPES) * index]
        second = images[(len(SHAPES) * (index + index % 2) + 1) % len(images)]
        answer = words["yes"] if first[1] == second[1] else words["no"]
        rows.append(
            make_sample(
                f"s2-multi-{index:03d}",
                "sample_multi_image",
                language,
                [message("user", image_block(), image_block(), words["ask_same"]), message("assistant", answer)],
                images=[media(path=first[2]), media(path=second[2])],
            )
        )
    for index, language in enumerate(SAMPLE_LANGUAGES[1::3]):
        shape, colour, _ = images[index + 2]
        english, target = _sentences("en", shape, colour)[1], _sentences(language, shape, colour)[1]
        instruction = f"Translate the following English text into {language_name(language)}:\n{english}"
        rows.append(
            make_sample(
                f"s2-text-{index:03d}",
                "sample_text",
                language,
                [message("user", instruction), message("assistant", target)],
            )
        )
    return rows


def _stage3(videos) -> list[dict]:
    rows, others = [], SAMPLE_LANGUAGES[1:]
    for index, (shape, colour, left_to_right, path) in enumerate(videos):
        for half in range(2):
            language = "en" if half == 0 else others[index % len(others)]
            words = LEXICON[language]
            definite = words["shapes"][shape][1]
            movement = words["left_to_right" if left_to_right else "right_to_left"].format(definite=definite)
            if (index + half) % 2 == 0:
                turns = [
                    message("user", video_block(), words["describe_video"]),
                    message("assistant", _join(language, movement, _sentences(language, shape, colour)[1])),
                ]
            else:
                turns = [message("user", video_block(), words["ask_direction"]), message("assistant", movement)]
            rows.append(
                make_sample(f"s3-{index:03d}-{language}", "sample_video", language, turns, videos=[media(path=path)])
            )
    return rows


def generate_sample_source(out) -> dict[int, int]:
    """Write the sample source under `out`: media/ (named after what they show), stage1/ stage2/ stage3/ data.jsonl
    referring to them. Returns the number of rows per stage."""
    out = Path(out)
    (out / "media").mkdir(parents=True, exist_ok=True)
    images = []
    for index, (shape, colour) in enumerate((shape, colour) for colour in COLOURS for shape in SHAPES):
        size = IMAGE_SIZES[index % len(IMAGE_SIZES)]
        path = out / "media" / f"{colour}-{shape}-{size[0]}x{size[1]}.png"
        path.write_bytes(png_bytes(draw_shape(shape, colour, size)))
        images.append((shape, colour, str(path)))
    videos = []
    for index, colour in enumerate(list(COLOURS) * 2):
        shape, left_to_right = SHAPES[index % len(SHAPES)], index % 2 == 0
        path = out / "media" / f"{colour}-{shape}-{'left-to-right' if left_to_right else 'right-to-left'}.mp4"
        path.write_bytes(moving_shape_video(shape, colour, left_to_right))
        videos.append((shape, colour, left_to_right, str(path)))
    stages = {1: _stage1(images), 2: _stage2(images), 3: _stage3(videos)}
    return {stage: write_jsonl(rows, out / f"stage{stage}", media_dir=out / "media") for stage, rows in stages.items()}


def load_sample(stage: int, root=None, report: BuildReport | None = None):
    """Stage 1, 2 or 3 of the embedded sample (or of a sample generated under `root`) as a `datasets.Dataset`
    in the schema, read through the `local` adapter with media embedded as bytes."""
    if stage not in (1, 2, 3):
        raise ValueError(f"sample stage {stage!r} is not 1, 2 or 3")
    root = Path(root) if root is not None else sample_dir()
    report = report if report is not None else BuildReport(f"sample/stage{stage}")
    adapter = Local(f"sample_stage{stage}", path=root / f"stage{stage}")
    rows = list(iter_samples(adapter, report, embed_local=True))
    return Dataset.from_list(rows, features=to_features())
