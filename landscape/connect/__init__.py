"""The space between minima: barriers along paths, permutation alignment, trained curves,
and stability to SGD noise (see each module)."""
