"""Baselines of the paper's section 4.2, drop-in replacements of MONETHead."""

from keras_monet.baselines.hard_order_selection import HardOrderSelection
from keras_monet.baselines.hard_order_selection import OrderExploration
from keras_monet.baselines.mrnn import MRNN
from keras_monet.baselines.oracle import oracle
from keras_monet.baselines.vmnc import VMNC
from keras_monet.baselines.vmns import VMNS
