"""Small CNN on long-tailed Fashion-MNIST, ratio 10 (offline: Debian's dataset-fashion-mnist).

Training counts n_c = floor(5500 * 10^(-c/9)); 500 images per class are held out of the
training pool as a balanced validation split (hyperparameters are chosen on it); the
10k test split stays balanced. See docs/results/fashion_mnist_lt for every method.
"""

from experiments.config import recipes


def get_config():
    return recipes.fashion_mnist_longtail(10.0)
