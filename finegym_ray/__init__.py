"""finegym-ray: the FineGym dataset turned into trained models at cluster scale, on Ray."""

__version__ = "0.1.0"
