"""``geoexport``: run the service, manage the catalog, make one-off packages."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="geoexport: map packages and resource exports")
layers_app = typer.Typer(no_args_is_help=True, help="The raster catalog (layers a map package can name)")
db_app = typer.Typer(no_args_is_help=True, help="Database schema")
deploy_app = typer.Typer(no_args_is_help=True, help="Prefect deployments, work pool and queues")
app.add_typer(layers_app, name="layers")
app.add_typer(db_app, name="db")
app.add_typer(deploy_app, name="deployments")


def _logging() -> None:
    from core.logs import configure_logging

    configure_logging(logging.INFO)


@app.command()
def run() -> None:
    """Set up and start the whole service on embedded defaults (Ctrl-C stops everything)."""
    from cli.supervisor import run_all

    sys.exit(run_all())


@app.command()
def api(host: str | None = None, port: int | None = None) -> None:
    """Start the HTTP API (uvicorn)."""
    import uvicorn

    from core.settings import get_settings

    _logging()
    s = get_settings()
    # log_config=None: uvicorn logs through our handler (text or JSON, GEOEXPORT_LOG_FORMAT)
    uvicorn.run("api.app:app", host=host or s.host, port=port or s.port, log_level="info", log_config=None)


@app.command()
def serve(limit: Annotated[int, typer.Option(help="Flow runs at the same time")] = 20) -> None:
    """Serve every deployment from this process (the embedded runner)."""
    from flows.deployments import serve_all

    _logging()
    # the runner asks the Prefect server for work every GEOEXPORT_RUNNER_POLL_SECONDS: httpx's line per
    # request at INFO would be a couple of log lines a second of nothing
    logging.getLogger("httpx").setLevel(logging.WARNING)
    serve_all(limit=limit)


@app.command()
def worker(
    limit: Annotated[int, typer.Option(help="Flow runs this worker runs at once")] = 4,
    name: Annotated[str | None, typer.Option(help="Worker name (default: host and pid)")] = None,
) -> None:
    """Start a Prefect process worker on the geoexport pool (creates the pool and queues if missing)."""
    import os

    from core.settings import get_settings
    from flows.deployments import ensure_work_pool

    _logging()
    ensure_work_pool()
    argv = [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", get_settings().work_pool,
            "--type", "process", "--limit", str(limit)]
    if name:
        argv += ["--name", name]
    os.execv(argv[0], argv)


@deploy_app.command("render")
def deployments_render(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="file to write (default: stdout)")] = None,
) -> None:
    """Print (or write) deployments/prefect.yaml, generated from flows/deployments.py."""
    from flows.deployments import render_prefect_yaml

    text = render_prefect_yaml()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)


@deploy_app.command("pool")
def deployments_pool() -> None:
    """Create or update the process work pool and its priority queues on the Prefect server."""
    from flows.deployments import WORK_QUEUES, ensure_work_pool

    ensure_work_pool()
    typer.echo("work pool ready; queues: " + ", ".join(f"{n} (priority {p})" for n, p, _ in WORK_QUEUES))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database to the newest schema."""
    from core.migrate import upgrade

    upgrade()
    typer.echo("database is up to date")


@layers_app.command("add")
def layers_add(
    path: str,
    product_id: Annotated[str | None, typer.Option("--product-id")] = None,
    product_name: Annotated[str | None, typer.Option("--product-name")] = None,
    product_version: Annotated[str | None, typer.Option("--product-version")] = None,
    footprint: Annotated[Path | None, typer.Option(help="GeoJSON file with the footprint geometry")] = None,
) -> None:
    """Register a GeoTIFF/COG in the catalog and print its dbId."""
    from core.catalog import CatalogError, register_layer
    from core.db import session_scope
    from core.migrate import upgrade

    upgrade()
    geom = None
    if footprint is not None:
        geom = json.loads(footprint.read_text())
        geom = geom.get("geometry", geom) if geom.get("type") == "Feature" else geom
    try:
        with session_scope() as s:
            layer = register_layer(s, path, product_id=product_id, product_name=product_name,
                                   product_version=product_version, footprint=geom)
            typer.echo(f"{layer.id}\t{layer.product_name}\tmax zoom {layer.max_zoom}\t{layer.source}")
    except CatalogError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@layers_app.command("list")
def layers_list() -> None:
    """List the catalog's layers."""
    from sqlalchemy import select

    from core.db import session_scope
    from core.migrate import upgrade
    from core.models import Layer

    upgrade()
    with session_scope() as s:
        for layer in s.scalars(select(Layer).order_by(Layer.created_at)):
            typer.echo(f"{layer.id}\t{layer.product_name}\t{layer.product_version}\tmax zoom {layer.max_zoom}"
                       f"\t{layer.source}")


