"""Caption prompt templates in every TowerVision language, and the system-prompt families for synthetic captions.

Every language has the same seven intents, in this order (written for each language, not machine-translated):
  1. describe in detail            2. what do you see               3. write a detailed caption
  4. everything, precisely         5. what is happening             6. comprehensive: objects, people, colours, setting
  7. so that someone who cannot see it could picture it
A caption row pairs one of them, drawn with a seeded RNG, with a caption in the same language.
"""

import random

from .languages import normalize_language


CAPTION_INTENTS = ("detailed", "what_do_you_see", "caption", "everything", "happening", "comprehensive", "picture_it")

CAPTION_PROMPTS: dict[str, tuple[str, ...]] = {
    "en": (
        "Describe this image in detail.",
        "What do you see in this image?",
        "Write a detailed caption for this image.",
        "Describe everything that can be seen in the image, as precisely as possible.",
        "Explain what is happening in this image.",
        "Give a comprehensive description of the image, including the objects, people, colours and setting.",
        "Describe the image so that someone who cannot see it could picture it.",
    ),
    "de": (
        "Beschreibe dieses Bild im Detail.",
        "Was siehst du auf diesem Bild?",
        "Schreibe eine ausführliche Bildunterschrift für dieses Bild.",
        "Beschreibe so genau wie möglich alles, was auf dem Bild zu sehen ist.",
        "Erkläre, was auf diesem Bild passiert.",
        "Gib eine umfassende Beschreibung des Bildes, einschließlich der Objekte, Personen, Farben und der Umgebung.",
        "Beschreibe das Bild so, dass sich jemand, der es nicht sehen kann, es vorstellen kann.",
    ),
    "nl": (
        "Beschrijf deze afbeelding in detail.",
        "Wat zie je op deze afbeelding?",
        "Schrijf een uitgebreid bijschrift bij deze afbeelding.",
        "Beschrijf zo nauwkeurig mogelijk alles wat er op de afbeelding te zien is.",
        "Leg uit wat er op deze afbeelding gebeurt.",
        "Geef een volledige beschrijving van de afbeelding, inclusief de objecten, personen, kleuren en omgeving.",
        "Beschrijf de afbeelding zo dat iemand die haar niet kan zien, zich er een voorstelling van kan maken.",
    ),
    "es": (
        "Describe esta imagen con detalle.",
        "¿Qué ves en esta imagen?",
        "Escribe un pie de foto detallado para esta imagen.",
        "Describe todo lo que se ve en la imagen con la mayor precisión posible.",
        "Explica lo que está ocurriendo en esta imagen.",
        "Haz una descripción completa de la imagen, incluidos los objetos, las personas, los colores y el entorno.",
        "Describe la imagen de forma que alguien que no pueda verla sea capaz de imaginarla.",
    ),
    "es-LATAM": (
        "Describe esta imagen en detalle.",
        "¿Qué ves en esta imagen?",
        "Escribe una descripción detallada para esta imagen.",
        "Describe con la mayor precisión posible todo lo que aparece en la imagen.",
        "Explica qué está pasando en esta imagen.",
        "Haz una descripción completa de la imagen, incluyendo los objetos, las personas, los colores y el ambiente.",
        "Describe la imagen de manera que alguien que no puede verla logre imaginársela.",
    ),
    "fr": (
        "Décris cette image en détail.",
        "Que vois-tu sur cette image ?",
        "Rédige une légende détaillée pour cette image.",
        "Décris le plus précisément possible tout ce que l'on voit sur l'image.",
        "Explique ce qui se passe sur cette image.",
        "Donne une description complète de l'image, y compris les objets, les personnes, les couleurs et le décor.",
        "Décris l'image de sorte qu'une personne qui ne peut pas la voir puisse se la représenter.",
    ),
    "it": (
        "Descrivi questa immagine nel dettaglio.",
        "Che cosa vedi in questa immagine?",
        "Scrivi una didascalia dettagliata per questa immagine.",
        "Descrivi nel modo più preciso possibile tutto ciò che si vede nell'immagine.",
        "Spiega che cosa sta succedendo in questa immagine.",
        "Fornisci una descrizione completa dell'immagine, compresi gli oggetti, le persone, i colori e "
        "l'ambientazione.",
        "Descrivi l'immagine in modo che chi non può vederla riesca a immaginarla.",
    ),
    "pt-PT": (
        "Descreve esta imagem em pormenor.",
        "O que vês nesta imagem?",
        "Escreve uma legenda detalhada para esta imagem.",
        "Descreve, o mais rigorosamente possível, tudo o que se vê na imagem.",
        "Explica o que está a acontecer nesta imagem.",
        "Faz uma descrição completa da imagem, incluindo os objetos, as pessoas, as cores e o cenário.",
        "Descreve a imagem de forma a que alguém que não a consiga ver a possa imaginar.",
    ),
    "pt-BR": (
        "Descreva esta imagem em detalhes.",
        "O que você vê nesta imagem?",
        "Escreva uma legenda detalhada para esta imagem.",
        "Descreva, com a maior precisão possível, tudo o que aparece na imagem.",
        "Explique o que está acontecendo nesta imagem.",
        "Faça uma descrição completa da imagem, incluindo os objetos, as pessoas, as cores e o ambiente.",
        "Descreva a imagem de um jeito que alguém que não consegue vê-la possa imaginá-la.",
    ),
    "uk": (
        "Детально опиши це зображення.",
        "Що ти бачиш на цьому зображенні?",
        "Напиши детальний підпис до цього зображення.",
        "Якомога точніше опиши все, що видно на зображенні.",
        "Поясни, що відбувається на цьому зображенні.",
        "Надай вичерпний опис зображення, зокрема об'єктів, людей, кольорів і обстановки.",
        "Опиши зображення так, щоб людина, яка не може його побачити, змогла його уявити.",
    ),
    "ru": (
        "Подробно опиши это изображение.",
        "Что ты видишь на этом изображении?",
        "Напиши подробную подпись к этому изображению.",
        "Как можно точнее опиши всё, что видно на изображении.",
        "Объясни, что происходит на этом изображении.",
        "Дай исчерпывающее описание изображения, включая объекты, людей, цвета и обстановку.",
        "Опиши изображение так, чтобы человек, который не может его увидеть, смог его представить.",
    ),
    "pl": (
        "Opisz szczegółowo ten obraz.",
        "Co widzisz na tym obrazie?",
        "Napisz szczegółowy podpis do tego obrazu.",
        "Opisz jak najdokładniej wszystko, co widać na obrazie.",
        "Wyjaśnij, co dzieje się na tym obrazie.",
        "Przedstaw wyczerpujący opis obrazu, uwzględniając obiekty, osoby, kolory i otoczenie.",
        "Opisz obraz tak, aby osoba, która nie może go zobaczyć, mogła go sobie wyobrazić.",
    ),
    "cs": (
        "Popiš podrobně tento obrázek.",
        "Co vidíš na tomto obrázku?",
        "Napiš k tomuto obrázku podrobný popisek.",
        "Popiš co nejpřesněji vše, co je na obrázku vidět.",
        "Vysvětli, co se na tomto obrázku děje.",
        "Podej úplný popis obrázku včetně objektů, osob, barev a prostředí.",
        "Popiš obrázek tak, aby si ho dokázal představit i někdo, kdo ho nevidí.",
    ),
    "ro": (
        "Descrie în detaliu această imagine.",
        "Ce vezi în această imagine?",
        "Scrie o legendă detaliată pentru această imagine.",
        "Descrie cât mai precis tot ce se vede în imagine.",
        "Explică ce se întâmplă în această imagine.",
        "Oferă o descriere completă a imaginii, inclusiv obiectele, persoanele, culorile și cadrul.",
        "Descrie imaginea astfel încât cineva care nu o poate vedea să și-o poată imagina.",
    ),
    "nb": (
        "Beskriv dette bildet i detalj.",
        "Hva ser du på dette bildet?",
        "Skriv en detaljert bildetekst til dette bildet.",
        "Beskriv så nøyaktig som mulig alt som er å se på bildet.",
        "Forklar hva som skjer på dette bildet.",
        "Gi en fullstendig beskrivelse av bildet, inkludert gjenstander, personer, farger og omgivelser.",
        "Beskriv bildet slik at noen som ikke kan se det, kan forestille seg det.",
    ),
    "nn": (
        "Beskriv dette biletet i detalj.",
        "Kva ser du på dette biletet?",
        "Skriv ein detaljert bilettekst til dette biletet.",
        "Beskriv så nøyaktig som mogleg alt som er å sjå på biletet.",
        "Forklar kva som skjer på dette biletet.",
        "Gi ei fullstendig skildring av biletet, medrekna gjenstandar, personar, fargar og omgjevnader.",
        "Beskriv biletet slik at nokon som ikkje kan sjå det, kan førestille seg det.",
    ),
    "zh-Hans": (
        "请详细描述这张图片。",
        "你在这张图片中看到了什么？",
        "请为这张图片写一段详细的说明文字。",
        "请尽可能准确地描述图片中能看到的一切。",
        "请解释这张图片中正在发生什么。",
        "请全面描述这张图片，包括其中的物体、人物、颜色和环境。",
        "请描述这张图片，让看不到它的人也能想象出它的样子。",
    ),
    "zh-Hant": (
        "請詳細描述這張圖片。",
        "你在這張圖片中看到了什麼？",
        "請為這張圖片寫一段詳細的說明文字。",
        "請盡可能準確地描述圖片中能看到的一切。",
        "請解釋這張圖片中正在發生什麼事。",
        "請全面描述這張圖片，包括其中的物體、人物、顏色和環境。",
        "請描述這張圖片，讓看不到它的人也能想像出它的樣子。",
    ),
    "ja": (
        "この画像を詳しく説明してください。",
        "この画像には何が写っていますか？",
        "この画像に詳しいキャプションを付けてください。",
        "画像に写っているものをすべて、できるだけ正確に説明してください。",
        "この画像で何が起きているのか説明してください。",
        "画像に含まれる物体、人物、色、背景などを含めて、画像を総合的に説明してください。",
        "この画像を見ることができない人でも思い浮かべられるように、画像を説明してください。",
    ),
    "ko": (
        "이 이미지를 자세히 설명해 주세요.",
        "이 이미지에서 무엇이 보이나요?",
        "이 이미지에 대한 자세한 캡션을 작성해 주세요.",
        "이미지에 보이는 모든 것을 최대한 정확하게 설명해 주세요.",
        "이 이미지에서 무슨 일이 일어나고 있는지 설명해 주세요.",
        "이미지 속 사물, 사람, 색상, 배경을 포함하여 이미지를 종합적으로 설명해 주세요.",
        "이 이미지를 볼 수 없는 사람도 떠올릴 수 있도록 이미지를 설명해 주세요.",
    ),
    "hi": (
        "इस चित्र का विस्तार से वर्णन करें।",
        "आपको इस चित्र में क्या दिखाई देता है?",
        "इस चित्र के लिए एक विस्तृत कैप्शन लिखें।",
        "चित्र में दिखाई देने वाली हर चीज़ का यथासंभव सटीक वर्णन करें।",
        "समझाइए कि इस चित्र में क्या हो रहा है।",
        "चित्र का एक व्यापक विवरण दें, जिसमें वस्तुएँ, लोग, रंग और परिवेश शामिल हों।",
        "चित्र का वर्णन इस तरह करें कि जो व्यक्ति इसे देख नहीं सकता, वह भी इसकी कल्पना कर सके।",
    ),
}


