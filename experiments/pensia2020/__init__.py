"""Strong lottery tickets by subset sum: Lueker (1998) as used by Pensia et al. (NeurIPS 2020)."""
