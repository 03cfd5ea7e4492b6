"""The HTTP API of geoexport (FastAPI). Thin: validates, records, launches flows by deployment name."""
