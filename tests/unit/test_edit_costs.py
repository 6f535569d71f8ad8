"""Compute units per kind: what an edit, a repair and a description cost against a budget."""

from __future__ import annotations

from dataclasses import replace

from engine.contract import JobSpec


def test_edits_cost_like_an_image_of_their_size_and_steps_and_descriptions_are_cheap() -> None:
    image = JobSpec(
        kind="txt2img",
        member_prompt="a fox",
        model_prompt="a fox",
        negative_prompt="",
        model="m",
        width=512,
        height=512,
        steps=20,
        guidance=7.5,
        seed=1,
    )
    edit = replace(image, kind="edit", plan={"mode": "instruction", "image_guidance": 1.5})
    repair = replace(image, kind="repair", plan={"mode": "repair", "target": "the car"})
    describe = replace(image, kind="describe", steps=1)
    assert edit.compute_units == repair.compute_units == image.compute_units
    assert (
        abs(replace(edit, width=1024, height=1024).compute_units - 4 * edit.compute_units) < 0.001
    )  # rounded to 4 places
    assert 0 < describe.compute_units < image.compute_units / 100
    # Edits with a different image guidance never share an InstructPix2Pix call.
    assert edit.batch_key != replace(edit, plan={"mode": "instruction", "image_guidance": 2.0}).batch_key
