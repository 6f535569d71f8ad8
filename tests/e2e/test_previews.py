"""Live previews: the engine decodes the image forming with TAESD and the member's status message shows it."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from engine.contract import JobSpec
from tests.e2e.conftest import Harness
from tests.simulator.sim import MessageState


class _HoldAtStep:
    """The tiny pipeline, held between two denoising steps until the test has seen what it waits for:
    the tiny model is otherwise done before a member's status message could change."""

    def __init__(self, pipeline: Any, step: int) -> None:
        self.pipeline = pipeline
        self.model = pipeline.model
        self.step = step
        self.release = threading.Event()

    def generate(
        self, jobs: Sequence[JobSpec], *, on_step: Callable[[int, int], None] | None = None, **options: Any
    ) -> Any:
        def held(step: int, total: int) -> None:
            if on_step is not None:
                on_step(step, total)
            if step == self.step:
                self.release.wait(60)

        return self.pipeline.generate(jobs, on_step=held, **options)


def _is_result(message: MessageState) -> bool:
    return bool(message.attachments) and bool(message.embeds)


async def test_a_preview_of_the_forming_image_reaches_the_progress_message(harness: Harness) -> None:
    held = _HoldAtStep(harness.pipeline, step=2)
    bot = harness.new_bot()
    bot.progress_interval_seconds = 0.1
    harness.start_engine(held, progress_interval_seconds=0.0)
    try:
        async with harness.sim.connect(bot):
            interaction = await harness.member.slash("imagine", prompt="a fox in the snow", steps=4, raw=True)
            # Previews come every second step (the default): step 2 of 4 brings the first. The preview's
            # file lands just before its step is recorded, so one edit may still say step 1: wait for both.
            status = await harness.sim.wait_for(
                lambda: (
                    interaction.original
                    if interaction.original
                    and interaction.original.attachments
                    and "step 2 of 4" in interaction.original.content
                    else None
                ),
                30,
            )
            (attachment,) = status.attachments
            with Image.open(io.BytesIO(attachment.data)) as preview:
                preview.load()
                # The grid of four (the tiny model's default), laid out as the result will be.
                assert preview.format == "JPEG" and preview.size == (128, 128)
            held.release.set()
            result = await interaction.wait_followup(_is_result)
            with Image.open(io.BytesIO(result.attachments[0].data)) as image:
                assert image.format == "PNG" and image.size == (128, 128)
            # The status message, preview and all, gives way to the result.
            await harness.sim.wait_for(lambda: interaction.original.deleted, 10)  # type: ignore[union-attr]
    finally:
        held.release.set()
