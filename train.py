"""Train an MNIST classifier: ``python train.py model=lenet optimizer=sgd`` (see README)."""

from mnistapp.train import main

if __name__ == "__main__":
    main()
