from keras_monet.datasets.toy import make_toy
from keras_monet.datasets.toy import make_toy_splits
