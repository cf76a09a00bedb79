"""The bodies of `pgolf` verbs that read artifacts or describe presets (pgolf/cli.py parses and dispatches)."""
