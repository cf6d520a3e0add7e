"""SRFlow (arXiv 2006.14200): an RRDB encoder conditioning a normalizing flow, one file per layer.

invertible.py states the contract every flow layer keeps; config.py holds every option's default.
"""
