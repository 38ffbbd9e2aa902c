"""keras_monet: Multi-Order Networks (MONET) for Keras 3."""

from keras_monet import baselines
from keras_monet import callbacks
from keras_monet import datasets
from keras_monet import layers
from keras_monet import losses
from keras_monet import models
from keras_monet import optimizers
from keras_monet import teacher_forcing
from keras_monet import visualization
from keras_monet.callbacks import OrderWarmUp
from keras_monet.layers import MONETHead
from keras_monet.layers import OrderSelector
from keras_monet.layers import TaskwiseRecurrent
from keras_monet.models import MONETModel
from keras_monet.models import Sequential
from keras_monet.version import __version__
