"""Natural-language descriptions of SynthPeds identities.

Captions are written from what the identity looks like: its real attributes (gender, age, hair
length, upper and lower colour and type, bags, hat) and some hidden details a human captioner
would also notice (clothing pattern, shoe and bag colours, hair tone, the viewpoint). Phrasing
varies between templates and synonyms, e.g. "A young woman with long hair in a white
short-sleeved top and a white skirt, carrying a handbag". Every caption names the upper and lower
colours, so captions always carry the identity's main colour attributes.
"""

from __future__ import annotations

import numpy as np

from .identities import Identity, Outfit
from .palette import luminance

SUBJECTS = {
    (1, 1): ("boy", "little boy", "young boy", "schoolboy"),
    (1, 2): ("young man", "teenage boy", "guy", "young guy"),
    (1, 3): ("man", "adult man", "middle-aged man", "gentleman"),
    (1, 4): ("old man", "elderly man", "senior man"),
    (2, 1): ("girl", "little girl", "young girl", "schoolgirl"),
    (2, 2): ("young woman", "teenage girl", "young lady", "girl"),
    (2, 3): ("woman", "lady", "middle-aged woman"),
    (2, 4): ("old woman", "elderly woman", "senior woman"),
}
"""(gender code, age code) -> nouns."""

UPPER_NOUNS = {
    True: ("long-sleeved shirt", "long-sleeved top", "jacket", "sweater", "long-sleeved T-shirt", "coat"),
    False: ("short-sleeved top", "T-shirt", "short-sleeved shirt", "tee", "polo shirt"),
}
LOWER_NOUNS = {
    "trousers": ("trousers", "pants", "long pants", "jeans"),
    "shorts": ("shorts", "short pants"),
    "short_skirt": ("skirt", "short skirt", "miniskirt"),
    "long_skirt": ("long skirt", "long dress", "maxi skirt"),
}
PLURAL_LOWERS = {"trousers", "pants", "long pants", "jeans", "shorts", "short pants"}
VIEW_PHRASES = {
    "front": ("walking towards the camera", "facing the camera"),
    "back": ("walking away from the camera", "seen from behind"),
    "side": ("seen from the side", "walking past the camera"),
}


