"""mnistapp: train, sweep, evaluate and explain MNIST classifiers (Lightning + Hydra).

Kept free of heavy imports so that ``train.py --help`` answers without loading torch.
"""

__version__ = "0.1.0"
