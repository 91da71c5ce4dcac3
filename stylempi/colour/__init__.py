"""Colour: the standards' matrices, ranges and tags (matrices), the look of a job (look:
stroke scale, kept colours), and YUV <-> RGB as torch tensors (tensors).

Pure conversions; imports stylempi.errors only (and torch, numpy), never media, network or above.
"""
