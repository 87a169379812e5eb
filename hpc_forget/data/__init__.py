"""MASSIVE 1.1: loading every source form, word-level BIO tags, the label map, splits,
subsampling, the shipped samples, length-grouped batches. Imports only the foundation."""
