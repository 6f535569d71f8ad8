"""What Atelier's quality loop (scores, explanations, the variant bandit) says to members and admins,
kept together so that it moves into the message catalog in one piece. Discord limits: option descriptions 100 characters, embed fields 1,024."""

from __future__ import annotations

# /atelier config
BEST_OF_HELP = "Draw 1-8 candidates per image, keep the best-scored. All candidates are charged to the member."
SCORING_HELP = "Score every image and order grids by it (off: nothing is scored and best_of stays 1)"
LEARN_VARIANTS_HELP = "Learn from ratings which expansion variant members like (when they chose none)"
PIN_VARIANT_HELP = "Always use this variant: concise, rich, presets or raw; auto lets ratings decide"
DISABLE_VARIANTS_HELP = "Comma-separated variants never tried (replaces the list; none clears it)"
VARIANTS_UPDATED = "Expansion variants updated: `{changes}`"

# The result embed and the explanation
SCORE_FIELD = "Score"
SCORES_VALUE = "{scores} ({scorer}), best first"
SCORES_BEST_OF = "; each the best of {best_of} candidates"
SCORE_VALUE = "{score:.2f} ({scorer}), #{rank} of {of}"
NOT_SCORED = "not scored"
EXPLAIN_TITLE = "Why this image looks as it does"
EXPLAIN_MEMBER_WORDS = "Your words"
EXPLAIN_ADDED_WORDS = "Added by {source}"
EXPLAIN_NOTHING_ADDED = "nothing: your words went to the model as typed"
EXPLAIN_CUT_WORDS = "Past the model's 77-token window (not read)"
EXPLAIN_GUARD = "Expansion check"
EXPLAIN_NO_GUARD = "none fired"
EXPLAIN_RUN_FIELD = "Run"
EXPLAIN_RUN = "Seed {seed} · {model} · variant {variant}"
EXPLAIN_NO_VARIANT = "none (chosen by you or the server)"
EXPLAIN_WORKING = "Drawing the heatmaps: the image is re-run with its seed…"
EXPLAIN_FAILED = "The heatmaps could not be drawn ({reason})."
EXPLAIN_TIMED_OUT = "No engine drew the heatmaps in time; try again later."
EXPLAIN_HEATMAP_NOTE = "Where the model looked for each of your words, summed over its attention layers and steps."
SOURCE_NAMES = {
    "llm": "the language model",
    "fallback": "the style presets",
    "raw": "nothing",
    "parent": "the original",
}

# Refusals, as an admin sees them
ADMIN_RULE_SUFFIX = " (rule: {rule})"

# /stats
STATS_VARIANTS = "Expansion variants (learning from ratings)"
STATS_VARIANT_LINE = "{marker}**{variant}**: {chosen} used, {count} rated, mean {mean}, P(best) {probability:.0%}"
STATS_NO_VARIANTS = "no variant has been tried yet"
STATS_PINNED = "📌 "
STATS_DISABLED = "⛔ "
