from keras_monet.models.monet_model import MONETModel
from keras_monet.models.sequential import Sequential
from keras_monet.models.trainer import MONETTrainer
