"""OGC GeoPackage (1.2.1) tile pyramid writer for the EPSG:4326 ``WorldCRS84Quad`` grid.

One writer per file. The file is built with fast, unsafe SQLite settings (no journal, no fsync): it is a
temporary file that the caller renames only when complete. Tables follow the DDL of the specification
(Annex C) so that GDAL's ``validate_gpkg.py`` passes. PNG and JPEG tiles may be mixed in one table (core
tile encoding requirements allow both).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from shapely.geometry import MultiPolygon, mapping, shape

from tiling.grid import TILE_SIZE, matrix_size, resolution_for_zoom
from tiling.render import EncodedTile

APPLICATION_ID = 0x47504B47  # "GPKG"
USER_VERSION = 10201  # GeoPackage 1.2.1
FOOTPRINT_LAYER = "footprint"
METADATA_URI = "https://geoexport/metadata/json"

WGS84_WKT = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],'
    'AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],'
    'UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],'
    'AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]]'
)

_CORE_DDL = """
CREATE TABLE gpkg_spatial_ref_sys (
  srs_name TEXT NOT NULL,
  srs_id INTEGER NOT NULL PRIMARY KEY,
  organization TEXT NOT NULL,
  organization_coordsys_id INTEGER NOT NULL,
  definition  TEXT NOT NULL,
  description TEXT
);
CREATE TABLE gpkg_contents (
  table_name TEXT NOT NULL PRIMARY KEY,
  data_type TEXT NOT NULL,
  identifier TEXT UNIQUE,
  description TEXT DEFAULT '',
  last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  min_x DOUBLE,
  min_y DOUBLE,
  max_x DOUBLE,
  max_y DOUBLE,
  srs_id INTEGER,
  CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id)
);
CREATE TABLE gpkg_tile_matrix_set (
  table_name TEXT NOT NULL PRIMARY KEY,
  srs_id INTEGER NOT NULL,
  min_x DOUBLE NOT NULL,
  min_y DOUBLE NOT NULL,
  max_x DOUBLE NOT NULL,
  max_y DOUBLE NOT NULL,
  CONSTRAINT fk_gtms_table_name FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
  CONSTRAINT fk_gtms_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id)
);
CREATE TABLE gpkg_tile_matrix (
  table_name TEXT NOT NULL,
  zoom_level INTEGER NOT NULL,
  matrix_width INTEGER NOT NULL,
  matrix_height INTEGER NOT NULL,
  tile_width INTEGER NOT NULL,
  tile_height INTEGER NOT NULL,
  pixel_x_size DOUBLE NOT NULL,
  pixel_y_size DOUBLE NOT NULL,
  CONSTRAINT pk_ttm PRIMARY KEY (table_name, zoom_level),
  CONSTRAINT fk_tmm_table_name FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name)
);
"""

_METADATA_DDL = """
CREATE TABLE IF NOT EXISTS gpkg_extensions (
  table_name TEXT,
  column_name TEXT,
  extension_name TEXT NOT NULL,
  definition TEXT NOT NULL,
  scope TEXT NOT NULL,
  CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name)
);
CREATE TABLE IF NOT EXISTS gpkg_metadata (
  id INTEGER CONSTRAINT m_pk PRIMARY KEY ASC NOT NULL,
  md_scope TEXT NOT NULL DEFAULT 'dataset',
  md_standard_uri TEXT NOT NULL,
  mime_type TEXT NOT NULL DEFAULT 'text/xml',
  metadata TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS gpkg_metadata_reference (
  reference_scope TEXT NOT NULL,
  table_name TEXT,
  column_name TEXT,
  row_id_value INTEGER,
  timestamp DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  md_file_id INTEGER NOT NULL,
  md_parent_id INTEGER,
  CONSTRAINT crmr_mfi_fk FOREIGN KEY (md_file_id) REFERENCES gpkg_metadata(id),
  CONSTRAINT crmr_mpi_fk FOREIGN KEY (md_parent_id) REFERENCES gpkg_metadata(id)
);
"""

_METADATA_EXT_DEF = "http://www.geopackage.org/spec120/#extension_metadata"


class _TempNameWarningFilter(logging.Filter):
    """Drop GDAL's "non conformant file extension" warning: packages are built under a temporary name."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "non conformant file extension" not in record.getMessage()


_FIONA_LOG_FILTER = _TempNameWarningFilter()


def _quote_id(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class GeoPackageWriter:
    """Write a tile pyramid (and a footprint vector layer) into a new GeoPackage file.

    ``tile_bounds`` (the snapped bbox) goes to ``gpkg_contents`` — GDAL uses it as the raster extent —
    while ``gpkg_tile_matrix_set`` always covers the whole world so that tile indices are global.
    ``zooms``: every zoom to declare in ``gpkg_tile_matrix`` (normally ``0..max_zoom``).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        table: str = "tiles",
        identifier: str,
        description: str = "",
        tile_bounds: tuple[float, float, float, float],
        zooms: Iterable[int],
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.table = table
        self.zooms = sorted(set(int(z) for z in zooms))
        if not self.zooms:
            raise ValueError("zooms must not be empty")
        if not table or table.startswith("gpkg_") or table == FOOTPRINT_LAYER:
            raise ValueError(f"invalid tiles table name {table!r}")
        if self.path.exists():
            raise FileExistsError(f"{self.path} already exists")
        self.tiles_written = 0
        self._conn: sqlite3.Connection | None = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._create(identifier, description, tile_bounds, metadata)
        except BaseException:
            self._conn.close()
            self._conn = None
            self.path.unlink(missing_ok=True)
            raise

    # ------------------------------------------------------------------------------------------ setup

    def _tune(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        # 8 MB: tiles are appended (rowid order) and their blobs go to overflow pages that are written once, so
        # only the (zoom, column, row) index needs caching (~20 bytes a tile); a larger cache just fills up
        # with blob pages on a big package (64 MB measured on a 675 MB one) and buys nothing
        conn.execute("PRAGMA cache_size=-8192")

    def _create(
        self,
        identifier: str,
        description: str,
        bounds: tuple[float, float, float, float],
        metadata: Mapping[str, Any] | None,
    ) -> None:
        conn = self._require()
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {USER_VERSION}")
        self._tune(conn)
        minx, miny, maxx, maxy = (float(v) for v in bounds)
        conn.execute("BEGIN")
        for statement in _CORE_DDL.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.executemany(
            "INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)",
            [
                ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", "undefined cartesian CRS"),
                ("Undefined geographic SRS", 0, "NONE", 0, "undefined", "undefined geographic CRS"),
                (
                    "WGS 84 geodetic",
                    4326,
                    "EPSG",
                    4326,
                    WGS84_WKT,
                    "longitude/latitude on the WGS 84 ellipsoid",
                ),
            ],
        )
        conn.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description,"
            " min_x, min_y, max_x, max_y,"
            " srs_id) VALUES (?, 'tiles', ?, ?, ?, ?, ?, ?, 4326)",
            (self.table, identifier, description, minx, miny, maxx, maxy),
        )
        conn.execute(
            "INSERT INTO gpkg_tile_matrix_set VALUES (?, 4326, -180.0, -90.0, 180.0, 90.0)", (self.table,)
        )
        rows = []
        for z in self.zooms:
            width, height = matrix_size(z)
            res = resolution_for_zoom(z)
            rows.append((self.table, z, width, height, TILE_SIZE, TILE_SIZE, res, res))
        conn.executemany("INSERT INTO gpkg_tile_matrix VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute(
            f"CREATE TABLE {_quote_id(self.table)} ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " zoom_level INTEGER NOT NULL,"
            " tile_column INTEGER NOT NULL,"
            " tile_row INTEGER NOT NULL,"
            " tile_data BLOB NOT NULL,"
            " UNIQUE (zoom_level, tile_column, tile_row))"
        )
        if metadata:
            self._write_metadata(conn, metadata)
        conn.execute("COMMIT")

    def _write_metadata(self, conn: sqlite3.Connection, metadata: Mapping[str, Any]) -> None:
        for statement in _METADATA_DDL.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.executemany(
            "INSERT OR IGNORE INTO gpkg_extensions VALUES (?, NULL, 'gpkg_metadata', ?, 'read-write')",
            [("gpkg_metadata", _METADATA_EXT_DEF), ("gpkg_metadata_reference", _METADATA_EXT_DEF)],
        )
        cur = conn.execute(
            "INSERT INTO gpkg_metadata (md_scope, md_standard_uri, mime_type, metadata)"
            " VALUES ('dataset', ?, 'application/json', ?)",
            (METADATA_URI, json.dumps(dict(metadata), sort_keys=True, default=str)),
        )
        conn.execute(
            "INSERT INTO gpkg_metadata_reference (reference_scope, table_name, md_file_id)"
            " VALUES ('table', ?, ?)",
            (self.table, cur.lastrowid),
        )

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"GeoPackageWriter for {self.path} is closed")
        return self._conn

    # ----------------------------------------------------------------------------------------- writing

    def write_tiles(self, tiles: Iterable[EncodedTile]) -> int:
        """Insert ``tiles`` in one transaction; returns how many were written.

        Re-writing a tile replaces it (``INSERT OR REPLACE``) so a re-fed batch is harmless.
        """
        conn = self._require()
        allowed = set(self.zooms)
        rows = []
        for tile in tiles:
            if tile.zoom not in allowed:
                raise ValueError(
                    f"tile z{tile.zoom}/{tile.col}/{tile.row}: zoom not declared in {self.zooms}"
                )
            rows.append((tile.zoom, tile.col, tile.row, tile.data))
        if not rows:
            return 0
        conn.execute("BEGIN")
        try:
            conn.executemany(
                f"INSERT OR REPLACE INTO {_quote_id(self.table)}"
                " (zoom_level, tile_column, tile_row, tile_data)"
                " VALUES (?, ?, ?, ?)",
                rows,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.tiles_written += len(rows)
        return len(rows)

    def add_footprint_layer(
        self, geometry: Mapping[str, Any], properties: Mapping[str, str | int | float]
    ) -> None:
        """Add a ``footprint`` vector layer (one feature, EPSG:4326) written with fiona/GDAL.

        The SQLite connection is closed while GDAL appends the layer to the same file, then reopened.
        """
        self._require()
        self._close_connection()
        geom = shape(geometry)
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise ValueError(f"footprint must be a Polygon or MultiPolygon, got {geom.geom_type}")
        if geom.geom_type == "Polygon":
            geom = MultiPolygon([geom])
        schema_props = {}
        for key, value in properties.items():
            if isinstance(value, bool) or isinstance(value, int):
                schema_props[key] = "int"
            elif isinstance(value, float):
                schema_props[key] = "float"
            else:
                schema_props[key] = "str"
        record = {
            "geometry": mapping(geom),
            "properties": {k: (int(v) if schema_props[k] == "int" else v) for k, v in properties.items()},
        }
        # imported here: fiona loads its own copy of GDAL (~27 MB resident), needed only for this last step
        import fiona

        fiona_log = logging.getLogger("fiona._err")
        fiona_log.addFilter(_FIONA_LOG_FILTER)
        try:
            with fiona.Env(OGR_SQLITE_JOURNAL="OFF", OGR_SQLITE_SYNCHRONOUS="OFF"):
                with fiona.open(
                    self.path,
                    "w",
                    driver="GPKG",
                    layer=FOOTPRINT_LAYER,
                    crs="EPSG:4326",
                    schema={"geometry": "MultiPolygon", "properties": schema_props},
                ) as dst:
                    dst.write(record)
        finally:
            fiona_log.removeFilter(_FIONA_LOG_FILTER)
            self._conn = sqlite3.connect(self.path, isolation_level=None)
            self._tune(self._conn)

    # ----------------------------------------------------------------------------------------- closing

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Finalise: refresh ``last_change``, restore the rollback journal, close."""
        if self._conn is None:
            return
        conn = self._conn
        try:
            conn.execute(
                "UPDATE gpkg_contents SET last_change = strftime('%Y-%m-%dT%H:%M:%fZ','now')"
                " WHERE table_name = ?",
                (self.table,),
            )
            conn.execute("PRAGMA journal_mode=DELETE")
        finally:
            self._close_connection()

    def abort(self) -> None:
        """Close without finalising and delete the file."""
        self._close_connection()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> GeoPackageWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._close_connection()


def sha256_file(path: Path | str, chunk_size: int = 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_path(gpkg_path: Path | str) -> Path:
    path = Path(gpkg_path)
    return path.with_name(path.name + ".sha256.json")


def write_sidecar(gpkg_path: Path | str) -> dict[str, Any]:
    """Write ``<file>.sha256.json`` = ``{file, size, sha256}`` (atomically) and return it."""
    path = Path(gpkg_path)
    info = {"file": path.name, "size": path.stat().st_size, "sha256": sha256_file(path)}
    target = sidecar_path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return info
