"""The detector's configuration, one module per job:

- ``model``: the typed configuration (:class:`~.model.DetectorConfig`) and :class:`~.model.ConfigError`. No I/O.
- ``values``: one parser per kind of value (ports, durations, networks ...) and the checks across options,
  shared by both formats. No I/O.
- ``own_lexer``: the own INI-like format's lines → keys and their text, with line numbers. No I/O.
- ``own_grammar``: the own format's keys and which value parser reads each. No I/O.
- ``own_render``: a configuration back to the own format's text. No I/O.
- ``portsentry_conf``: a classic PortSentry 1.2 portsentry.conf. No I/O.
- ``detect``: which of the two formats a text is, and its parse. No I/O.
- ``files``: reading the configuration file and the ignore file (the only module here that touches files).
"""