@app.command()
def gpkg(
    source: str,
    bbox: Annotated[tuple[float, float, float, float], typer.Option(help="minx miny maxx maxy (EPSG:4326)")],
    resolution: Annotated[float, typer.Option(help="target resolution, degrees per pixel")],
    output: Annotated[Path, typer.Option("-o", "--output", help="GeoPackage to write")],
    format: Annotated[str, typer.Option("--format", help="png | jpeg | mixed")] = "mixed",
    min_zoom: Annotated[int, typer.Option(help="coarsest zoom level")] = 0,
    workers: Annotated[int, typer.Option(help="parallel tile batches")] = 2,
    batch_tiles: Annotated[int, typer.Option(help="tiles per batch")] = 256,
    footprint: Annotated[Path | None, typer.Option(
        help="GeoJSON file (geometry, Feature or one-feature FeatureCollection, EPSG:4326): pixels outside it are "
             "transparent and tiles entirely outside are not stored, as the service does with a layer's footprint "
             "(GET /layers/{dbId} shows it)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Make one GeoPackage without the server (same tiling code as the service)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from tiling.grid import zoom_for_resolution
    from tiling.pipeline import export_gpkg

    if format not in ("png", "jpeg", "mixed"):
        raise typer.BadParameter("format must be png, jpeg or mixed")
    minx, miny, maxx, maxy = bbox
    if not (minx < maxx and miny < maxy):
        raise typer.BadParameter("bbox must be minx miny maxx maxy with minx < maxx and miny < maxy")
    try:
        zoom = zoom_for_resolution(resolution)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    geom = _read_footprint(footprint) if footprint is not None else None
    with Progress(TextColumn("[bold]tiles"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  disable=quiet) as bar:
        task = bar.add_task("tiles", total=None)

        def progress(done: int, planned: int) -> None:
            bar.update(task, completed=done, total=planned)

        result = export_gpkg(source, bbox, zoom, output, min_zoom=min_zoom, tile_format=format,
                             batch_tiles=batch_tiles, workers=workers, progress=progress, footprint=geom)
    typer.echo(json.dumps({"path": str(result.path), "tiles_planned": result.tiles_planned,
                           "tiles_written": result.tiles_written, "file_size": result.file_size,
                           "sha256": result.sha256, "zooms": list(result.zooms)}))


def _read_footprint(path: Path) -> dict:
    """The polygon of a GeoJSON file, or a clear ``BadParameter``."""
    from shapely.geometry import shape

    try:
        doc = json.loads(path.read_text())
        if doc.get("type") == "FeatureCollection":
            features = doc.get("features") or []
            if len(features) != 1:
                raise ValueError(f"a FeatureCollection must hold exactly one feature, it holds {len(features)}")
            doc = features[0]
        geom = doc.get("geometry") if doc.get("type") == "Feature" else doc
        shp = shape(geom)
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise typer.BadParameter(f"{path}: not a GeoJSON polygon ({exc})", param_hint="--footprint") from exc
    if shp.geom_type not in ("Polygon", "MultiPolygon") or shp.is_empty:
        raise typer.BadParameter(f"{path}: the footprint must be a Polygon or MultiPolygon, not {shp.geom_type}",
                                 param_hint="--footprint")
    return geom


@app.command()
def cleanup(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would be deleted")] = False,
) -> None:
    """Delete expired packages and exports and orphaned temporary files (what the scheduled flow does)."""
    from core.cleanup import run_cleanup
    from core.migrate import upgrade

    upgrade()
    report = run_cleanup(dry_run=dry_run)
    for item in report.items:
        typer.echo(("would delete " if dry_run else "deleted ") + item)
    counts = {k: v for k, v in report.as_dict().items() if k != "items"}
    typer.echo(json.dumps(counts))


@app.command()
def token(
    sub: Annotated[str, typer.Option("--sub", help="subject (who the token is for)")],
    roles: Annotated[str, typer.Option("--roles", help="comma-separated: admin, export, read")] = "export",
    ttl: Annotated[str, typer.Option("--ttl", help="lifetime: 90s, 15m, 1h, 7d")] = "1h",
) -> None:
    """Mint a JWT for the map-package API from the configured secret."""
    from core.tokens import ROLES, TokenError, mint, parse_ttl

    wanted = [r.strip() for r in roles.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in ROLES]
    if unknown or not wanted:
        raise typer.BadParameter(f"roles must be among {', '.join(ROLES)}; got {roles!r}")
    try:
        typer.echo(mint(sub, wanted, parse_ttl(ttl)))
    except (TokenError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command("demo-layer")
def demo_layer() -> None:
    """Make the demo COG (if missing), register it (if missing) and print its dbId."""
    from cli.demo import ensure_demo_layer

    typer.echo(ensure_demo_layer())


def _register_optional_commands() -> None:
    """Commands of capabilities that live in their own module (resource exports, operations, ...)."""
    import importlib

    for module in ("cli.exports_cli", "cli.ops_cli"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        mod.register(app)


_register_optional_commands()

if __name__ == "__main__":
    app()
