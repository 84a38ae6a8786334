"""portsentinel's detector: PortSentry's six sentries, structured records out."""

__version__ = "0.1.0"
