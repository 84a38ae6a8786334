"""The `portsentinel` command: talks to the responder's control socket, checks configs, runs the pipeline."""
