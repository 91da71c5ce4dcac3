"""Training a style network from a painting: the loop (train), its data (trainset), the loss
network (lossnet) and the temporal loss (temporal).

Imports stylempi.network, media and the local files of stylempi.storage; never job, tools or cli.
"""
