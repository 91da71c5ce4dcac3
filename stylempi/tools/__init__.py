"""Tools around a job: verify and stability (checking outputs), preview, export and the demo.

May import anything below them (media, network, colour, job, storage); never stylempi.cli or
stylempi.training.
"""
