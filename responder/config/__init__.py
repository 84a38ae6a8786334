"""jail.conf, filter.d and actions.d settings: layered INI files read into typed values, and what a reload changes."""
