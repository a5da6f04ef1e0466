"""The workflows behind the entry points, kept out of train.py/eval.py so tests can call them."""
