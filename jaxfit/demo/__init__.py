"""Generators of demo and test data: the open demo body and demo subjects."""
