"""Atelier: a Discord image-generation bot that a community runs on its own hardware."""
