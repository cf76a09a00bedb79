"""Experiments: statistics over per-seed scores (`stats`), run reports with plots (`report`), multi-seed runs
(`seeds`), challenge-style records folders (`submit`), the single-file training script (`bundle`), and their verbs
`pgolf compare / report / seeds / submit / bundle` (`cli`). Nothing here is imported by `import pgolf`; scipy and
matplotlib are imported lazily inside the functions that need them.
"""
