"""stylempi: neural style transfer for whole videos, spread over MPI ranks."""
__version__ = "0.1.0"
