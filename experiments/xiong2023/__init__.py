"""Xiong, Liao, Kyrillidis, epsilon-perturbed subset sum for strong lottery tickets (AISTATS 2023)."""
