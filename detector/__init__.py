"""portsentinel's detector: PortSentry's six sentries, structured records out."""
