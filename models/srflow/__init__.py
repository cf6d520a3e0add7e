"""SRFlow (arXiv 2006.14200): an RRDB encoder conditioning a normalizing flow, one file per layer."""
