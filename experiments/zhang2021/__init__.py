"""Zhang, Wang, Liu, Chen, Xiong, "Why Lottery Ticket Wins?" (NeurIPS 2021): one module per figure."""
