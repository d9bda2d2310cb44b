"""Evaluate a checkpoint on the MNIST test set: ``python eval.py ckpt_path=<file>`` (see README)."""

from mnistapp.cli.evaluate import main

if __name__ == "__main__":
    main()
