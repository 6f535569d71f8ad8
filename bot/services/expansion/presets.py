"""Curated style presets: the deterministic expander, good on its own and the LLM's fallback."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

# Subject categories pick modifiers that suit what is drawn: a portrait wants different light
# and framing than a landscape.
SUBJECT_KEYWORDS: dict[str, tuple[str, ...]] = {
    "portrait": (
        "man",
        "woman",
        "girl",
        "boy",
        "person",
        "portrait",
        "face",
        "child",
        "king",
        "queen",
        "knight",
        "warrior",
        "wizard",
        "witch",
        "old",
        "lady",
        "people",
        "character",
    ),
    "animal": (
        "cat",
        "dog",
        "fox",
        "bird",
        "horse",
        "wolf",
        "owl",
        "lion",
        "tiger",
        "bear",
        "dragon",
        "deer",
        "rabbit",
        "fish",
        "whale",
        "animal",
        "kitten",
        "puppy",
        "butterfly",
    ),
    "landscape": (
        "mountain",
        "forest",
        "lake",
        "sea",
        "ocean",
        "river",
        "valley",
        "desert",
        "field",
        "beach",
        "snow",
        "sky",
        "sunset",
        "sunrise",
        "island",
        "waterfall",
        "cliff",
        "landscape",
        "meadow",
        "hill",
        "canyon",
        "glacier",
    ),
    "architecture": (
        "castle",
        "city",
        "street",
        "house",
        "building",
        "tower",
        "temple",
        "church",
        "bridge",
        "lighthouse",
        "village",
        "room",
        "interior",
        "cathedral",
        "ruins",
        "skyline",
    ),
    "food": ("cake", "coffee", "tea", "bread", "fruit", "soup", "pizza", "sushi", "dessert", "food", "meal"),
    "vehicle": ("car", "ship", "boat", "train", "plane", "spaceship", "bicycle", "motorcycle", "airship"),
}

COMMON_NEGATIVE = "blurry, low quality, jpeg artifacts, watermark, signature, text, deformed"


@dataclass(frozen=True)
class StylePreset:
    name: str
    description: str
    modifiers: tuple[str, ...]
    subject_modifiers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    negative: str = COMMON_NEGATIVE


def _preset(name: str, description: str, modifiers: str, negative: str = "", **subjects: str) -> StylePreset:
    return StylePreset(
        name=name,
        description=description,
        modifiers=tuple(m.strip() for m in modifiers.split(";")),
        subject_modifiers={k: tuple(m.strip() for m in v.split(";")) for k, v in subjects.items()},
        negative=", ".join(filter(None, (COMMON_NEGATIVE, negative))),
    )


STYLES: dict[str, StylePreset] = {
    p.name: p
    for p in (
        _preset(
            "photographic",
            "a natural photograph",
            "professional photograph; sharp focus; natural colors; high detail; realistic textures; balanced exposure",
            "cartoon, illustration, painting, 3d render",
            portrait="85mm lens, shallow depth of field; soft window light; catchlight in the eyes; natural skin texture",
            animal="telephoto lens; wildlife photography; detailed fur and feathers; eye-level shot",
            landscape="wide angle lens; golden hour light; dramatic sky; sweeping vista",
            architecture="architectural photography; clean lines; balanced symmetry; blue hour",
            food="food photography; overhead shot; soft diffused light; shallow depth of field",
            vehicle="automotive photography; glossy reflections; motion blur background",
        ),
        _preset(
            "cinematic",
            "a still from a film",
            "cinematic still; dramatic lighting; anamorphic lens; film grain; color graded; epic composition",
            "flat lighting, amateur, oversaturated",
            portrait="moody rim light; close-up; shallow depth of field; teal and orange grade",
            animal="backlit silhouette; atmospheric haze; low angle",
            landscape="wide establishing shot; volumetric fog; god rays",
            architecture="low angle; neon reflections on wet pavement; long shadows",
            food="moody tabletop scene; warm practical lights; shallow focus",
            vehicle="tracking shot; headlights in the rain; lens flare",
        ),
        _preset(
            "anime",
            "Japanese animation",
            "anime style; clean line art; vibrant cel shading; detailed background; studio quality",
            "photorealistic, 3d, realistic photo",
            portrait="expressive eyes; dynamic pose; soft blush; wind in the hair",
            animal="cute; big expressive eyes; soft round shapes",
            landscape="lush painted sky; fluffy clouds; summer atmosphere",
            architecture="detailed cityscape; warm evening lights; power lines",
            food="glossy food illustration; steam rising; cozy kitchen",
            vehicle="speed lines; dynamic angle; bright sky",
        ),
        _preset(
            "oil painting",
            "a classical oil painting",
            "oil painting on canvas; visible brushstrokes; rich pigments; chiaroscuro; museum quality",
            "photo, digital art, 3d render",
            portrait="Rembrandt lighting; dark background; classical portrait",
            animal="pastoral scene; warm earth tones",
            landscape="romanticism; luminous sky; impasto highlights",
            architecture="old master cityscape; soft atmospheric perspective",
            food="still life; Dutch golden age; candlelight",
            vehicle="maritime painting; dramatic waves; stormy sky",
        ),
        _preset(
            "watercolor",
            "a watercolor painting",
            "watercolor painting; soft washes; bleeding edges; paper texture; delicate colors",
            "photo, harsh lines, 3d render",
            portrait="gentle pastel tones; expressive loose strokes",
            animal="white background; natural history illustration",
            landscape="loose wet-on-wet sky; misty distance",
            architecture="urban sketching; ink lines with watercolor wash",
            food="botanical study; light pencil underdrawing",
            vehicle="travel sketch; loose ink lines",
        ),
        _preset(
            "pixel art",
            "retro pixel art",
            "pixel art; 16-bit; limited palette; crisp pixels; retro video game style",
            "blurry, smooth gradients, photo, anti-aliasing",
            portrait="character sprite; front view",
            animal="cute sprite; idle animation frame",
            landscape="parallax background; sunset palette",
            architecture="isometric; cozy details",
            food="item icon; clean outline",
            vehicle="side view sprite; speed trail",
        ),
        _preset(
            "3d render",
            "a polished 3D render",
            "3d render; octane render; global illumination; subsurface scattering; highly detailed; studio lighting",
            "2d, flat, sketch, painting",
            portrait="stylized character; soft studio light; clay material",
            animal="stylized fur; big friendly eyes; soft shadows",
            landscape="low poly terrain; soft volumetric light",
            architecture="architectural visualization; ray traced reflections",
            food="macro; glossy highlights",
            vehicle="product shot; glossy reflections; turntable view",
        ),
        _preset(
            "fantasy",
            "epic fantasy art",
            "fantasy art; epic; intricate details; magical atmosphere; glowing accents; concept art",
            "modern, mundane, photo",
            portrait="ornate armor; flowing cape; heroic pose",
            animal="majestic; mythical creature; glowing eyes",
            landscape="towering peaks; floating islands; ethereal light",
            architecture="ancient ruins; overgrown with vines; mystical glow",
            food="enchanted feast; glowing potions",
            vehicle="airship; billowing sails; sky harbor",
        ),
        _preset(
            "sketch",
            "a pencil sketch",
            "pencil sketch; graphite; cross-hatching; loose construction lines; sketchbook page",
            "color, photo, 3d render",
            portrait="figure study; careful shading of the face",
            animal="nature study; fine fur strokes",
            landscape="plein air study; quick gestural lines",
            architecture="perspective drawing; ruler lines",
            food="still life study; soft tonal shading",
            vehicle="industrial design sketch; marker highlights",
        ),
        _preset(
            "comic",
            "a comic book panel",
            "comic book art; bold ink outlines; halftone shading; dynamic composition; vivid flat colors",
            "photo, blurry, 3d render",
            portrait="action pose; dramatic foreshortening",
            animal="expressive cartoon animal; speed lines",
            landscape="splash page; dramatic sky",
            architecture="city skyline panel; bold shadows",
            food="pop art; bold dots",
            vehicle="motion lines; explosive angle",
        ),
        _preset(
            "isometric",
            "an isometric diorama",
            "isometric view; tiny diorama; tilt-shift; clean geometry; soft shadows; miniature",
            "perspective distortion, blurry",
            portrait="tiny figure; cozy room",
            animal="tiny animal in a small habitat",
            landscape="floating island chunk; cross-section of soil",
            architecture="cutaway building; detailed interior",
            food="tiny food stall; bright colors",
            vehicle="toy-like vehicle; small road tile",
        ),
        _preset(
            "cyberpunk",
            "neon-lit cyberpunk",
            "cyberpunk; neon lights; rain-soaked streets; holograms; high contrast; futuristic",
            "daylight, rustic, medieval",
            portrait="cybernetic implants; reflective visor; neon rim light",
            animal="robotic animal; glowing circuitry",
            landscape="polluted skyline; acid rain; megacity on the horizon",
            architecture="towering megastructures; glowing signs",
            food="street food stall; neon signs; steam",
            vehicle="hover car; light trails",
        ),
    )
}

DEFAULT_STYLE = "photographic"


def find_style(name: str | None) -> StylePreset:
    if name is None:
        return STYLES[DEFAULT_STYLE]
    key = name.strip().lower().replace("_", " ").replace("-", " ")
    if key in ("3d", "render"):
        key = "3d render"
    if key not in STYLES:
        raise ValueError(f"Unknown style “{name}”. Styles: {', '.join(sorted(STYLES))}.")
    return STYLES[key]


def subjects_of(prompt: str) -> list[str]:
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    found = []
    for category, keywords in SUBJECT_KEYWORDS.items():
        if any(k in words or k + "s" in words or k + "es" in words for k in keywords):
            found.append(category)
    return found


def preset_details(prompt: str, style: StylePreset, seed: int) -> list[str]:
    """The style's phrases, with subject-aware ones first; which and in what order is seeded."""
    rng = random.Random(f"{style.name}:{seed}")
    subject_phrases: list[str] = []
    for category in subjects_of(prompt):
        subject_phrases += style.subject_modifiers.get(category, ())
    rng.shuffle(subject_phrases)
    general = list(style.modifiers)
    # Keep the style's defining first phrase in front; vary the rest.
    head, rest = general[:1], general[1:]
    rng.shuffle(rest)
    return head + subject_phrases[:2] + rest


def merge_negative(style_negative: str, member_negative: str | None) -> str:
    """Member's terms first (they matter most to them), then the style's, without duplicates."""
    terms: list[str] = []
    for part in (member_negative or "", style_negative):
        for term in part.split(","):
            term = term.strip()
            if term and term.lower() not in {t.lower() for t in terms}:
                terms.append(term)
    return ", ".join(terms)
