"""Sakamoto & Sato, Analyzing Lottery Ticket Hypothesis from PAC-Bayesian Theory Perspective
(NeurIPS 2022): learning rate, label noise, flatness, SAM / NVRM, distance from initialization,
spike-and-slab PAC-Bayes bounds and pruning criteria of winning tickets."""
