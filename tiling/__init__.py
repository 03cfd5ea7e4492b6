"""geoexport raster library: EPSG:4326 tile grid, raster inspection, tile rendering, GeoPackage writing.

Pure library (no Prefect / FastAPI): ``grid`` plans pyramids and batches, ``inspect`` describes rasters,
``render`` reads metatiles and encodes tiles, ``batchfile`` hands batches to the single writer, ``gpkg``
writes OGC GeoPackages and ``pipeline`` runs a whole export in one process.
"""
