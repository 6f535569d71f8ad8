"""Why an image looks as it does: the words that reached the model, and where it looked for each.

An explanation re-runs one image with its own seed and, for that run only, an attention processor of
Atelier's own on the UNet's cross-attention layers. The processor lets diffusers' own processor compute
every layer's output, so the pixels are those of a plain run, and on the side it records the attention
probabilities of each prompt token over the latent image (the DAAM method: summed over heads, layers
and steps, upsampled to one resolution). The original processors are put back afterwards: normal
generation never pays for any of it.

Words are mapped to tokens with the pipeline's own tokenizer: CLIP's byte-pair pre-tokenizer never
joins across whitespace, so the tokens of a prompt are the tokens of its words in order; a word of
several tokens gets the sum of its tokens' maps, and a word past the encoder's 77-token window is
reported as cut, not dropped in silence.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from engine.contract import JobSpec

log = logging.getLogger(__name__)

# Text-encoder positions: the start token, 75 of the prompt's, the end token.
ENCODER_WINDOW = 77
TILE_SIDE = 192
GRID_COLUMNS = 4
_PUNCTUATION = re.compile(r"^\W+|\W+$")


@dataclass
class WordTokens:
    word: str  # as written, punctuation trimmed
    source: str  # "member": the member's own words; "added": the expansion's
    positions: list[int]  # encoder positions of its tokens (1 is the first after the start token)
    cut: bool = False  # some or all of its tokens fall past the window: the model never read them
    tile: int | None = None  # its heatmap's place in the grid


def _words_with_offsets(text: str) -> Iterator[tuple[int, str]]:
    for match in re.finditer(r"\S+", text):
        yield match.start(), match.group()


def word_tokens(
    tokenizer: Any, model_prompt: str, member_prompt: str, *, window: int = ENCODER_WINDOW
) -> list[WordTokens]:
    """Every word of ``model_prompt`` with its token positions and where it came from; then any of the
    member's words that never reached the model (a raw prompt cut to the window) as cut, with none."""
    member = member_prompt.strip()
    # The member's words lead the model prompt verbatim (or, for raw prompts, as much of them as fits).
    member_chars = len(member) if model_prompt.startswith(member) else _shared_prefix(model_prompt, member)
    words: list[WordTokens] = []
    position = 1
    last_readable = window - 2  # the final position holds the end token
    for start, raw_word in _words_with_offsets(model_prompt):
        ids = tokenizer(raw_word, add_special_tokens=False).input_ids
        positions = list(range(position, position + len(ids)))
        position += len(ids)
        word = _PUNCTUATION.sub("", raw_word)
        if not word:
            continue  # a lone comma or dash: nothing to look for
        source = "member" if start < member_chars else "added"
        words.append(WordTokens(word, source, positions, cut=any(p > last_readable for p in positions)))
    # Whole prompt tokenised at once must agree with the word-by-word count, or the positions are wrong.
    whole = len(tokenizer(model_prompt, add_special_tokens=False, verbose=False).input_ids)
    if whole != position - 1:
        log.warning(
            "word-by-word tokens (%d) differ from the prompt's (%d); positions are approximate", position - 1, whole
        )
    reached = model_prompt[:member_chars]
    for _, raw_word in _words_with_offsets(member[len(reached) :]):
        word = _PUNCTUATION.sub("", raw_word)
        if word:
            words.append(WordTokens(word, "member", [], cut=True))
    return words


