"""Train an MNIST classifier: ``python train.py model=lenet optimizer=sgd`` (see README)."""

from mnistapp.cli.train import main

if __name__ == "__main__":
    main()