def caption_prompt(language: str, rng: random.Random) -> str:
    """One of the seven caption prompts of `language`, drawn with `rng`."""
    return rng.choice(CAPTION_PROMPTS[normalize_language(language)])


# System-prompt families for synthetic captions: each steers the captioner toward one kind of detail (fine-grained
# attributes, spatial relations, contextual cues, text in the image); a request draws one family, then one prompt.
SYNTH_SYSTEM_PROMPTS: dict[str, tuple[str, ...]] = {
    "dense": (
        "You are an expert image describer. Write one detailed, factual paragraph describing the image: every visible "
        "object, person and animal, their appearance, and the overall scene. Describe only what is visible; do not "
        "speculate, and do not mention that this is an image.",
        "Describe the image exhaustively, as a careful human annotator would when asked to leave nothing out. Use "
        "plain, precise language and a single flowing paragraph.",
    ),
    "attributes": (
        "You describe images with a focus on fine-grained visual attributes: colours, materials, textures, shapes, "
        "sizes, patterns, states (open, broken, wet...) and exact counts of repeated objects. Be precise and "
        "concrete.",
        "Write a caption that would let someone distinguish this image from very similar ones: name the specific "
        "attributes of each salient object and count objects whenever there are several of the same kind.",
    ),
    "spatial": (
        "You describe images with a focus on spatial layout: where each object is (left, right, centre, foreground, "
        "background), how objects relate to each other (on, under, behind, next to), their relative sizes and the "
        "camera viewpoint.",
        "Describe the composition of the image from foreground to background and from left to right, stating the "
        "position of every salient element relative to the others.",
    ),
    "context": (
        "You describe images with a focus on context: the kind of place, the likely time of day and season, what "
        "people are doing and why, and cultural cues such as clothing, food, architecture, signage or customs, "
        "without inventing facts the image does not support.",
        "Describe what is happening in the image and the setting in which it happens, including any cultural or "
        "regional details that are visible.",
    ),
    "text": (
        "You describe images that may contain text. Transcribe every legible piece of text exactly, say where it "
        "appears and what it belongs to (sign, label, document, screen), then describe the rest of the image.",
    ),
}
