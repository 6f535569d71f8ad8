"""Atelier's GPU engine: claims jobs from the queue and runs diffusers pipelines."""
