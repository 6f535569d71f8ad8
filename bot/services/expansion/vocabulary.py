"""Words image prompts are made of: the guards' notion of a "dictionary-ish" word.

A model that has gone wrong (a broken quantization, the wrong tokenizer, random weights) produces
strings that look like words, "paintin", "umeinematic", but are not. A reply is trusted only when most
of its words are ones a prompt writer would use. The list does not need to be complete: a real reply
with a few rare words ("bokeh", "sfumato") still passes, because only a share of known words is asked for.
"""

from __future__ import annotations

import re
from functools import lru_cache

_WORDS = """
a an the and or of in on at by for with without from to into onto over under above below behind beside
between through across along around near far inside outside against among beyond within up down out off
as like while its their his her our this that these those some many few several each every all both
is are was be being been has have having very more most less much too so just only also not no
one two three four five six seven eight nine ten hundred thousand first second third single double
light lighting lit lights glow glowing shine shining shadow shadows shade silhouette backlit backlight
rim sun sunlight sunbeam sunbeams sunny sunset sunrise dawn dusk twilight noon midday morning evening
night midnight moon moonlight moonlit star stars starry starlight candle candlelight lamp lantern neon
fire flame flames ember spark sparkle sparkling glitter reflection reflections reflective bright
brightness dark darkness dim gloomy hazy haze fog foggy mist misty smoke smoky steam cloud clouds cloudy
rain rainy storm stormy thunder lightning snow snowy ice icy frost frosty wind windy weather sky skies
golden hour blue warm cool cold hot soft hard harsh gentle diffused diffuse dramatic natural ambient
studio volumetric cinematic moody atmosphere atmospheric mood ethereal dreamy magical mystical mysterious
serene calm peaceful quiet cozy cosy lonely melancholic nostalgic whimsical playful cheerful happy sad
epic heroic majestic grand vast huge giant tiny small little miniature large big tall long short wide
narrow deep shallow high low thin thick round sharp smooth rough clean messy ornate intricate detailed
detail details texture textures textured pattern patterns simple minimal minimalist minimalism elegant
color colors colour colours colorful vibrant vivid saturated desaturated muted pastel monochrome
monochromatic palette tone tones toned hue hues contrast red orange yellow green cyan purple violet pink
magenta brown black white gray grey silver gold teal turquoise crimson scarlet amber emerald azure
beige ivory cream navy indigo lavender rainbow
photo photograph photography photographic photorealistic realistic realism hyperrealistic render
rendered rendering painting painted paint oil acrylic watercolor watercolour gouache ink pencil
charcoal graphite pastel sketch sketched drawing drawn illustration illustrated art artwork artistic
style styled digital traditional concept fantasy anime manga cartoon comic comics cel shading shaded
line lines linework outline outlines stroke strokes brush brushstroke brushstrokes brushwork canvas
paper wash washes impasto fresco mural print poster engraving etching woodcut collage mosaic sculpture
pixel pixels bit retro vintage classic classical modern contemporary futuristic surreal surrealism
abstract impressionist impressionism expressionism baroque renaissance romantic romanticism gothic
victorian medieval ancient antique rustic cyberpunk steampunk synthwave vaporwave noir isometric
low poly voxel octane unreal engine blender cgi hdr uhd dslr cinema film grain analog polaroid
kodak lens lenses wide angle telephoto macro fisheye bokeh focus focused blur blurred blurry depth
field exposure aperture shot shots close closeup view views perspective angle overhead aerial top side
front back portrait landscape panorama panoramic composition composed framing framed frame centered
symmetry symmetrical symmetric balanced rule thirds foreground background midground horizon vanishing
point scene still shot establishing dynamic pose posed action motion movement tilt shift orthographic
quality masterpiece award winning professional high resolution sharpness crisp fine highly extremely
beautiful beautifully stunning gorgeous lovely pretty elegant graceful delicate fine rich lush dense
forest woods woodland tree trees pine oak birch willow jungle leaf leaves branch branches grass field
fields meadow flower flowers blossom blossoms bloom garden moss fern vine vines mushroom rose roses
mountain mountains hill hills valley cliff cliffs rock rocks rocky stone stones cave canyon desert dune
dunes sand beach shore coast coastline sea ocean wave waves water lake river stream waterfall pond
island islands bay harbor harbour reef underwater glacier volcano lava meadow prairie tundra swamp
sky horizon earth planet space galaxy nebula cosmos cosmic universe
city town village street streets road alley avenue square market bridge tower towers castle palace
temple church cathedral ruins house houses home cabin cottage hut building buildings skyscraper
skyline rooftop rooftops roof wall walls window windows windowsill door doorway gate stairs staircase
room interior exterior hall library kitchen cafe bar shop station tunnel lighthouse harbor dock pier
fortress citadel spire spires dome arch arches column columns pillar pillars courtyard balcony
man woman men women person people child children boy girl kid old young elderly face faces eye eyes
hair skin smile expression figure character hero knight warrior soldier king queen prince princess
wizard witch monk sailor fisherman farmer dancer musician robot android cyborg astronaut pilot
animal animals cat cats kitten dog dogs puppy fox foxes wolf wolves bear bird birds owl eagle raven
crow horse horses deer rabbit lion tiger dragon dragons whale fish butterfly insect snake frog
fur feathers feather scales wings wing tail paw paws
food meal dish bowl plate cup mug glass bottle table tablecloth bread cake pie fruit fruits apple
coffee tea soup ramen noodles sushi pizza dessert chocolate cheese vegetables wine breakfast
car cars truck train ship ships boat boats sail sails sailing plane aircraft spaceship spacecraft
bicycle motorcycle airship vehicle wheels
wood wooden metal metallic steel iron copper brass bronze glass crystal crystals marble velvet silk
leather fabric cloth linen ceramic porcelain paper plastic chrome gem gems jewel jewels pearl pearls
armor armour cloak cape robe dress gown suit hat crown helmet sword shield staff book books scroll map
sitting standing walking running flying floating falling rising sleeping reading resting looking
facing leaning lying perched swimming dancing fighting holding wearing covered surrounded overgrown
abandoned forgotten hidden lost distant endless empty crowded busy bustling
cute adorable fluffy fuzzy furry shiny glossy matte polished weathered worn rusty dusty wet dry
warmly softly gently slightly subtle subtly strong strongly bold boldly heavy heavily light lightly
rays ray beam beams flare flares bloom glare caustics subsurface scattering global illumination
ambient occlusion ray tracing traced translucent transparent opaque iridescent luminous luminescent
bioluminescent fluorescent phosphorescent radiant glowing shimmering shimmer twinkling
spring summer autumn fall winter season seasonal
hour time day days age era century
"""

