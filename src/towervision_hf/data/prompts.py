"""The prompts of TowerVision's appendix A.5: caption templates per language (A.5.1) and the Gemini 2.5 system prompts
that set the answer format of the synthetic data (A.5.2).

A.5.1 prints seven caption templates for English, European Portuguese, French, Dutch, German, Spanish, Italian,
Korean and Chinese; they are copied verbatim (`PAPER_CAPTION_LANGUAGES`; the paper's "Spanish" is es-LATAM here, its
"Chinese" zh-Hans). The other eleven languages have our translations of the English templates, marked as ours
(`OUR_CAPTION_LANGUAGES`). Every language has the same seven intents, in the paper's order (`CAPTION_INTENTS`).
A caption row pairs one of them, drawn with a seeded RNG, with a caption in the same language.
"""

import random

from .languages import normalize_language


CAPTION_INTENTS = ("describe", "what_can_you_see", "tell_me", "explain", "caption", "happening", "description")

# verbatim from the paper's A.5.1 (EN_PROMPTS, PT_PROMPTS, FR_PROMPTS, NL_PROMPTS, DE_PROMPTS, ES_PROMPTS,
# IT_PROMPTS, KO_PROMPTS, ZH_PROMPTS)
_PAPER_CAPTION_PROMPTS: dict[str, tuple[str, ...]] = {
    "en": (
        "Describe this image.",
        "What can you see in this picture?",
        "Tell me what's in this image.",
        "Explain what this image shows.",
        "Caption this image.",
        "What's happening in this picture?",
        "Provide a description of this image.",
    ),
    "pt-PT": (
        "Descreva esta imagem.",
        "O que consegue ver nesta fotografia?",
        "Diga-me o que está nesta imagem.",
        "Explique o que esta imagem mostra.",
        "Legende esta imagem.",
        "O que se passa nesta fotografia?",
        "Forneça uma descrição desta imagem.",
    ),
    "fr": (
        "Décrivez cette image.",
        "Que pouvez-vous voir sur cette photo?",
        "Dites-moi ce qu'il y a dans cette image.",
        "Expliquez ce que cette image montre.",
        "Légendez cette image.",
        "Que se passe-t-il sur cette photo?",
        "Fournissez une description de cette image.",
    ),
    "nl": (
        "Beschrijf deze afbeelding.",
        "Wat zie je op deze foto?",
        "Vertel me wat er op deze afbeelding staat.",
        "Leg uit wat deze afbeelding laat zien.",
        "Onderschrift deze afbeelding.",
        "Wat gebeurt er op deze foto?",
        "Geef een beschrijving van deze afbeelding.",
    ),
    "de": (
        "Beschreiben Sie dieses Bild.",
        "Was können Sie auf diesem Foto sehen?",
        "Sagen Sie mir, was auf diesem Bild zu sehen ist.",
        "Erklären Sie, was dieses Bild zeigt.",
        "Beschriften Sie dieses Bild.",
        "Was passiert auf diesem Foto?",
        "Geben Sie eine Beschreibung dieses Bildes.",
    ),
    "es-LATAM": (
        "Describe esta imagen.",
        "¿Qué puedes ver en esta foto?",
        "Dime qué hay en esta imagen.",
        "Explica qué muestra esta imagen.",
        "Pon un título a esta imagen.",
        "¿Qué está pasando en esta foto?",
        "Proporciona una descripción de esta imagen.",
    ),
    "it": (
        "Descrivi questa immagine.",
        "Cosa puoi vedere in questa foto?",
        "Dimmi cosa c'è in questa immagine.",
        "Spiega cosa mostra questa immagine.",
        "Dai un titolo a questa immagine.",
        "Cosa sta succedendo in questa foto?",
        "Fornisci una descrizione di questa immagine.",
    ),
    "ko": (
        "이 이미지를 설명해주세요.",
        "이 사진에서 무엇을 볼 수 있나요?",
        "이 이미지에 무엇이 있는지 알려주세요.",
        "이 이미지가 보여주는 것을 설명해주세요.",
        "이 이미지에 캡션을 달아주세요.",
        "이 사진에서 무슨 일이 일어나고 있나요?",
        "이 이미지에 대한 설명을 제공해주세요.",
    ),
    "zh-Hans": (
        "描述这张图片。",
        "你能在这张照片中看到什么？",
        "告诉我这张图片里有什么。",
        "解释这张图片展示了什么。",
        "为这张图片添加说明。",
        "这张照片中发生了什么？",
        "提供这张图片的描述。",
    ),
}

