"""The ``geoexport`` command line."""