def _shared_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class AttentionRecorder:
    """Sums, per word, the cross-attention probability mass on each latent position."""

    def __init__(self, word_positions: list[list[int]], latent_size: tuple[int, int], *, conditional_row: int) -> None:
        import torch

        self.torch = torch
        self.word_positions = word_positions
        self.latent_size = latent_size  # (height, width) of the largest attention map
        self.conditional_row = conditional_row
        self.maps = torch.zeros(len(word_positions), *latent_size)
        self.calls = 0

    def record(self, attn: Any, hidden_states: Any, encoder_hidden_states: Any) -> None:
        torch = self.torch
        if hidden_states.ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = attn.to_q(hidden_states)
        key = attn.to_k(encoder_hidden_states)
        batch = query.shape[0]
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if getattr(attn, "norm_q", None) is not None:
            query = attn.norm_q(query)
        if getattr(attn, "norm_k", None) is not None:
            key = attn.norm_k(key)
        probabilities = (query.float() @ key.float().transpose(-1, -2) * head_dim**-0.5).softmax(dim=-1)
        row = min(self.conditional_row, batch - 1)
        per_token = probabilities[row].sum(dim=0)  # heads summed: (latent positions, tokens)
        tokens = per_token.shape[-1]
        height, width = self.latent_size
        pixels = per_token.shape[0]
        # The layer's own grid keeps the image's aspect ratio.
        layer_h = max(1, round((pixels * height / width) ** 0.5))
        layer_w = pixels // layer_h
        columns = []
        for positions in self.word_positions:
            usable = [p for p in positions if p < tokens]
            if usable:
                columns.append(per_token[:, usable].sum(dim=-1))
            else:
                columns.append(torch.zeros(pixels, device=per_token.device))
        maps = torch.stack(columns).reshape(len(columns), 1, layer_h, layer_w).cpu()
        if (layer_h, layer_w) != (height, width):
            maps = torch.nn.functional.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)
        self.maps += maps[:, 0]
        self.calls += 1