# ours: translations of the English templates for the languages A.5.1 does not print
_OUR_CAPTION_PROMPTS: dict[str, tuple[str, ...]] = {
    "pt-BR": (
        "Descreva essa imagem.",
        "O que você consegue ver nessa foto?",
        "Me diga o que tem nessa imagem.",
        "Explique o que essa imagem mostra.",
        "Crie uma legenda para essa imagem.",
        "O que está acontecendo nessa foto?",
        "Faça uma descrição dessa imagem.",
    ),
    "uk": (
        "Опишіть це зображення.",
        "Що ви бачите на цій фотографії?",
        "Скажіть, що зображено на цьому зображенні.",
        "Поясніть, що показує це зображення.",
        "Підпишіть це зображення.",
        "Що відбувається на цій фотографії?",
        "Надайте опис цього зображення.",
    ),
    "hi": (
        "इस छवि का वर्णन करें।",
        "आप इस तस्वीर में क्या देख सकते हैं?",
        "मुझे बताइए कि इस छवि में क्या है।",
        "समझाइए कि यह छवि क्या दिखाती है।",
        "इस छवि के लिए एक कैप्शन लिखें।",
        "इस तस्वीर में क्या हो रहा है?",
        "इस छवि का विवरण दीजिए।",
    ),
    "zh-Hant": (
        "描述這張圖片。",
        "你能在這張照片中看到什麼？",
        "告訴我這張圖片裡有什麼。",
        "解釋這張圖片展示了什麼。",
        "為這張圖片加上說明。",
        "這張照片中發生了什麼事？",
        "提供這張圖片的描述。",
    ),
    "ru": (
        "Опишите это изображение.",
        "Что вы видите на этой фотографии?",
        "Расскажите, что изображено на этой картинке.",
        "Объясните, что показывает это изображение.",
        "Придумайте подпись к этому изображению.",
        "Что происходит на этой фотографии?",
        "Дайте описание этого изображения.",
    ),
    "cs": (
        "Popište tento obrázek.",
        "Co můžete vidět na této fotografii?",
        "Řekněte mi, co je na tomto obrázku.",
        "Vysvětlete, co tento obrázek ukazuje.",
        "Napište k tomuto obrázku popisek.",
        "Co se děje na této fotografii?",
        "Poskytněte popis tohoto obrázku.",
    ),
    "ja": (
        "この画像を説明してください。",
        "この写真に何が見えますか？",
        "この画像に何が写っているか教えてください。",
        "この画像が何を示しているか説明してください。",
        "この画像にキャプションを付けてください。",
        "この写真では何が起きていますか？",
        "この画像の説明を提供してください。",
    ),
    "pl": (
        "Opisz ten obraz.",
        "Co widzisz na tym zdjęciu?",
        "Powiedz mi, co jest na tym obrazie.",
        "Wyjaśnij, co przedstawia ten obraz.",
        "Dodaj podpis do tego obrazu.",
        "Co dzieje się na tym zdjęciu?",
        "Podaj opis tego obrazu.",
    ),
    "ro": (
        "Descrieți această imagine.",
        "Ce puteți vedea în această fotografie?",
        "Spuneți-mi ce este în această imagine.",
        "Explicați ce arată această imagine.",
        "Scrieți o legendă pentru această imagine.",
        "Ce se întâmplă în această fotografie?",
        "Oferiți o descriere a acestei imagini.",
    ),
    "nn": (
        "Beskriv dette biletet.",
        "Kva kan du sjå på dette fotografiet?",
        "Fortel meg kva som er på dette biletet.",
        "Forklar kva dette biletet viser.",
        "Skriv ein bilettekst til dette biletet.",
        "Kva skjer på dette fotografiet?",
        "Gi ei skildring av dette biletet.",
    ),
    "nb": (
        "Beskriv dette bildet.",
        "Hva kan du se på dette fotografiet?",
        "Fortell meg hva som er på dette bildet.",
        "Forklar hva dette bildet viser.",
        "Skriv en bildetekst til dette bildet.",
        "Hva skjer på dette fotografiet?",
        "Gi en beskrivelse av dette bildet.",
    ),
}

