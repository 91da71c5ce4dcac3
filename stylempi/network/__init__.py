"""The style network: architectures and checkpoints (model, styles/), running them on a device
(stylize, planes), where and how they run (placement), and ahead-of-time compiling (aot,
compile_cache).

Imports stylempi.media, colour and errors only; never stylempi.options, job, storage's Blob code,
training, tools or cli.
"""
