"""Frankle & Carbin, "The Lottery Ticket Hypothesis" (ICLR 2019): one module per figure."""
