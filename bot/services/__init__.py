"""Atelier's logic, free of discord.py so that tests and the CLI can call it directly."""
