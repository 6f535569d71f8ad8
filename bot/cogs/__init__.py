"""One cog per feature; each parses, defers, calls a service and renders."""
