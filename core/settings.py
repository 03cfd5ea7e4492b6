"""All configuration of geoexport, in one place.

Every field is read from an environment variable named ``GEOEXPORT_<FIELD>``
(case-insensitive), except where an alias says otherwise.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

TileFormat = Literal["png", "jpeg", "mixed"]


class ServiceKey(BaseModel):
    """A pre-shared key with which a service may call the public export API for some organisations."""

    key: str = Field(min_length=16)
    org_ids: list[str] = Field(min_length=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GEOEXPORT_", extra="ignore")

    # --- where things live -------------------------------------------------
    var_dir: Path = Field(Path("var"), description="Root of the embedded defaults (database, data, secrets).")
    database_url: str = Field("", description="SQLAlchemy URL; default: SQLite file under var_dir.")
    data_dir: Path | None = Field(None, description="Package and upload storage; default: var_dir/data.")

    log_format: Literal["text", "json"] = Field("text", description="Log lines as text or JSON objects.")

    # --- HTTP API ------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = Field("", description="Base URL clients use to reach the API (download links).")

    # --- authentication (map side: JWT in x-api-key or ?token=) -------------------
    auth: Literal["on", "off"] = Field("on", description="'off' disables every check (loud warning at start).")
    jwt_secret: str = Field("", description="HS256 secret; default: generated under var_dir/secrets on first start.")
    jwt_public_key: str = Field("", description="PEM public key for RS256/ES256 tokens (instead of a secret).")
    jwt_audience: str = ""
    jwt_issuer: str = ""

    # --- Prefect ---------------------------------------------------------------
    prefect_port: int = 4200
    gpkg_deployment: str = "gpkg-export/gpkg-export"
    callbacks_deployment: str = "gpkg-callbacks/gpkg-callbacks"
    package_deployment: str = "package-export/package-export"
    cleanup_deployment: str = "cleanup-expired/cleanup-expired"
    work_pool: str = Field("geoexport", description="Process work pool the deployments of prefect.yaml target.")
    use_work_queues: bool = Field(False, description="Send map jobs to the gpkg-high/normal/low queue of their "
                                  "priority (workers mode; the embedded runner has no queues).")
    gpkg_high_priority: int = Field(1_000_000, description="Priority from which a map job goes to gpkg-high.")
    gpkg_normal_priority: int = Field(1_000, description="Priority from which a map job goes to gpkg-normal.")
    pool_concurrency: int | None = Field(None, ge=1, description="Flow runs at once across the work pool.")
    package_concurrency: int = Field(4, ge=1, description="package-export runs at once.")
    runner_poll_seconds: float = Field(1.0, gt=0, le=60, description="How often the embedded runner asks the "
                                       "Prefect server for new flow runs and cancellations. Launches wake the "
                                       "runner at once (core.runner_wake), so this is the fallback pickup delay "
                                       "and the cancellation delay. Prefect's default is 10 s.")
    flow_start: Literal["forkserver", "spawn"] = Field(
        "forkserver", description="How the embedded runner starts a flow run: a fork of a warm process that has "
        "Prefect, the flows and the raster stack imported (starts in ~0.1 s), or Prefect's default, a new "
        "interpreter (~2 s of imports per run).")

    # --- map packages ------------------------------------------------------------
    tile_format: TileFormat = "mixed"
    jpeg_quality: int = Field(85, ge=1, le=100)
    batch_tiles: int = Field(256, ge=1, description="Tiles per work unit (task) of a map package.")
    unit_tiles: int = Field(0, ge=0, description="Finest-zoom tiles per work unit (task) of a map package: a "
                            "square block that also builds the zooms above it by downsampling (memory does not "
                            "grow with it). 0 (default): 4 x batch_tiles = 1,024 (32 x 32 tiles, 6 zooms).")
    tile_workers: int = Field(2, ge=1, description="Concurrent tile batches within one map package.")
    task_runner: Literal["thread", "dask"] = Field("thread", description="Where tile batches run: threads of the "
                                                   "flow process, or a Dask cluster (needs prefect-dask).")
    dask_address: str = Field("", description="Scheduler of an existing Dask cluster; empty: a LocalCluster.")
    dask_workers: int = Field(2, ge=1, description="Processes of the LocalCluster when no address is given.")
    gpkg_concurrency: int = Field(2, ge=1, description="Map packages rendered at the same time.")
    package_ttl_days: float = Field(30, gt=0)
    callback_retries: int = Field(5, ge=0)
    callback_backoff_base: float = Field(1.0, ge=0, description="Seconds; attempt n waits base*2**(n-1).")
    callback_timeout: float = Field(10.0, gt=0)
    max_zoom: int = Field(22, ge=0, le=30)
    heartbeat_seconds: float = Field(10, gt=0, description="How often a running map job touches its heartbeat.")
    stall_timeout: float = Field(120, gt=0, description="Seconds without a heartbeat after which a job is crashed.")
    orphan_ttl_seconds: float = Field(6 * 3600, gt=0, description="Age after which temporary files are orphans.")
    cleanup_cron: str = Field("0 * * * *", description="Schedule of the cleanup-expired flow.")

    # --- resource exports ----------------------------------------------------------
    export_ttl_days: float = Field(7, gt=0)
    source_timeout: float = Field(3600, gt=0, description="Seconds a source may stay pending.")
    max_upload_bytes: int = Field(500 * 1024 * 1024, gt=0)
    sources: Annotated[dict[str, list[str]], NoDecode] = Field(default_factory=dict)
    psks: Annotated[dict[str, str] | list[str], NoDecode] = Field(default_factory=list)
    # service-to-service callers of the public API: name → {"key": ..., "org_ids": [...]}
    service_psks: Annotated[dict[str, ServiceKey], NoDecode] = Field(default_factory=dict)
    kafka_bootstrap_servers: str = Field(
        "",
        validation_alias=AliasChoices("GEOEXPORT_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
    )
    kafka_requests_topic: str = "platform.export.requests"
    kafka_results_topic: str = "platform.export.results"
    kafka_group_id: str = "geoexport-results"
    # Short group timeouts suit the bundled broker (rebalances finish fast); raise them for a real cluster.
    kafka_session_timeout_ms: int = Field(6000, ge=1000)
    kafka_max_poll_interval_ms: int = Field(10000, ge=1000)
    kafka_broker_port: int = Field(19092, description="Port of the bundled tansu broker (when no bootstrap is set).")
    outbox_poll_interval: float = Field(0.5, gt=0, description="Seconds between outbox scans of the publisher.")
    export_sweep_interval: float = Field(30, gt=0, description="Seconds between source-timeout sweeps.")
    demo_source: bool = Field(True, description="`geoexport run` starts the demo source application.")

    @field_validator("sources", "service_psks", mode="before")
    @classmethod
    def _parse_json_map(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            return json.loads(v) if v else {}
        return v

    @field_validator("psks", mode="before")
    @classmethod
    def _parse_psks(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            if not v:
                return []
            if v[0] in "[{":
                return json.loads(v)
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    # --- derived -------------------------------------------------------------------
    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'geoexport.db').resolve()}"

    @property
    def storage_dir(self) -> Path:
        return (self.data_dir or self.var_dir / "data").resolve()

    @property
    def packages_dir(self) -> Path:
        return self.storage_dir / "packages"

    @property
    def work_dir(self) -> Path:
        return self.storage_dir / "work"

    @property
    def secrets_dir(self) -> Path:
        return (self.var_dir / "secrets").resolve()

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


@lru_cache
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment between runs)."""
    get_settings.cache_clear()