class RecordingAttnProcessor:
    """Computes the layer exactly as the processor it stands in for, and records on the side."""

    def __init__(self, inner: Any, recorder: AttentionRecorder) -> None:
        self.inner = inner
        self.recorder = recorder

    def __call__(
        self,
        attn: Any,
        hidden_states: Any,
        encoder_hidden_states: Any = None,
        attention_mask: Any = None,
        temb: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        output = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if encoder_hidden_states is not None:  # a cross-attention call: the prompt's tokens are its keys
            self.recorder.record(attn, hidden_states, encoder_hidden_states)
        return output


@contextmanager
def recording(unet: Any, recorder: AttentionRecorder) -> Iterator[None]:
    """The recording processor on every cross-attention layer, for the duration of the block only."""
    originals = dict(unet.attn_processors)
    unet.set_attn_processor(
        {
            name: RecordingAttnProcessor(processor, recorder) if name.endswith("attn2.processor") else processor
            for name, processor in originals.items()
        }
    )
    try:
        yield
    finally:
        unet.set_attn_processor(originals)


@dataclass
class Explanation:
    words: list[WordTokens]
    grid_png: bytes
    image_png: bytes  # the re-run image
    max_pixel_difference: int | None  # against the original, when it was given
    seconds: float
    tiles: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reproduced(self) -> bool | None:
        # One level of rounding is the project's tolerance between a batched and a single-image call.
        return None if self.max_pixel_difference is None else self.max_pixel_difference <= 1

    def summary(self) -> dict[str, Any]:
        return {
            "words": [asdict(word) for word in self.words],
            "reproduced": self.reproduced,
            "max_pixel_difference": self.max_pixel_difference,
            "seconds": round(self.seconds, 3),
            "tiles": self.tiles,
        }


def explain_image(pipeline: Any, spec: JobSpec, *, original_png: bytes | None = None) -> Explanation:
    """Re-run one image (``spec`` with count 1 and the image's own seed) while recording attention."""
    started = time.perf_counter()
    spec = replace(spec, count=1, best_of=1, scoring=False)
    pipe = pipeline.pipe
    words = word_tokens(pipe.tokenizer, spec.model_prompt, spec.member_prompt)
    shown = [word for word in words if word.source == "member" and not word.cut]
    for tile, word in enumerate(shown):
        word.tile = tile
    scale = getattr(pipe, "vae_scale_factor", 8)
    latent = (spec.height // scale, spec.width // scale)
    # With classifier-free guidance the UNet sees [unconditional, conditional]: the second row is the prompt's.
    guided = pipeline._classifier_free_guidance(spec.guidance)
    recorder = AttentionRecorder([w.positions for w in shown], latent, conditional_row=1 if guided else 0)
    with recording(pipe.unet, recorder):
        output = pipeline.generate([spec])
    image_png = output.images[0][0].png
    difference = _max_difference(original_png, image_png) if original_png is not None else None
    grid = heatmap_grid(_decode(image_png), [w.word for w in shown], recorder.maps)
    return Explanation(words, grid, image_png, difference, time.perf_counter() - started, tiles=len(shown))


def _decode(png: bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("RGB")


def _max_difference(a: bytes, b: bytes) -> int:
    import numpy as np

    first, second = np.asarray(_decode(a), dtype=np.int16), np.asarray(_decode(b), dtype=np.int16)
    if first.shape != second.shape:
        return 255
    return int(np.abs(first - second).max())


def heatmap_grid(image: Any, words: Sequence[str], maps: Any, *, tile_side: int = TILE_SIDE) -> bytes:
    """One tile per word: the image with that word's attention overlaid (bright where it looked),
    the word written under it. A prompt with no word to show gets the image alone."""
    import numpy as np
    from PIL import Image, ImageDraw

    label = 18
    side = tile_side
    base = image.resize((side, side * image.height // image.width), Image.Resampling.LANCZOS)
    tile_h = base.height + label
    count = max(1, len(words))
    columns = min(GRID_COLUMNS, count)
    rows = (count + columns - 1) // columns
    grid = Image.new("RGB", (columns * side, rows * tile_h), "white")
    for index in range(count):
        tile = base.copy()
        if words:
            heat = maps[index].numpy()
            span = heat.max() - heat.min()
            heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
            mask = Image.fromarray((heat * 255).astype(np.uint8)).resize(base.size, Image.Resampling.BILINEAR)
            # Warm colours where the word drew attention, the image itself where it did not.
            colour = Image.merge("RGB", (mask, mask.point(lambda v: max(0, v * 2 - 255)), Image.new("L", base.size, 0)))
            tile = Image.composite(Image.blend(tile, colour, 0.6), tile, mask.point(lambda v: min(255, 64 + v)))
        x, y = (index % columns) * side, (index // columns) * tile_h
        grid.paste(tile, (x, y))
        if words:
            ImageDraw.Draw(grid).text((x + 4, y + base.height + 3), words[index][:28], fill="black")
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return buffer.getvalue()


class ExplainingPipeline:
    """Wraps the text-to-image pipeline: explain jobs are re-run with the recorder, one at a time (the
    recorder follows one image); every other job passes through untouched."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.model = pipeline.model

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipeline, name)

    def generate(self, jobs: Sequence[JobSpec], **options: Any) -> Any:
        from engine.contract import GeneratedImage, JobKind, PermanentJobError
        from engine.pipelines.text_to_image import BatchOutput

        if not jobs or jobs[0].kind != JobKind.EXPLAIN:
            return self.pipeline.generate(jobs, **options)
        started = time.perf_counter()
        images, extras = [], []
        for job in jobs:
            try:
                with open(job.init_image or "", "rb") as original:
                    original_png = original.read()
            except OSError as error:
                raise PermanentJobError(f"the image to explain is gone: {error.strerror}") from error
            spec = replace(job, kind=JobKind.TEXT_TO_IMAGE, init_image=None)
            explanation = explain_image(self.pipeline, spec, original_png=original_png)
            with _decode(explanation.grid_png) as grid:
                size = grid.size
            images.append([GeneratedImage(0, explanation.grid_png, size[0], size[1], seed=job.seed)])
            extras.append({"explanation": explanation.summary()})
        return BatchOutput(images, time.perf_counter() - started, extras)
