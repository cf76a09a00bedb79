"""Experiments: statistics over per-seed scores (`stats`), run reports with plots (`report`), and the
`pgolf compare` / `pgolf report` verbs (`cli`). Nothing here is imported by `import pgolf`; scipy and matplotlib are
imported lazily inside the functions that need them.
"""