def _choice(rng: np.random.Generator, items: tuple[str, ...] | list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def _a(phrase: str) -> str:
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def hair_tone(ident: Identity) -> str:
    """A word for the identity's hair tone ("black", "brown", "grey", ...)."""
    r, g, b = ident.body.hair.rgb
    y = luminance((r, g, b))
    if abs(r - b) < 0.04 and y > 0.4:
        return "grey"
    if y < 0.09:
        return "black"
    if y < 0.17:
        return "dark brown"
    if y < 0.4:
        return "brown"
    return "blond"


def _upper_phrase(outfit: Outfit, rng: np.random.Generator) -> str:
    color, noun = outfit.upper.name, _choice(rng, UPPER_NOUNS[outfit.long_sleeves])
    other = outfit.pattern_color.name
    if outfit.pattern == "stripes":
        return _choice(rng, (f"{color} and {other} striped {noun}", f"{color} {noun} with {other} stripes"))
    if outfit.pattern == "check":
        return _choice(rng, (f"{color} plaid {noun}", f"{color} and {other} checked {noun}"))
    if outfit.pattern == "logo" and rng.random() < 0.6:
        return f"{color} {noun} with {_a(other)} logo on the front"
    return f"{color} {noun}"


def _lower_phrase(outfit: Outfit, rng: np.random.Generator) -> str:
    nouns = LOWER_NOUNS[outfit.lower_kind]
    if outfit.lower_kind == "trousers" and outfit.lower.name not in ("blue", "navy", "black", "gray"):
        nouns = nouns[:3]
    noun = _choice(rng, nouns)
    phrase = f"{outfit.lower.name} {noun}"
    return phrase if noun in PLURAL_LOWERS else _a(phrase)


def _accessories(ident: Identity, rng: np.random.Generator, pron: str) -> list[str]:
    acc = ident.accessories
    items = []
    colored = rng.random() < 0.6
    if acc.backpack is not None:
        c = f"{acc.backpack.name} " if colored else ""
        items.append(
            _choice(rng, (f"carrying {_a(c + 'backpack')}", f"with {_a(c + 'backpack')} on {pron} back"))
        )
    if acc.bag is not None:
        c = f"{acc.bag.name} " if colored else ""
        items.append(
            _choice(rng, (f"with {_a(c + 'bag')} over {pron} shoulder", f"carrying {_a(c + 'shoulder bag')}"))
        )
    if acc.handbag is not None:
        c = f"{acc.handbag.name} " if colored else ""
        items.append(
            _choice(rng, (f"carrying {_a(c + 'handbag')}", f"holding {_a(c + 'handbag')} in {pron} hand"))
        )
    if acc.hat is not None:
        items.append(
            _choice(
                rng,
                (f"wearing {_a(acc.hat.name + ' hat')}", f"with {_a(acc.hat.name + ' cap')} on {pron} head"),
            )
        )
    return items


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def describe(ident: Identity, outfit_index: int, rng: np.random.Generator, view: str | None = None) -> str:
    """One caption of ``ident`` wearing outfit ``outfit_index`` (``view`` may add a phrase)."""
    attrs = ident.attributes(outfit_index)
    outfit = ident.outfits[outfit_index]
    female = attrs["gender"] == 2
    pron, subj = ("her", "she") if female else ("his", "he")
    subject = _choice(rng, SUBJECTS[(attrs["gender"], attrs["age"])])
    length = "long" if ident.body.long_hair else "short"
    hair = f"{length} {hair_tone(ident)} hair" if rng.random() < 0.5 else f"{length} hair"
    upper = _upper_phrase(outfit, rng)
    lower = _lower_phrase(outfit, rng)
    shoes = f"{outfit.shoes.name} {_choice(rng, ('shoes', 'sneakers', 'shoes'))}"
    acc = _accessories(ident, rng, pron)
    acc_clause = f", {_join(acc)}" if acc else ""
    view_clause = f", {_choice(rng, VIEW_PHRASES[view])}" if view and rng.random() < 0.3 else ""
    template = int(rng.integers(6))
    if template == 0:
        text = f"{_a(subject)} with {hair} in {_a(upper)} and {lower}{acc_clause}{view_clause}."
    elif template == 1:
        text = (
            f"The {subject} is wearing {_a(upper)} and {lower}{acc_clause}. {subj.capitalize()} has {hair}."
        )
    elif template == 2:
        text = f"This {subject} has {hair} and wears {_a(upper)} with {lower} and {shoes}{acc_clause}."
    elif template == 3:
        text = f"{_a(subject)} wearing {lower} and {_a(upper)}{acc_clause}; {subj} has {hair}{view_clause}."
    elif template == 4:
        text = (
            f"{_a(subject)} in {_a(upper)}, {lower} and {shoes}{acc_clause}. {subj.capitalize()} has {hair}."
        )
    else:
        verbs = [item for item in acc if not item.startswith("with ")]
        others = [item for item in acc if item.startswith("with ")]
        sentence = f" {subj.capitalize()} is {_join(verbs)}." if verbs else ""
        rest = f", {_join(others)}" if others else ""
        text = f"The {subject} has {hair} and is dressed in {_a(upper)} and {lower}{rest}{view_clause}.{sentence}"
    return text[0].upper() + text[1:]


def caption_image(
    ident: Identity,
    outfit_index: int,
    rng: np.random.Generator,
    view: str | None = None,
    max_captions: int = 2,
) -> list[str]:
    """1 to ``max_captions`` distinct captions for one image."""
    count = int(rng.integers(1, max_captions + 1))
    captions: list[str] = []
    for _ in range(4 * count):
        text = describe(ident, outfit_index, rng, view)
        if text not in captions:
            captions.append(text)
        if len(captions) == count:
            break
    return captions
