"""Ramanujan, Wortsman, Kembhavi, Farhadi, Rastegari, "What's Hidden in a Randomly Weighted Neural
Network?" (CVPR 2020): one module per figure."""