_SUFFIXES = ("ies", "es", "s", "ed", "ing", "ly", "er", "est", "y", "ness", "ful")


@lru_cache(maxsize=1)
def known_words() -> frozenset[str]:
    from bot.services.expansion.presets import STYLES, SUBJECT_KEYWORDS

    words = set(_WORDS.split())
    # Every word our own presets use is, by definition, prompt vocabulary.
    for preset in STYLES.values():
        phrases = [*preset.modifiers, preset.description, preset.name, preset.negative]
        for group in preset.subject_modifiers.values():
            phrases += group
        for phrase in phrases:
            words.update(re.findall(r"[a-z]+", phrase.lower()))
    for keywords in SUBJECT_KEYWORDS.values():
        words.update(keywords)
    return frozenset(words)


def is_known(word: str) -> bool:
    """A known word, or one of its plain inflections ("shadows", "glowing", "softly")."""
    word = word.lower().strip("'-")
    vocabulary = known_words()
    if word in vocabulary:
        return True
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 2:
            stem = word[: -len(suffix)]
            if stem in vocabulary or stem + "e" in vocabulary or (suffix == "ies" and stem + "y" in vocabulary):
                return True
            # Doubled consonants: "foggy" -> "fog", "running" -> "run".
            if len(stem) > 2 and stem[-1] == stem[-2] and stem[:-1] in vocabulary:
                return True
    return False
