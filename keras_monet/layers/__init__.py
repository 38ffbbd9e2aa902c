from keras_monet.layers.head import TaskHead
from keras_monet.layers.monet_head import MONETHead
from keras_monet.layers.order_selector import OrderSelector
from keras_monet.layers.taskwise_recurrent import TaskwiseRecurrent
