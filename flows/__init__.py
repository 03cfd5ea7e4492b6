"""Prefect flows of geoexport. Thin wrappers: the work lives in tiling/ and core/."""