PAPER_CAPTION_LANGUAGES: tuple[str, ...] = tuple(_PAPER_CAPTION_PROMPTS)
OUR_CAPTION_LANGUAGES: tuple[str, ...] = tuple(_OUR_CAPTION_PROMPTS)
CAPTION_PROMPTS: dict[str, tuple[str, ...]] = {**_PAPER_CAPTION_PROMPTS, **_OUR_CAPTION_PROMPTS}


def caption_prompt(language: str, rng: random.Random) -> str:
    """One of the seven caption templates of `language`, drawn with `rng`."""
    return rng.choice(CAPTION_PROMPTS[normalize_language(language)])


# Verbatim from the paper's A.5.2 ("Gemini 2.5 system prompts"), grouped under its six headings. Two printing slips
# are not reproduced: the "<IMAGE> ... </ANSWER>" line lacks its comma (in Python it would fuse with the next
# prompt) and the "Image Description" line ends with a stray quote.
ANSWER_FORMAT_PROMPTS: dict[str, tuple[str, ...]] = {
    "direct": (
        "Answer the question concisely.",
        "Provide a brief, direct answer to the question.",
        "Keep your response short and to the point.",
        "Give a concise answer based on what you see in the image.",
        "Answer directly based on the visual information.",
        "Respond with a short, clear answer to the question.",
        "Be brief and direct in your response.",
    ),
    "caption_answer": (
        "First provide a caption of what you see, then give your answer.",
        "Write a brief caption describing the image, followed by your answer to the question.",
        "Start with a description of the image, then provide your answer clearly marked as 'Answer:'.",
        "First write 'Caption: <brief image description>' then answer the question.",
        "Begin with 'Caption: [what you see in the image]' followed by your response to the question.",
        "Start by writing 'CAPTION: {description}' before answering the question.",
    ),
    "final_answer": (
        "End your response with 'Final Answer: <your answer>' .",
        "Conclude with 'Final Answer: <your answer>' .",
        "After looking at the image, provide 'Final Answer: <your answer>' .",
        "Your response should end with 'Final Answer: <your answer>' .",
        "First describe what you see, then provide 'Final Answer: <your answer>' .",
        "Always end your response with 'Final Answer: <your answer>' after analyzing the image.",
        "Provide a concise answer. End with 'Final Answer: <your answer>' .",
    ),
    "naive": (
        "Describe the image and answer the question.",
        "Begin by describing the image and then answer the question.",
        "Provide a brief description of the image and then answer the question.",
        "Answer the question in a helpful and informative manner.",
        "Start by describing the image and then answer the question.",
        "You are a helpful assistant. Describe the image and answer the question.",
    ),
    "formatted_pairs": (
        "Caption: <description> → Answer: <response>",
        "Image shows: <description> | My answer: <response>",
        "[CAPTION] <description> [ANSWER] <response>",
        "# Image: <description>\n# Answer: <response>",
        "First 'Image Description: <what you see>' then 'Answer: <your response>'",
    ),
    "markers": (
        "<description><answer>",
        "Image: <description> → Answer: <conclusion>",
        "<IMAGE> describe what you see </IMAGE> <ANSWER> provide your response </ANSWER>",
        "Begin with '{IMAGE DESCRIPTION}' and end with '{FINAL ANSWER}'.",
    ),
}
